"""The `task-api` console script, run as a user would: serve, seed, token."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import jwt
import pytest

from tests.support.servers import SECRET, TASK_API, free_port, random_user_id


def bare_env(**extra: str) -> dict[str, str]:
    """No settings from the developer's shell: only what a fresh machine has."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return {**keep, **extra}


def run(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TASK_API, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120,
        check=False,
    )


def test_serve_refuses_a_short_secret(database_url: str) -> None:
    result = run("serve", env=bare_env(DATABASE_URL=database_url, BETTER_AUTH_SECRET="short"))
    assert result.returncode == 2
    assert "BETTER_AUTH_SECRET is 5 bytes; HS256 needs at least 32" in result.stderr


def test_serve_refuses_to_start_without_a_key(database_url: str) -> None:
    result = run("serve", env=bare_env(DATABASE_URL=database_url))
    assert result.returncode == 2
    assert "no token key configured" in result.stderr


def test_serve_with_no_environment_serves_the_seeded_tasks_to_its_token(tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen(
        [TASK_API, "serve", "--port", str(port)], env=bare_env(), cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        token = None
        deadline = time.monotonic() + 90
        assert server.stdout is not None
        while token is None and time.monotonic() < deadline:
            line = server.stdout.readline()
            if not line and server.poll() is not None:
                pytest.fail(f"task-api serve exited with {server.returncode}")
            match = re.fullmatch(r"\s+(eyJ[\w-]+\.[\w-]+\.[\w-]+)\s*", line)
            token = match.group(1) if match else None
        assert token, "no token printed"
        body = None
        while time.monotonic() < deadline:
            try:
                response = httpx.get(
                    f"http://127.0.0.1:{port}/api/tasks",
                    headers={"Authorization": f"Bearer {token}"},
                )
                body = response.json()
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert body is not None
        assert body["meta"]["total"] == 6
        assert {t["user_id"] for t in body["data"]} == {"a11ce000-0000-4000-8000-000000000001"}
        assert (tmp_path / ".data" / "pg" / "PG_VERSION").exists()
    finally:
        server.terminate()
        code = server.wait(timeout=60)
        rest = server.stdout.read() if server.stdout else ""
        assert code == 0, f"exit {code} after SIGTERM; output:\n{rest[-3000:]}"


async def test_seed_is_idempotent_and_reset_reloads(database_url: str, db) -> None:  # type: ignore[no-untyped-def]
    env = bare_env(DATABASE_URL=database_url, BETTER_AUTH_SECRET=SECRET)
    demo = ["a11ce000-0000-4000-8000-000000000001", "b0b00000-0000-4000-8000-000000000002"]
    count = "SELECT count(*) FROM tasks WHERE user_id = ANY($1::text[])"
    first = run("seed", env=env)
    assert first.returncode == 0, first.stderr
    assert await db.fetchval(count, demo) == 11
    again = run("seed", env=env)
    assert "seeded 0 tasks" in again.stdout
    assert await db.fetchval(count, demo) == 11
    await db.execute("UPDATE tasks SET title = 'changed', change_xid = pg_current_xact_id() WHERE user_id = $1", demo[0])
    await db.execute(
        "INSERT INTO tasks (id, user_id, title) VALUES ($1, $2, 'extra')", uuid.uuid4(), demo[1]
    )
    reset = run("seed", "--reset", env=env)
    assert reset.returncode == 0 and "seeded 11 tasks" in reset.stdout
    assert await db.fetchval(count, demo) == 11
    assert await db.fetchval("SELECT count(*) FROM tasks WHERE title = 'changed' AND user_id = $1", demo[0]) == 0
    script = subprocess.run(  # noqa: ASYNC221 - the test waits for the CLI on purpose
        [sys.executable, "scripts/seed.py"], env=env, capture_output=True, text=True, timeout=60,
        cwd=Path(__file__).resolve().parents[2], check=False,
    )
    assert script.returncode == 0 and "seeded 0 tasks" in script.stdout


@pytest.mark.parametrize("user_id", [random_user_id(), str(uuid.uuid4()), "42"])
def test_token_mints_a_verifiable_hs256_token(user_id: str) -> None:
    env = bare_env(BETTER_AUTH_SECRET=SECRET, DATABASE_URL="postgresql://unused/db")
    result = run("token", user_id, "--ttl", "120", env=env)
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == user_id
    assert 100 <= claims["exp"] - time.time() <= 121


@pytest.mark.parametrize(
    ("user_id", "reason"),
    [("", "empty"), ("x" * 256, "longer than 255"), ("a\tb", "control characters")],
)
def test_token_refuses_what_is_not_a_user_id(user_id: str, reason: str) -> None:
    env = bare_env(BETTER_AUTH_SECRET=SECRET, DATABASE_URL="postgresql://unused/db")
    bad = run("token", user_id, env=env)
    assert bad.returncode == 2 and reason in bad.stderr, bad.stderr


@pytest.mark.parametrize("ttl", ["-5", "0", "1.5", "soon"])
def test_token_refuses_a_ttl_that_is_not_seconds_above_zero(ttl: str) -> None:
    """`--ttl -5` once minted a token that had expired before it was printed."""
    env = bare_env(BETTER_AUTH_SECRET=SECRET, DATABASE_URL="postgresql://unused/db")
    bad = run("token", "someone", "--ttl", ttl, env=env)
    assert bad.returncode == 2 and bad.stdout == "", bad
    assert f"argument --ttl: '{ttl}' is not a whole number of seconds above 0" in bad.stderr


@pytest.mark.parametrize(("name", "user_id"), [
    ("alice", "a11ce000-0000-4000-8000-000000000001"),
    ("bob", "b0b00000-0000-4000-8000-000000000002"),
])
def test_token_takes_the_demo_users_by_name(name: str, user_id: str) -> None:
    """`token alice` is the demo user alice (whose seeded tasks the token then lists), not a
    user whose id is the word alice; stderr says which id, stdout stays the bare token."""
    env = bare_env(BETTER_AUTH_SECRET=SECRET, DATABASE_URL="postgresql://unused/db")
    result = run("token", name, env=env)
    assert result.returncode == 0, result.stderr
    assert jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])["sub"] == user_id
    assert result.stderr == f"task-api token: {name} is the demo user {user_id}\n"


def test_the_wrapper_runs_task_api_with_nothing_on_path(tmp_path: Path) -> None:
    """README writes every command as `./scripts/task-api ...`: it must work where `uv` and
    the environment's bin/ are not on PATH, in the directory it is called from (whose .env the
    settings read)."""
    wrapper = Path(__file__).resolve().parents[2] / "scripts" / "task-api"
    (tmp_path / ".env").write_text(f"BETTER_AUTH_SECRET={SECRET}\nMAX_BODY_BYTES=2048\n")
    env = {**bare_env(), "PATH": "/usr/local/bin:/usr/bin:/bin"}
    result = subprocess.run([str(wrapper), "config"], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "MAX_BODY_BYTES=2048" in result.stdout.splitlines()


def test_serve_on_a_taken_port_says_so_in_one_line_before_starting_anything(
    tmp_path: Path,
) -> None:
    """serve.sh once started PostgreSQL, printed a token, a curl line and a docs URL for the
    busy port, then failed with [Errno 98]: now one line names the port and a free one."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("serve", "--port", str(port), env=bare_env(), cwd=tmp_path)
    assert result.returncode == 2, result
    assert result.stdout == ""
    line, = result.stderr.splitlines()
    assert re.fullmatch(rf"task-api serve: port {port} on 127\.0\.0\.1 is taken by another "
                        r"program: choose another with --port, e\.g\. --port \d+", line), line
    assert not (tmp_path / ".data").exists()


def test_the_embedded_database_starts_without_a_warning_about_xdg_runtime_dir(
    tmp_path: Path,
) -> None:
    """Without XDG_RUNTIME_DIR (containers, CI), every command that started the embedded
    PostgreSQL printed platformdirs' RuntimeDirWarning about a fallback that is fine."""
    env = bare_env()
    assert "XDG_RUNTIME_DIR" not in env
    result = run("migrate", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "migrations applied\n"
    assert result.stderr == "", result.stderr


def test_serve_sh_without_a_terminal_stops_on_sigint_as_on_sigterm(tmp_path: Path) -> None:
    """serve.sh without a terminal, stopped by a SIGINT to its process group (a supervisor,
    `timeout -s INT`): it must stop as cleanly as with SIGTERM: exit 0, no ERROR line, no
    traceback. Through `uv run` the server got that SIGINT twice (from the group and from uv,
    which passes it on), took the second as "force exit" and logged an ERROR CancelledError."""
    port = free_port()
    serve_sh = Path(__file__).resolve().parents[2] / "scripts" / "serve.sh"
    server = subprocess.Popen(
        [str(serve_sh), "--port", str(port)],
        env=bare_env(DATA_DIR=str(tmp_path / "data")), cwd=tmp_path,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # no controlling terminal's signals
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.communicate()[0][-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve.sh never served"
            time.sleep(0.2)
        os.killpg(server.pid, signal.SIGINT)  # as `kill -INT -PGID`, a supervisor, timeout(1)
        output, _ = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0, output[-3000:]
    assert '"level":"ERROR"' not in output and "Traceback" not in output, output[-3000:]
    assert "CancelledError" not in output, output[-3000:]
    assert "Finished server process" in output
