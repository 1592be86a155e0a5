"""Where a benchmark run's CPU time goes: the server under test (all its processes), the
benchmark's PostgreSQL (every backend of its postmaster), and wrk (the benchmark's children),
read from /proc before and after the run. On a 2-CPU machine that all three share, this says
what a second worker can and cannot buy: the CPU a request costs each of them, how much of the
machine stayed idle, and how much went to other work on it (a shared machine's other users)."""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, int, float] | None:
    """(parent pid, process group, CPU seconds) of a live process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after the command name, which may hold spaces
    return int(fields[1]), int(fields[2]), (int(fields[11]) + int(fields[12])) / TICK


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user and system) a live process has used so far."""
    stat = _stat(pid)
    if stat is None:
        raise ProcessLookupError(pid)
    return stat[2]


def _processes() -> dict[int, tuple[int, int, float]]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            found[int(entry)] = stat
    return found


def postmaster_pid(data_dir: Path) -> int:
    """The postmaster of a data directory (first line of postmaster.pid)."""
    return int((data_dir / "postmaster.pid").read_text().split()[0])


@dataclass(frozen=True)
class Snapshot:
    at: float
    server: float  # CPU seconds of the processes in the server's process group
    postgres: float  # of the postmaster and its children
    children: float  # of this process's reaped children (the wrk runs)
    idle: float  # CPU seconds the whole machine spent idle (/proc/stat: idle and iowait)


def _idle() -> float:
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return (int(fields[4]) + int(fields[5])) / TICK


def snapshot(server_group: int, postmaster: int) -> Snapshot:
    processes = _processes()
    server = sum(cpu for _parent, group, cpu in processes.values() if group == server_group)
    postgres = sum(cpu for pid, (parent, _group, cpu) in processes.items()
                   if pid == postmaster or parent == postmaster)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Snapshot(time.monotonic(), server, postgres, usage.ru_utime + usage.ru_stime, _idle())


def share(before: Snapshot, after: Snapshot, requests: int) -> dict[str, float]:
    """CPU microseconds per request of each part, and the shares of the machine's CPUs that
    stayed idle and that other work took during the run."""
    wall = after.at - before.at
    parts = {"server": after.server - before.server,
             "postgres": after.postgres - before.postgres,
             "wrk": after.children - before.children}
    capacity = wall * (os.cpu_count() or 1)
    out = {f"{name}_us_per_request": round(seconds / max(requests, 1) * 1e6, 1)
           for name, seconds in parts.items()}
    idle = after.idle - before.idle
    out["idle_share"] = round(min(1.0, idle / capacity), 3)
    out["other_share"] = round(max(0.0, 1 - (sum(parts.values()) + idle) / capacity), 3)
    return out
