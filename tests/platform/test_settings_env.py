"""Settings read exactly as README's Configuration table documents them: through the real
environment and through a `.env` file, by the real `task-api` command in a subprocess (never
keyword arguments), and every bad value stopping every command with one line that names the
variable and what it expects, exit status 2, no traceback.

`task-api config` prints what the commands read (secrets masked): it loads the settings the way
`serve` does, in a fraction of the time. CORS and bad values are also proven on `task-api serve`
itself, with real preflights."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from impl.platform.settings import Settings
from impl.platform.token_verifier import mint_hs256
from tests.support.servers import (
    SECRET,
    TASK_API,
    free_port,
    random_user_id,
    server_environment,
    stop,
    wait_ready,
)

README = Path(__file__).resolve().parents[2] / "README.md"


def bare_env(**extra: str) -> dict[str, str]:
    """No settings from the developer's shell: only what a fresh machine has."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return {**keep, **extra}


def task_api(*args: str, env: dict[str, str], cwd: Path, timeout: float = 60
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TASK_API, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
        check=False, stdin=subprocess.DEVNULL,
    )


def read_config(tmp: Path, env: dict[str, str], dotenv: str | None = None) -> dict[str, Any]:
    """`task-api config` run in `tmp` (with `dotenv` as its .env): NAME -> value."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / ".env").unlink(missing_ok=True)
    if dotenv is not None:
        (tmp / ".env").write_text(dotenv)
    result = task_api("config", env=bare_env(**env), cwd=tmp)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    values = {}
    for line in result.stdout.splitlines():
        name, _, value = line.partition("=")
        values[name] = json.loads(value)
    return values


def readme_variables() -> list[str]:
    """The variables of README's Configuration table, in order."""
    section = README.read_text().split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    names: list[str] = []
    for row in section.splitlines():
        if row.startswith("| `"):
            names += re.findall(r"`([A-Z][A-Z0-9_]*)`", row.split("|")[1])
    return names


def test_readme_table_lists_exactly_the_settings() -> None:
    documented = readme_variables()
    assert len(documented) == len(set(documented)), documented
    assert set(documented) == {name.upper() for name in Settings.model_fields}


# Every variable with a value that is not its default, as written in the environment or .env,
# and what the server then uses (as `task-api config` shows it).
WRITTEN = {
    "DATABASE_URL": "postgresql://app:db-PASSWORD-7@db.example.com:5433/app?sslmode=require",
    "DATA_DIR": "elsewhere/data",
    "BETTER_AUTH_SECRET": "s" * 40,
    "BETTER_AUTH_URL": "https://app.example.com",
    "JWT_JWKS_URL": "https://keys.example.com/jwks",
    "JWT_ISSUER": "issuer-x",
    "JWT_AUDIENCE": "audience-x",
    "JWT_LEEWAY_SECONDS": "7",
    "JWKS_REFETCH_COOLDOWN_SECONDS": "1.5",
    "JWKS_MAX_AGE_SECONDS": "120",
    "CORS_ORIGINS": "http://a.test, https://b.test:8443",
    "LOG_LEVEL": "debug",
    "LOG_FORMAT": "TEXT",
    "DB_POOL_MIN_SIZE": "3",
    "DB_POOL_MAX_SIZE": "9",
    "DB_COMMAND_TIMEOUT_SECONDS": "2.5",
    "DB_CONNECT_TIMEOUT_SECONDS": "1.5",
    "DB_ACQUIRE_TIMEOUT_SECONDS": "0.75",
    "DB_STATEMENT_CACHE": "false",
    "MAX_BODY_BYTES": "2048",
    "RATE_LIMIT_PER_SECOND": "2.5",
    "RATE_LIMIT_BURST": "40",
    "MAX_TASKS_PER_USER": "500",
    "CURSOR_SECRET": "cursor-SECRET-value",
    "SHUTDOWN_READY_GRACE_SECONDS": "1.5",
    "SYNC_RETENTION_SECONDS": "86400",
    "SYNC_HEARTBEAT_SECONDS": "5.5",
    "SYNC_MAX_STREAMS_PER_USER": "3",
    "DATABASE_LISTEN_URL": "postgresql://app:listen-PASSWORD@db.example.com:5432/app",
    "SYNC_POLL_SECONDS": "0.5",
    "REMINDER_POLL_SECONDS": "0.25",
    "REMINDER_BATCH_SIZE": "50",
    "REQUEST_HEAD_TIMEOUT_SECONDS": "2.5",
    "REQUEST_BODY_TIMEOUT_SECONDS": "12",
    "MAX_CONNECTIONS": "500",
    "METRICS_PORT": "9464",
    "METRICS_HOST": "0.0.0.0",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector.example.com:4318",
    "WEBHOOK_ALLOW_HTTP": "true",
    "WEBHOOK_DELIVERY": "false",
    "WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "1",
    "MAX_WEBHOOKS_PER_USER": "3",
    "WEBHOOK_TIMEOUT_SECONDS": "2.5",
    "WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT": "2",
    "WEBHOOK_WORKER_CONCURRENCY": "8",
    "WEBHOOK_RETRY_BASE_SECONDS": "0.5",
    "WEBHOOK_RETRY_FOR_SECONDS": "3600",
    "WEBHOOK_SECRET_GRACE_SECONDS": "60",
}
READ = {
    "DATABASE_URL": "postgresql://app:***@db.example.com:5433/app?sslmode=require",
    "DATA_DIR": "elsewhere/data",
    "BETTER_AUTH_SECRET": "*** (40 bytes)",
    "BETTER_AUTH_URL": "https://app.example.com",
    "JWT_JWKS_URL": "https://keys.example.com/jwks",
    "JWT_ISSUER": "issuer-x",
    "JWT_AUDIENCE": "audience-x",
    "JWT_LEEWAY_SECONDS": 7,
    "JWKS_REFETCH_COOLDOWN_SECONDS": 1.5,
    "JWKS_MAX_AGE_SECONDS": 120,
    "CORS_ORIGINS": ["http://a.test", "https://b.test:8443"],
    "LOG_LEVEL": "DEBUG",
    "LOG_FORMAT": "text",
    "DB_POOL_MIN_SIZE": 3,
    "DB_POOL_MAX_SIZE": 9,
    "DB_COMMAND_TIMEOUT_SECONDS": 2.5,
    "DB_CONNECT_TIMEOUT_SECONDS": 1.5,
    "DB_ACQUIRE_TIMEOUT_SECONDS": 0.75,
    "DB_STATEMENT_CACHE": False,
    "MAX_BODY_BYTES": 2048,
    "RATE_LIMIT_PER_SECOND": 2.5,
    "RATE_LIMIT_BURST": 40,
    "MAX_TASKS_PER_USER": 500,
    "CURSOR_SECRET": "*** (19 bytes)",
    "SHUTDOWN_READY_GRACE_SECONDS": 1.5,
    "SYNC_RETENTION_SECONDS": 86400,
    "SYNC_HEARTBEAT_SECONDS": 5.5,
    "SYNC_MAX_STREAMS_PER_USER": 3,
    "DATABASE_LISTEN_URL": "postgresql://app:***@db.example.com:5432/app",
    "SYNC_POLL_SECONDS": 0.5,
    "REMINDER_POLL_SECONDS": 0.25,
    "REMINDER_BATCH_SIZE": 50,
    "REQUEST_HEAD_TIMEOUT_SECONDS": 2.5,
    "REQUEST_BODY_TIMEOUT_SECONDS": 12,
    "MAX_CONNECTIONS": 500,
    "METRICS_PORT": 9464,
    "METRICS_HOST": "0.0.0.0",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector.example.com:4318",
    "WEBHOOK_ALLOW_HTTP": True,
    "WEBHOOK_DELIVERY": False,
    "WEBHOOK_ALLOW_PRIVATE_ADDRESSES": True,
    "MAX_WEBHOOKS_PER_USER": 3,
    "WEBHOOK_TIMEOUT_SECONDS": 2.5,
    "WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT": 2,
    "WEBHOOK_WORKER_CONCURRENCY": 8,
    "WEBHOOK_RETRY_BASE_SECONDS": 0.5,
    "WEBHOOK_RETRY_FOR_SECONDS": 3600,
    "WEBHOOK_SECRET_GRACE_SECONDS": 60,
}
# README's defaults, as the commands read them with nothing set.
DEFAULTS = {
    "DATABASE_URL": None, "DATA_DIR": ".data", "BETTER_AUTH_SECRET": None,
    "BETTER_AUTH_URL": None, "JWT_JWKS_URL": None, "JWT_ISSUER": None, "JWT_AUDIENCE": None,
    "JWT_LEEWAY_SECONDS": 30, "JWKS_REFETCH_COOLDOWN_SECONDS": 3, "JWKS_MAX_AGE_SECONDS": 600,
    "CORS_ORIGINS": [], "LOG_LEVEL": "INFO", "LOG_FORMAT": "auto", "DB_POOL_MIN_SIZE": 2,
    "DB_POOL_MAX_SIZE": 16, "DB_COMMAND_TIMEOUT_SECONDS": 10, "DB_CONNECT_TIMEOUT_SECONDS": 5,
    "DB_ACQUIRE_TIMEOUT_SECONDS": 5, "DB_STATEMENT_CACHE": "auto", "MAX_BODY_BYTES": 65536,
    "RATE_LIMIT_PER_SECOND": 20, "RATE_LIMIT_BURST": 200, "MAX_TASKS_PER_USER": 100_000,
    "CURSOR_SECRET": None, "SHUTDOWN_READY_GRACE_SECONDS": 0,
    "SYNC_RETENTION_SECONDS": 2_592_000, "SYNC_HEARTBEAT_SECONDS": 15,
    "SYNC_MAX_STREAMS_PER_USER": 10, "DATABASE_LISTEN_URL": None, "SYNC_POLL_SECONDS": 2,
    "REMINDER_POLL_SECONDS": 1, "REMINDER_BATCH_SIZE": 500,
    "REQUEST_HEAD_TIMEOUT_SECONDS": 10, "REQUEST_BODY_TIMEOUT_SECONDS": 30,
    "MAX_CONNECTIONS": 10_000,
    "METRICS_PORT": None, "METRICS_HOST": "127.0.0.1", "OTEL_EXPORTER_OTLP_ENDPOINT": None,
    "WEBHOOK_ALLOW_HTTP": False, "WEBHOOK_ALLOW_PRIVATE_ADDRESSES": False, "WEBHOOK_DELIVERY": True,
    "MAX_WEBHOOKS_PER_USER": 25, "WEBHOOK_TIMEOUT_SECONDS": 10,
    "WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT": 4, "WEBHOOK_WORKER_CONCURRENCY": 32,
    "WEBHOOK_RETRY_BASE_SECONDS": 5, "WEBHOOK_RETRY_FOR_SECONDS": 172_800,
    "WEBHOOK_SECRET_GRACE_SECONDS": 86400,
}


def test_every_variable_is_read_from_the_environment_and_from_dotenv(tmp_path: Path) -> None:
    assert set(WRITTEN) == set(READ) == set(DEFAULTS) == set(readme_variables())
    assert read_config(tmp_path / "nothing", {}) == DEFAULTS

    from_env = read_config(tmp_path / "env", WRITTEN)
    dotenv = "".join(f"{name}={value}\n" for name, value in WRITTEN.items())
    from_dotenv = read_config(tmp_path / "dotenv", {}, dotenv)
    for source, seen in (("environment", from_env), (".env", from_dotenv)):
        wrong = {k: (seen[k], v) for k, v in READ.items() if seen[k] != v}
        assert not wrong, f"through the {source}, (read, expected): {wrong}"

    # The environment wins over .env; an empty value counts as unset (so .env's applies).
    both = read_config(tmp_path / "both", {"LOG_LEVEL": "ERROR", "CORS_ORIGINS": ""}, dotenv)
    assert both["LOG_LEVEL"] == "ERROR" and both["MAX_BODY_BYTES"] == 2048
    assert both["CORS_ORIGINS"] == READ["CORS_ORIGINS"]
    empty = read_config(tmp_path / "empty", {}, "DATABASE_URL=\nCORS_ORIGINS=\nLOG_FORMAT=\n")
    assert (empty["DATABASE_URL"], empty["CORS_ORIGINS"], empty["LOG_FORMAT"]) == (None, [], "auto")

    # Booleans and "auto" as README says.
    for written, read in (("true", True), ("FALSE", False), ("auto", "auto"), ("1", True)):
        assert read_config(tmp_path / "b", {"DB_STATEMENT_CACHE": written})[
            "DB_STATEMENT_CACHE"] == read


CORS_FORMS = [  # (as written in the environment, as written in .env, origins)
    ("http://localhost:3000", "CORS_ORIGINS=http://localhost:3000", ["http://localhost:3000"]),
    ("http://a.test,https://b.test:8443", "CORS_ORIGINS=http://a.test,https://b.test:8443",
     ["http://a.test", "https://b.test:8443"]),
    ("  http://a.test ,  https://b.test:8443 , ", "CORS_ORIGINS=http://a.test, https://b.test:8443",
     ["http://a.test", "https://b.test:8443"]),
    ('["http://a.test", "https://b.test:8443"]',
     "CORS_ORIGINS='[\"http://a.test\", \"https://b.test:8443\"]'",
     ["http://a.test", "https://b.test:8443"]),
    ('["http://a.test"]', 'CORS_ORIGINS=["http://a.test"]', ["http://a.test"]),
    ("*", "CORS_ORIGINS=*", ["*"]),
]


@pytest.mark.parametrize(("in_env", "in_dotenv", "origins"), CORS_FORMS)
def test_cors_origins_every_documented_form(
    tmp_path: Path, in_env: str, in_dotenv: str, origins: list[str]
) -> None:
    assert read_config(tmp_path / "env", {"CORS_ORIGINS": in_env})["CORS_ORIGINS"] == origins
    assert read_config(tmp_path / "dotenv", {}, in_dotenv + "\n")["CORS_ORIGINS"] == origins


# A bad value of every variable that can have one, and a word of what the message must expect.
BAD = [
    ("MAX_BODY_BYTES", "lots", "at least 1024"),
    ("MAX_BODY_BYTES", "512", "at least 1024"),
    ("CORS_ORIGINS", "[broken", "JSON list"),
    ("CORS_ORIGINS", '["http://a.test", 3]', "JSON list of strings"),
    ("CORS_ORIGINS", "http://localhost:3000/", "scheme://host[:port]"),
    ("CORS_ORIGINS", "localhost:3000, http://b.test", "scheme://host[:port]"),
    ("DB_POOL_MAX_SIZE", "0", "1 or more"),
    ("DB_POOL_MIN_SIZE", "-1", "0 or more"),
    ("DB_POOL_MIN_SIZE", "many", "0 or more"),
    ("LOG_LEVEL", "LOUD", "DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ("LOG_FORMAT", "xml", "json, text or auto"),
    ("DB_STATEMENT_CACHE", "maybe", "true, false or auto"),
    ("DATABASE_URL", "mysql://app:db-PASSWORD-7@h/db", "postgresql://"),
    ("BETTER_AUTH_URL", "app.example.com", "http(s)://"),
    ("JWT_JWKS_URL", "ftp://keys.example.com/jwks", "http(s)://"),
    ("JWT_LEEWAY_SECONDS", "301", "0 to 300"),
    ("JWT_LEEWAY_SECONDS", "1.5", "whole number"),
    ("JWKS_REFETCH_COOLDOWN_SECONDS", "61", "0 to 60"),
    ("JWKS_MAX_AGE_SECONDS", "0", "above 0"),
    ("DB_COMMAND_TIMEOUT_SECONDS", "nan", "above 0"),
    ("DB_CONNECT_TIMEOUT_SECONDS", "-1", "above 0"),
    ("DB_ACQUIRE_TIMEOUT_SECONDS", "inf", "above 0"),
    ("DB_ACQUIRE_TIMEOUT_SECONDS", "5s", "above 0"),
    ("SHUTDOWN_READY_GRACE_SECONDS", "61", "0 to 60"),
    ("SHUTDOWN_READY_GRACE_SECONDS", "-1", "0 to 60"),
    ("RATE_LIMIT_PER_SECOND", "-1", "0 or more"),
    ("RATE_LIMIT_PER_SECOND", "inf", "0 or more"),
    ("RATE_LIMIT_BURST", "0", "from 1 to 1000000000"),
    ("RATE_LIMIT_BURST", "1000000001", "from 1 to 1000000000"),
    ("CORS_ORIGINS", "1http://a.test", "scheme://host[:port]"),
    ("SYNC_RETENTION_SECONDS", "0", "from 1 to 315360000"),
    ("SYNC_RETENTION_SECONDS", "30d", "from 1 to 315360000"),
    ("SYNC_HEARTBEAT_SECONDS", "0", "above 0, at most 300"),
    ("SYNC_MAX_STREAMS_PER_USER", "0", "from 1 to 10000"),
    ("DATABASE_LISTEN_URL", "redis://cache:6379", "postgresql://"),
    ("SYNC_POLL_SECONDS", "61", "above 0, at most 60"),
    ("REMINDER_POLL_SECONDS", "0", "above 0, at most 60"),
    ("REMINDER_BATCH_SIZE", "0", "from 1 to 10000"),
    ("CORS_ORIGINS", "http://" + "a" * 2048 + ".test", "scheme://host[:port]"),
    ("MAX_TASKS_PER_USER", "lots", "0 or more"),
    ("REQUEST_HEAD_TIMEOUT_SECONDS", "0", "above 0, at most 300"),
    ("REQUEST_BODY_TIMEOUT_SECONDS", "601", "above 0, at most 600"),
    ("MAX_CONNECTIONS", "15", "from 16 to 1000000"),
    ("METRICS_PORT", "0", "from 1 to 65535"),
    ("METRICS_PORT", "http", "from 1 to 65535"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318", "http(s)://"),
    ("WEBHOOK_ALLOW_HTTP", "maybe", "true or false"),
    ("WEBHOOK_DELIVERY", "perhaps", "true or false"),
    ("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", "sometimes", "true or false"),
    ("MAX_WEBHOOKS_PER_USER", "0", "from 1 to 10000"),
    ("WEBHOOK_TIMEOUT_SECONDS", "61", "above 0, at most 60"),
    ("WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", "0", "from 1 to 100"),
    ("WEBHOOK_WORKER_CONCURRENCY", "1001", "from 1 to 1000"),
    ("WEBHOOK_RETRY_BASE_SECONDS", "0", "above 0, at most 3600"),
    ("WEBHOOK_RETRY_FOR_SECONDS", "0", "from 1 to 2592000"),
    ("WEBHOOK_SECRET_GRACE_SECONDS", "-1", "from 0 to 2592000"),
]
VALID = {"DATABASE_URL": "postgresql://app@127.0.0.1:1/none", "BETTER_AUTH_SECRET": SECRET}


def assert_refused(result: subprocess.CompletedProcess[str], name: str, expects: str,
                   dotenv: bool = False) -> None:
    where = "in .env" if dotenv else "environment"
    shown = f"{name} ({where}): exit {result.returncode}\nstdout: {result.stdout!r}\n" \
            f"stderr: {result.stderr!r}"
    assert result.returncode == 2, shown
    assert result.stdout == "", shown
    lines = result.stderr.splitlines()
    assert len(lines) == 1, shown
    assert lines[0].startswith(f"task-api: {name}"), shown
    assert "expected" in lines[0] and expects in lines[0], shown
    assert ("(in .env)" in lines[0]) == dotenv, shown
    assert "Traceback" not in result.stderr and "db-PASSWORD-7" not in result.stderr, shown


def test_a_bad_value_of_any_variable_is_one_line_and_exit_2(tmp_path: Path) -> None:
    assert {name for name, _, _ in BAD} | {"DATA_DIR", "BETTER_AUTH_SECRET", "JWT_ISSUER",
                                          "JWT_AUDIENCE", "CURSOR_SECRET",
                                          "METRICS_HOST"} == set(DEFAULTS)

    def attempt(case: tuple[int, str, str, str, bool]) -> None:
        number, name, value, expects, dotenv = case
        cwd = tmp_path / str(number)
        cwd.mkdir()
        env = bare_env(**VALID)
        if dotenv:
            (cwd / ".env").write_text(f"{name}={value}\n")
            env.pop(name, None)
        else:
            env[name] = value
        assert_refused(task_api("config", env=env, cwd=cwd), name, expects, dotenv)

    cases = [(n, *bad, dotenv) for n, (bad, dotenv) in enumerate(
        (bad, dotenv) for bad in BAD for dotenv in (False, True))]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(attempt, cases))

    # Two variables that disagree: one line naming both.
    both = task_api("config", env=bare_env(**VALID, DB_POOL_MIN_SIZE="20"), cwd=tmp_path)
    assert both.returncode == 2 and len(both.stderr.splitlines()) == 1, both.stderr
    assert "DB_POOL_MIN_SIZE (20) is larger than DB_POOL_MAX_SIZE (16)" in both.stderr
    # A bucket that would refill in more than a day (the contract bounds Retry-After by it).
    slow = task_api("config", env=bare_env(**VALID, RATE_LIMIT_PER_SECOND="0.001"), cwd=tmp_path)
    assert slow.returncode == 2 and len(slow.stderr.splitlines()) == 1, slow.stderr
    assert "a bucket must refill within a day" in slow.stderr, slow.stderr


@pytest.mark.parametrize(
    ("name", "value", "expects"),
    [("CORS_ORIGINS", "[broken", "JSON list"), ("MAX_BODY_BYTES", "lots", "at least 1024"),
     ("DB_POOL_MAX_SIZE", "0", "1 or more"), ("LOG_LEVEL", "LOUD", "INFO")],
)
def test_a_bad_value_stops_task_api_serve(tmp_path: Path, name: str, value: str,
                                          expects: str) -> None:
    """The real server command, with every other setting fine (it would start otherwise: see
    the CORS test below), refuses at once, from the environment and from .env."""
    port = str(free_port())
    started = time.monotonic()
    result = task_api("serve", "--port", port, env=bare_env(**VALID, **{name: value}),
                      cwd=tmp_path)
    assert_refused(result, name, expects)
    (tmp_path / ".env").write_text(f"{name}={value}\n")
    assert_refused(task_api("serve", "--port", port, env=bare_env(**VALID), cwd=tmp_path),
                   name, expects, dotenv=True)
    assert time.monotonic() - started < 30
    assert not (tmp_path / ".data").exists()  # refused before starting anything


@pytest.mark.parametrize("command", [["migrate"], ["seed"], ["seed", "--reset"],
                                     ["token", "someone"], ["config"]])
def test_a_bad_value_stops_every_other_command(tmp_path: Path, command: list[str]) -> None:
    env = bare_env(**VALID, CORS_ORIGINS="[broken")
    assert_refused(task_api(*command, env=env, cwd=tmp_path), "CORS_ORIGINS", "JSON list")
    assert not (tmp_path / ".data").exists()


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["migrate"], ["token", "alice"],
                                     ["config"]])
def test_an_unknown_key_in_dotenv_stops_the_command_naming_the_closest(
    tmp_path: Path, command: list[str]
) -> None:
    """`CORS_ORIGIN=` in .env was silently ignored, so the frontend's calls failed for a reason
    nobody could see: a key of .env that is no setting stops every command like a bad value."""
    (tmp_path / ".env").write_text("LOG_LEVEL=INFO\nCORS_ORIGIN=http://localhost:3000\n")
    result = task_api(*command, env=bare_env(**VALID), cwd=tmp_path)
    assert result.returncode == 2, result
    assert result.stderr.splitlines() == [
        "task-api: CORS_ORIGIN (in .env) is not a setting: did you mean CORS_ORIGINS?"]
    assert not (tmp_path / ".data").exists()  # refused before starting anything


def test_a_misspelled_variable_in_the_environment_is_a_warning_naming_the_closest(
    tmp_path: Path,
) -> None:
    """The environment is shared with every other program: a variable that starts like one of
    ours but is none is ignored with a warning line naming the closest setting; others (even
    MAX_JOBS, or JWT-less names of other tools, or OpenTelemetry's own OTEL_* variables, which
    its SDK reads) pass without a word."""
    env = bare_env(**VALID, CORS_ORIGIN="http://localhost:3000", DB_POOL_MAX="3",
                   MAX_BODY_SIZE="4096", LOG_LEVL="DEBUG", MAX_JOBS="4", PGHOST="/tmp",
                   NODE_ENV="test", OTEL_SERVICE_NAME="tasks", OTEL_TRACES_SAMPLER="always_on")
    result = task_api("config", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    messages = [json.loads(line)["message"] for line in result.stderr.splitlines()]
    assert messages == [
        "CORS_ORIGIN is not a setting and is ignored: did you mean CORS_ORIGINS?",
        "DB_POOL_MAX is not a setting and is ignored: did you mean DB_POOL_MAX_SIZE?",
        "LOG_LEVL is not a setting and is ignored: did you mean LOG_LEVEL?",
        "MAX_BODY_SIZE is not a setting and is ignored: did you mean MAX_BODY_BYTES?",
    ]
    assert "CORS_ORIGINS=[]" in result.stdout.splitlines()


# The three forms of CORS_ORIGINS on real servers: one origin (environment), a comma-separated
# list with spaces (.env, with MAX_BODY_BYTES beside it), a JSON list (environment).
SERVERS = {
    "one origin": ({"CORS_ORIGINS": "http://localhost:3000"}, None, ["http://localhost:3000"]),
    "comma-separated, in .env": (
        {}, "CORS_ORIGINS=http://a.test:5173 , https://b.test\nMAX_BODY_BYTES=2048\n",
        ["http://a.test:5173", "https://b.test"],
    ),
    "JSON list": ({"CORS_ORIGINS": '["http://c.test:8080", "https://d.test"]'}, None,
                  ["http://c.test:8080", "https://d.test"]),
}


@contextmanager
def serving(database_url: str, cwd: Path, env: dict[str, str], dotenv: str | None
            ) -> Iterator[tuple[subprocess.Popen[str], str]]:
    cwd.mkdir()
    if dotenv is not None:
        (cwd / ".env").write_text(dotenv)
    port = free_port()
    full_env = bare_env(**server_environment(database_url), BETTER_AUTH_SECRET=SECRET,
                        LOG_LEVEL="WARNING", **env)
    with (cwd / "server.log").open("w") as log:
        process = subprocess.Popen([TASK_API, "serve", "--port", str(port)], env=full_env,
                                   cwd=cwd, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        stop(process, 30)


def test_cors_origins_in_every_form_on_task_api_serve(database_url: str, tmp_path: Path) -> None:
    token = mint_hs256(SECRET, random_user_id())
    with ExitStack() as stack:
        servers = {
            name: (stack.enter_context(serving(database_url, tmp_path / str(n), env, dotenv)),
                   tmp_path / str(n) / "server.log", origins)
            for n, (name, (env, dotenv, origins)) in enumerate(SERVERS.items())
        }
        for (process, base), log, _ in servers.values():
            wait_ready(process, base, log)
        for name, ((_, base), _, origins) in servers.items():
            with httpx.Client(base_url=base, timeout=10) as http:
                for origin in origins:
                    preflight = http.options("/api/tasks/42", headers={
                        "Origin": origin, "Access-Control-Request-Method": "PATCH",
                        "Access-Control-Request-Headers": "authorization, content-type, if-match",
                    })
                    assert preflight.status_code == 200, (name, origin, preflight.text)
                    assert preflight.headers["access-control-allow-origin"] == origin, name
                    assert "PATCH" in preflight.headers["access-control-allow-methods"], name
                    allowed = preflight.headers["access-control-allow-headers"].lower()
                    assert {"authorization", "content-type", "if-match"} <= set(
                        re.split(r"\s*,\s*", allowed)), (name, allowed)

                    created = http.post("/api/tasks", json={"title": f"from {origin}"}, headers={
                        "Origin": origin, "Authorization": f"Bearer {token}",
                        "Idempotency-Key": f"cors-{origin}"})
                    assert created.status_code == 201, (name, created.text)
                    assert created.headers["access-control-allow-origin"] == origin
                    exposed = {h.strip().lower() for h in
                               created.headers["access-control-expose-headers"].split(",")}
                    assert {"etag", "location", "x-request-id"} <= exposed, (name, exposed)

                # An origin not listed gets no CORS grant.
                other = http.options("/api/tasks", headers={
                    "Origin": "http://evil.test", "Access-Control-Request-Method": "POST"})
                assert other.status_code == 400, (name, other.status_code)
                assert "access-control-allow-origin" not in other.headers, name
                listed = http.get("/api/tasks", headers={
                    "Origin": "http://evil.test", "Authorization": f"Bearer {token}"})
                assert "access-control-allow-origin" not in listed.headers, name

                # MAX_BODY_BYTES reached the server through .env (2048), or its default.
                body = {"title": "t" * 200, "description": "x" * 1990}  # > 2048 bytes, valid
                big = http.post("/api/tasks", json=body,
                                headers={"Authorization": f"Bearer {token}"})
                expected = 413 if "MAX_BODY_BYTES" in (SERVERS[name][1] or "") else 201
                assert big.status_code == expected, (name, big.status_code, big.text)
