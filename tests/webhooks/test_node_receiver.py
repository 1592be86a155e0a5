"""A Node receiver verifies every delivery with the JavaScript `standardwebhooks` library (an
implementation independent of ours and of the Python one), before and after a rotation."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from scripts.local_stack.processes import free_port, stop
from tests.support.better_auth import NODE_MODULES, ROOT, node_binary
from tests.support.factories import THROUGH_PGBOUNCER, User
from tests.support.servers import running_server, settings

RECEIVER = Path(__file__).parent / "node_receiver" / "receiver.mjs"
# Signatures do not depend on the pooler.
pytestmark = pytest.mark.skipif(THROUGH_PGBOUNCER, reason="runs in the direct pass")

WAIT = 120.0


def node_with_standardwebhooks() -> str:
    node = node_binary()
    if not (NODE_MODULES / "standardwebhooks" / "package.json").is_file():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=ROOT, check=True,
                       capture_output=True, timeout=600)
    return node


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


async def test_a_node_receiver_verifies_every_delivery(database_url: str, alice: User,
                                                       tmp_path: Path) -> None:
    node = node_with_standardwebhooks()
    port = free_port()
    app = settings(database_url, webhook_delivery=True, webhook_allow_http=True,
                   webhook_allow_private_addresses=True,
                   webhook_retry_base_seconds=0.2)
    with running_server(app) as base_url:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as api:
            hook = (await api.post("/api/webhooks", headers=alice.headers, json={
                "url": f"http://127.0.0.1:{port}/api/webhooks/tasks",
                "event_types": ["task.created", "task.completed"]})).json()["data"]
            out = tmp_path / "receiver.out"
            with out.open("w") as log:
                receiver = subprocess.Popen(  # noqa: ASYNC220 - starts at once, never waited on here
                    [node, str(RECEIVER)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                    env={"PORT": str(port), "WEBHOOK_SECRET": hook["secret"]},
                )
            try:
                task = (await api.post("/api/tasks", headers=alice.headers,
                                       json={"title": "a"})).json()["data"]
                await api.patch(f"/api/tasks/{task['id']}", headers=alice.headers,
                                json={"completed": True})
                # After a rotation the receiver still has the old secret: the old signature,
                # still sent beside the new one, verifies.
                await api.post(f"/api/webhooks/{hook['id']}/rotate-secret", headers=alice.headers)
                await api.post("/api/tasks", headers=alice.headers, json={"title": "b"})
                deadline = time.monotonic() + WAIT
                while len([e for e in lines(out) if "verified" in e]) < 3:
                    assert receiver.poll() is None, out.read_text()
                    assert time.monotonic() < deadline, out.read_text()
                    await asyncio.sleep(0.1)
            finally:
                stop(receiver, 10)
    events = [e for e in lines(out) if "verified" in e]
    assert all(e["verified"] for e in events), events
    assert sorted(str(e["type"]) for e in events) == ["task.completed", "task.created",
                                                      "task.created"]
