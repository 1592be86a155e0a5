"""Schemathesis against the live server (uvicorn over HTTP, real PostgreSQL, a real token):
every check, every phase, including stateful through the contract's links.

CI runs a fixed seed. A longer run with a random seed:
    SCHEMATHESIS_SEED=random SCHEMATHESIS_MAX_EXAMPLES=500 ./scripts/test.sh -k schemathesis
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.artifacts import artifact
from tests.support.factories import User

ROOT = Path(__file__).resolve().parents[2]
SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
DEFAULT_SEED = "20261126"


async def test_schemathesis_finds_no_failure(base_url: str, alice: User) -> None:
    async with httpx.AsyncClient(base_url=base_url, headers=alice.headers) as client:
        for title in ("first", "second"):
            created = await client.post("/api/tasks", json={"title": title})
            assert created.status_code == 201
        cursor = (await client.get("/api/tasks", params={"limit": 1})).json()["meta"]["next_cursor"]
        sync_token = (await client.get("/api/tasks/changes")).json()["meta"]["sync_token"]
    assert cursor and sync_token
    seed = os.environ.get("SCHEMATHESIS_SEED", DEFAULT_SEED)
    command = [
        SCHEMATHESIS, "--config-file", "schemathesis.toml", "run", "openapi.yaml",
        "--report", "junit", "--report-dir", str(artifact("schemathesis")),
    ]
    if seed != "random":
        command += ["--seed", seed]
    if "SCHEMATHESIS_MAX_EXAMPLES" in os.environ:
        command += ["--max-examples", os.environ["SCHEMATHESIS_MAX_EXAMPLES"]]
    env = {
        **os.environ,
        "TASK_API_URL": base_url,
        "TASK_API_TOKEN": alice.token,
        "TASK_API_CURSOR": cursor,
        "TASK_API_SYNC_TOKEN": sync_token,
        "NO_COLOR": "1",
    }
    result = subprocess.run(  # noqa: ASYNC221 - the server runs in its own thread
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-20000:]
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in output, f"phase {phase} did not pass:\n{output[-5000:]}"
    assert "Selected: 19/19" in output and "Tested: 19" in output
    print(output)
