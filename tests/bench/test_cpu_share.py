"""Where a benchmark run's CPU went (bench/cpu_share.py): read from /proc for a real process
group and a real parent, and turned into microseconds per request and shares of the machine."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench import cpu_share

BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"


def test_a_process_groups_cpu_is_counted_and_split_per_request() -> None:
    """A child in its own process group (as the benchmark starts its servers) burns 0.3 s of
    CPU: the snapshots around it count it for that group, and for this process's parent
    nothing it did not do."""
    child = subprocess.Popen([sys.executable, "-c", BURN + "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE, start_new_session=True)
    try:
        before = cpu_share.snapshot(child.pid, os.getppid())
        deadline_reached = False
        while not deadline_reached:  # until the child has burnt its 0.3 s (however busy we are)
            now = cpu_share.snapshot(child.pid, os.getppid())
            deadline_reached = now.server - before.server >= 0.25 or child.poll() is not None
            time.sleep(0.02)
        after = cpu_share.snapshot(child.pid, os.getppid())
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)
    burnt = after.server - before.server
    assert 0.25 <= burnt <= 0.6
    share = cpu_share.share(before, after, requests=1000)
    assert share["server_us_per_request"] == round(burnt / 1000 * 1e6, 1)
    assert 0 <= share["idle_share"] <= 1 and 0 <= share["other_share"] <= 1


def test_shares_of_the_machine() -> None:
    cpus = os.cpu_count() or 1
    before = cpu_share.Snapshot(at=0.0, server=0.0, postgres=0.0, children=0.0, idle=0.0)
    # 10 s of wall time: the server used 2 s, PostgreSQL 1, wrk 0.5, the machine idled 3 CPU-s.
    after = cpu_share.Snapshot(at=10.0, server=2.0, postgres=1.0, children=0.5, idle=3.0)
    share = cpu_share.share(before, after, requests=5000)
    assert share["server_us_per_request"] == 400.0
    assert share["postgres_us_per_request"] == 200.0
    assert share["wrk_us_per_request"] == 100.0
    assert share["idle_share"] == round(3.0 / (10 * cpus), 3)
    assert share["other_share"] == round(max(0.0, 1 - 6.5 / (10 * cpus)), 3)
