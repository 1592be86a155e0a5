"""`task-api serve` replicas, each a process of its own on a fixed loopback port (HAProxy's
configuration names the ports), started, stopped (SIGTERM: a hand-over) and killed one by one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from scripts.local_stack.processes import free_port

# The console script of this environment: the replicas run exactly as users start the API.
TASK_API = str(Path(sys.executable).parent / "task-api")
PASSED_THROUGH = ("PATH", "HOME", "LANG", "TMPDIR")


class Replica:
    def __init__(self, name: str, env: dict[str, str], directory: Path,
                 cwd: Path | None = None, workers: int = 1, metrics: bool = False) -> None:
        """`env`: its settings (on top of PATH, HOME, LANG, TMPDIR); `directory`: where its log
        goes; `cwd`: where it runs (a `.env` there is read), `directory` by default.
        `metrics`: its Prometheus metrics on a loopback port of its own (METRICS_PORT)."""
        self.name = name
        self.workers = workers
        self.port = free_port()
        self.env = {**{k: v for k, v in os.environ.items() if k in PASSED_THROUGH}, **env}
        self.metrics_port = free_port() if metrics else None
        if self.metrics_port is not None:
            self.env["METRICS_PORT"] = str(self.metrics_port)
        self.directory = directory
        self.cwd = cwd or directory
        self.log_path = directory / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str | None:
        return None if self.metrics_port is None else f"http://127.0.0.1:{self.metrics_port}/metrics"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 60) -> float:
        """Start it and wait until /api/ready answers 200; returns the seconds that took."""
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [TASK_API, "serve", "--port", str(self.port), "--workers", str(self.workers)],
                env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.starts += 1
        with httpx.Client(base_url=self.url, timeout=2) as http:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"replica {self.name} exited with "
                                       f"{self.process.returncode}:\n{self.log()[-3000:]}")
                try:
                    if http.get("/api/ready").status_code == 200:
                        return time.monotonic() - began
                except httpx.TransportError:
                    pass
                if time.monotonic() - began > timeout:
                    raise TimeoutError(f"replica {self.name} not ready after {timeout} s")
                time.sleep(0.05)

    def stop(self, timeout: float = 60) -> tuple[int, float]:
        """SIGTERM and wait for the exit: (exit status, seconds it took)."""
        assert self.process is not None
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        return code, time.monotonic() - began

    def kill(self) -> None:
        """SIGKILL: a crash, nothing handed over."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
