"""Client proof for the frontend teams: TypeScript types generated from openapi.yaml by
openapi-typescript, a strict `tsc` build of clients/typescript/src/demo.ts (openapi-fetch), and a
run of it with Node against the live server: the task operations, then the change feed (typed by
its operation, listTaskChanges, and the TaskChanges, TaskTombstone and SyncUpToDate schemas) and
the live stream's first event. A contract change that breaks the client fails here.

The Node tools are pinned in package.json (installed by scripts/test.sh; `npm ci` here when they
are missing or stale). The generated src/api.d.ts is never committed: it is made from the
contract on every run, so the type-check always sees the current openapi.yaml.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts import node_tools
from tests.support.factories import User

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "openapi.yaml"
CLIENT = ROOT / "clients" / "typescript"
NODE_MODULES = ROOT / "node_modules"
BIN = NODE_MODULES / ".bin"

# openapi-typescript 7 by default types every property that has a `default` as required, request
# bodies included: TaskWrite would then demand `completed`, `priority` and `tags`, which the
# server fills in when omitted (openapi-ts/openapi-typescript#1741, #2012). Frontends must
# generate with this flag too.
GENERATE_FLAGS = ["--default-non-nullable", "false"]


def run(command: list[str | Path], cwd: Path = ROOT, timeout: float = 60,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def node_tools_current() -> bool:
    """Every devDependency of package.json installed at its pinned version."""
    pins = json.loads((ROOT / "package.json").read_text())["devDependencies"]
    for name, version in pins.items():
        manifest = NODE_MODULES / name / "package.json"
        if not manifest.is_file() or json.loads(manifest.read_text()).get("version") != version:
            return False
    return (BIN / "openapi-typescript").exists() and (BIN / "tsc").exists()


@pytest.fixture(scope="module")
def node() -> str:
    """The pinned node binary, with the pinned tools installed (npm ci on a fresh clone)."""
    node = node_tools.node()
    if not node_tools_current():
        result = run([node_tools.npm(), "ci", "--no-audit", "--no-fund"], timeout=600)
        assert result.returncode == 0, output(result)
        assert node_tools_current(), "npm ci did not install the versions pinned in package.json"
    return node


def generate(contract: Path, client_dir: Path) -> None:
    """Write client_dir/src/api.d.ts from the contract."""
    result = run([BIN / "openapi-typescript", contract, *GENERATE_FLAGS,
                  "-o", client_dir / "src" / "api.d.ts"])
    assert result.returncode == 0, output(result)


def typecheck(client_dir: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return run([BIN / "tsc", "-p", client_dir, *flags])


def test_typescript_client_against_live_server(
    node: str, base_url: str, alice: User, bob: User
) -> None:
    generate(CONTRACT, CLIENT)
    build = typecheck(CLIENT)
    assert build.returncode == 0, "tsc rejects the client for this contract\n" + output(build)

    env = {**os.environ, "API_URL": base_url, "API_TOKEN": alice.token, "API_USER_ID": alice.id,
           "API_OTHER_TOKEN": bob.token}
    demo = run([node, CLIENT / "build" / "demo.js"], env=env)
    print(demo.stdout)
    assert demo.returncode == 0, output(demo)
    assert demo.stdout.rstrip().endswith("client proof passed"), output(demo)


# -- the guard: contract changes that break the client fail the type-check -----------------------


def rename_task_write_title(spec: dict[str, Any]) -> None:
    schema = spec["components"]["schemas"]["TaskWrite"]
    schema["properties"] = {
        ("name" if key == "title" else key): value for key, value in schema["properties"].items()
    }
    schema["required"] = ["name"]


def drop_not_found_code(spec: dict[str, Any]) -> None:
    code = spec["components"]["schemas"]["ErrorCode"]
    code["enum"] = [value for value in code["enum"] if value != "NOT_FOUND"]


def rename_next_cursor(spec: dict[str, Any]) -> None:
    page = spec["components"]["schemas"]["ListMeta"]["allOf"][1]
    page["properties"]["cursor"] = page["properties"].pop("next_cursor")
    page["required"] = ["cursor" if name == "next_cursor" else name for name in page["required"]]


def rename_tombstone_deleted_at(spec: dict[str, Any]) -> None:
    schema = spec["components"]["schemas"]["TaskTombstone"]
    schema["properties"]["removed_at"] = schema["properties"].pop("deleted_at")
    schema["required"] = ["id", "removed_at"]


def rename_list_task_changes(spec: dict[str, Any]) -> None:
    spec["paths"]["/api/tasks/changes"]["get"]["operationId"] = "getChanges"


def copy_client(destination: Path) -> Path:
    """clients/typescript without generated files, with the repo's node_modules in reach."""
    copy = destination / "clients" / "typescript"
    shutil.copytree(CLIENT, copy, ignore=shutil.ignore_patterns("build", "api.d.ts", "node_modules"))
    (destination / "node_modules").symlink_to(NODE_MODULES, target_is_directory=True)
    return copy


@pytest.fixture(scope="module")
def pristine_copy(node: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the client that type-checks against the real contract: the control, so a
    failing tsc below can only come from the contract change."""
    copy = copy_client(tmp_path_factory.mktemp("client-control"))
    generate(CONTRACT, copy)
    control = typecheck(copy, "--noEmit")
    assert control.returncode == 0, "the copied client must type-check\n" + output(control)
    return copy


@pytest.mark.usefixtures("pristine_copy")
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (rename_task_write_title, "'title'"),
        (drop_not_found_code, '"NOT_FOUND"'),
        (rename_next_cursor, "next_cursor"),
        (rename_tombstone_deleted_at, "deleted_at"),
        (rename_list_task_changes, "listTaskChanges"),
    ],
    ids=["TaskWrite.title renamed to name", "NOT_FOUND dropped from ErrorCode",
         "ListMeta.next_cursor renamed to cursor", "TaskTombstone.deleted_at renamed",
         "listTaskChanges renamed"],
)
def test_breaking_contract_change_fails_typecheck(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], expected: str
) -> None:
    spec = yaml.safe_load(CONTRACT.read_text())
    change(spec)
    broken = tmp_path / "openapi-broken.json"
    broken.write_text(json.dumps(spec))
    copy = copy_client(tmp_path)
    generate(broken, copy)

    result = typecheck(copy, "--noEmit")
    assert result.returncode != 0, "tsc accepted a client the contract change breaks\n" + output(
        result
    )
    assert "src/demo.ts(" in result.stdout and "error TS" in result.stdout, output(result)
    assert expected in result.stdout, output(result)


def test_openapi_typescript_warns_about_nothing(node: str, tmp_path: Path) -> None:
    """Run as README shows, from the repository's root: no warning (it once warned that the
    probes have no 4XX response; redocly.yaml says why they have none)."""
    result = run([BIN / "openapi-typescript", ROOT / "openapi.yaml", *GENERATE_FLAGS,
                  "-o", tmp_path / "api.d.ts"])
    assert result.returncode == 0, output(result)
    assert "⚠" not in result.stdout + result.stderr, output(result)
