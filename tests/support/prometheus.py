"""Debian's Prometheus for the tests (scripts/ensure_prometheus.sh installs it): a private server on
a loopback port, its data in a temporary folder, scraping the given targets every second, and
its HTTP query API."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from scripts.local_stack.processes import free_port, stop, wait_for_port

SCRAPE_SECONDS = 1


@dataclass
class Prometheus:
    url: str
    log_path: Path

    def query(self, promql: str, at: float | None = None) -> list[dict[str, object]]:
        """An instant query's result vector (each {metric, value: [time, "number"]})."""
        params: dict[str, str | float] = {"query": promql}
        if at is not None:
            params["time"] = at
        answer = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=30).json()
        assert answer["status"] == "success", answer
        result: list[dict[str, object]] = answer["data"]["result"]
        return result

    def number(self, promql: str, at: float | None = None) -> float | None:
        """The query's one value as a number; None when the vector is empty."""
        result = self.query(promql, at)
        if not result:
            return None
        assert len(result) == 1, result
        value = result[0]["value"]
        assert isinstance(value, list)
        return float(value[1])

    def wait_targets_up(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            targets = httpx.get(f"{self.url}/api/v1/targets", timeout=10).json()
            active = targets["data"]["activeTargets"]
            if len(active) == count and all(t["health"] == "up" for t in active):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"targets not up in {timeout} s: {active}")
            time.sleep(0.2)


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        raise AssertionError("Debian's prometheus is missing: run scripts/ensure_prometheus.sh")
    return found


@contextmanager
def running_prometheus(targets: list[str], directory: Path) -> Iterator[Prometheus]:
    """Prometheus scraping `targets` (host:port, path /metrics) every SCRAPE_SECONDS."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "prometheus.yml"
    listed = ", ".join(f'"{target}"' for target in targets)
    config.write_text(
        "global:\n"
        f"  scrape_interval: {SCRAPE_SECONDS}s\n"
        f"  evaluation_interval: {SCRAPE_SECONDS}s\n"
        "scrape_configs:\n"
        "  - job_name: task-api\n"
        "    static_configs:\n"
        f"      - targets: [{listed}]\n"
    )
    port = free_port()
    log_path = directory / "prometheus.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [prometheus_binary(), f"--config.file={config}",
             f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, process, "prometheus", timeout=60)
        server = Prometheus(f"http://127.0.0.1:{port}", log_path)
        deadline = time.monotonic() + 60
        while httpx.get(f"{server.url}/-/ready", timeout=10).status_code != 200:
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus not ready:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield server
    finally:
        stop(process, 30)
