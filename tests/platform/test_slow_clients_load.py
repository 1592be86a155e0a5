"""Slow clients at the scale that took the server down (issue 32): 21,000 connections from one
host against one `task-api serve`, and 5,000 against the deploy recipe (HAProxy in front of two
replicas). Each sends a request line and then a header every 5 s, never finishing
(scripts/slow_clients.py, its own process, from 127.0.0.2). Meanwhile normal requests (a
user's task list, each on a new connection) come from 127.0.0.1. At least 99% of them must be
answered within a second (or, on a machine so busy that requests without any attack are slow,
within twice the p99 of a control run just before it: see CONTROL_FACTOR), and every slow
connection must be closed by the server within its deadline (here 3 s,
REQUEST_HEAD_TIMEOUT_SECONDS; HAProxy's `timeout http-request` follows it).

Before: 21,000 held every descriptor of the server (20,000) and 10 of 10 normal requests
failed; 5,000 filled HAProxy's maxconn 4096 and 6 of 10 timed out.

"Within its deadline" is measured by the attacker from its connect() to the server's close, so
it includes the time the connection waited in the kernel's queue before the server accepted it;
a busy machine (2 cores, shared, the attacker on them too) adds timer lag to both sides. So
99% must be closed within twice the deadline and all within three times (HELD_AT_MOST); a
server without a deadline holds them until the attacker gives up (120 s); the
figures (p50, p99, max) are printed and written to artifacts/slow-clients.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from scripts.local_stack.haproxy import PER_SOURCE_CONNECTIONS
from scripts.local_stack.stack import running_stack
from tests.http.test_better_auth import running_api
from tests.support.artifacts import artifact
from tests.support.factories import THROUGH_PGBOUNCER, new_user
from tests.support.normal_requests import NormalRequests
from tests.support.reporting import show
from tests.support.servers import SECRET

pytestmark = pytest.mark.skipif(
    THROUGH_PGBOUNCER, reason="slow clients never reach the database: runs in the direct pass")

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 3.0  # REQUEST_HEAD_TIMEOUT_SECONDS for the server and the recipe here
CLOSE_MARGIN = DEADLINE  # queueing before accept and timer lag, both sides (see above)
# No connection held for a second deadline: a server that restarted the deadline on each
# header (a per-read timeout), or had none, holds them far longer.
HELD_AT_MOST = 3 * DEADLINE
# As measured in issue 32. With the 3 s deadline here no second header comes: that bytes
# trickling in do not extend the deadline is tested in test_slow_clients.py.
HEADER_INTERVAL = 5.0
ATTACKER = "127.0.0.2"  # loopback, another source address: what a per-source limit sees
ANSWERED_WITHIN = 1.0
ANSWERED_SHARE = 0.99
# The machine is shared (2 cores, other builds): when even the control's p99 is not well
# under a second, the bar is this many times the control's p99 instead, so the test fails
# for an attack that keeps requests out, not for a busy machine. Before the fix the normal
# requests were not answered at all, which fails any bar.
CONTROL_REQUESTS = 100
CONTROL_FACTOR = 2.0
SETTINGS = {"REQUEST_HEAD_TIMEOUT_SECONDS": str(DEADLINE), "LOG_LEVEL": "WARNING",
            # the normal requests are one user's: never limited here
            "RATE_LIMIT_PER_SECOND": "1000000", "RATE_LIMIT_BURST": "1000000"}


def attack(target: str, connections: int) -> dict[str, Any]:
    """scripts/slow_clients.py against host:port, with normal requests to the same target
    while it runs, and as many before it (the control: what the machine gives without an
    attack); returns the three results."""
    user = new_user()
    host, _, port = target.rpartition(":")
    control = NormalRequests(host, int(port), "/api/tasks?limit=5", user.token)
    control.run(CONTROL_REQUESTS)
    normal = NormalRequests(host, int(port), "/api/tasks?limit=5", user.token)
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "slow_clients.py"), target,
         "--connections", str(connections), "--interval", str(HEADER_INTERVAL), "--source", ATTACKER,
         "--hold-seconds", "120"],
        stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    lines = []
    prober: threading.Thread | None = None
    for line in process.stdout:
        lines.append(json.loads(line))
        if lines[-1]["event"] == "opening":
            prober = threading.Thread(target=normal.run_until, args=(process,))
            prober.start()
    assert process.wait(timeout=60) == 0
    assert prober is not None
    prober.join(timeout=60)
    bound = max(ANSWERED_WITHIN, CONTROL_FACTOR * (control.summary()["p99"] or 0))
    return {"slow": lines[-1], "normal": {**normal.summary(), "bound": round(bound, 3),
                                          "answered_within_bound": normal.within(bound)},
            "control": control.summary()}


def check(result: dict[str, Any], opened_at_least: int) -> None:
    slow, normal = result["slow"], result["normal"]
    assert slow["opened"] >= opened_at_least, slow
    assert slow["still_open"] == 0, slow
    assert slow["closed_by_server"] == slow["opened"], slow
    assert slow["held_seconds"]["p99"] <= DEADLINE + CLOSE_MARGIN, slow
    assert slow["held_seconds"]["max"] <= HELD_AT_MOST, slow
    assert normal["sent"] >= 30, normal
    assert normal["answered_within_bound"] >= ANSWERED_SHARE * normal["sent"], result


def report(request: pytest.FixtureRequest, name: str, result: dict[str, Any]) -> None:
    path = artifact("slow-clients.json")
    saved = json.loads(path.read_text()) if path.exists() else {}
    saved[name] = result
    path.write_text(json.dumps(saved, indent=2) + "\n")
    show(request, f"{name}: {json.dumps(result)}")


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[str]:
    with running_api(database_url, BETTER_AUTH_SECRET=SECRET, **SETTINGS) as base_url:
        yield str(urlsplit(base_url).netloc)


def test_21000_slow_connections_do_not_keep_normal_requests_out_of_one_server(
    server: str, request: pytest.FixtureRequest
) -> None:
    """Above the server's descriptor limit (20,000 here; MAX_CONNECTIONS 10,000 by default):
    deadlines close them, and over the bound the longest waiting give way."""
    result = attack(server, 21_000)
    report(request, "one server, 21000 slow connections", result)
    check(result, opened_at_least=21_000)
    assert set(result["slow"]["answers"]) <= {"HTTP/1.1 408 Request Timeout", "(none)"}


def test_5000_slow_connections_do_not_keep_normal_requests_out_of_the_recipe(
    database_url: str, request: pytest.FixtureRequest
) -> None:
    """One source gets PER_SOURCE_CONNECTIONS at HAProxy (the rest are closed as they come),
    each until `timeout http-request`; the normal requests from another source pass."""
    with running_stack(2, database_url=database_url, secret=SECRET, env=SETTINGS) as stack:
        result = attack(urlsplit(stack.url).netloc, 5_000)
    report(request, "deploy recipe, 5000 slow connections", result)
    check(result, opened_at_least=PER_SOURCE_CONNECTIONS)
    # The rest were closed by HAProxy as they came (a reset right after the handshake).
    refused = result["slow"]["failed_to_open"]
    assert set(refused) <= {"ConnectionResetError", "ConnectionRefusedError"}, refused
    assert result["slow"]["opened"] + sum(refused.values()) == 5_000
