"""Clients from several generators, each generated from openapi.yaml at test time, strictly
type-checked together with a program that uses it, and run against the live server through the
same flow (clients/README.md): list; create with every field and an Idempotency-Key; get and read
the ETag; PATCH with If-Match, then a stale If-Match gets 412; a filter, following
`meta.next_cursor` with limit=2; stats; delete; a 404 and a 422 read through the client's own
error type. (openapi-typescript + openapi-fetch: tests/contract/test_typescript_client.py.)

Generation and type-checks are the slow part (a JVM, tsc, mypy), so they all start together in
a thread pool when the first test of this module asks for them; each test then waits for its own
generator, checks the names it gave the contract's types, and runs its program.

Tools: @hey-api/openapi-ts in clients/hey-api (own package-lock.json, TypeScript 6), TypeScript
for typescript-fetch from the root package.json, and the Python generators (openapi-python-client;
openapi-generator from its PyPI wheel, jar included, on Debian's Java) in .venv-clients from the
hash-locked clients/python/requirements.txt. Each is installed here when missing or stale.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts import node_tools
from tests.support.artifacts import artifact
from tests.support.factories import THROUGH_PGBOUNCER, User

pytestmark = pytest.mark.skipif(
    THROUGH_PGBOUNCER,
    reason="client generators test the contract from the clients' side, not pooling: run in the "
    "direct pass only",
)

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "openapi.yaml"
CLIENTS = ROOT / "clients"
VENV_BIN = ROOT / ".venv-clients" / "bin"

# What openapi-generator 7.26 says about this contract: 3.1 support is in beta, and one internal
# lookup of a schema by a null name (it appears only with both components/headers and
# components/schemas present, and names no model). Any other warning, such as a renamed model
# (`Error` -> `ModelError`), fails.
OPENAPI_GENERATOR_KNOWN_WARNINGS = (
    "OpenAPI 3.1 support is still in beta",
    "Failed to get the schema name: null",
)
# openapi-generator: no docs and no test stubs, only the client.
NO_DOCS = "apiDocs=false,modelDocs=false,apiTests=false,modelTests=false"


def run(command: list[str | Path], cwd: Path = ROOT, timeout: float = 300,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return (f"$ {' '.join(map(str, result.args))}\nexit {result.returncode}\n--- stdout\n"
            f"{result.stdout}\n--- stderr\n{result.stderr}")


class BuildFailed(Exception):
    pass


@dataclass
class Build:
    """What one generator's build did: each step's output and seconds."""

    steps: list[tuple[str, float]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def step(self, name: str, command: list[str | Path], cwd: Path = ROOT,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        start = time.monotonic()
        result = run(command, cwd=cwd, env=env)
        self.steps.append((name, round(time.monotonic() - start, 2)))
        self.log.append(output(result))
        if result.returncode != 0:
            raise BuildFailed(f"{name} failed\n" + output(result))
        return result

    @property
    def seconds(self) -> float:
        return round(sum(seconds for _, seconds in self.steps), 2)


def fresh(directory: Path) -> Path:
    """Generators never delete what they no longer generate: start from an empty folder."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


def openapi_generator_warnings(result: subprocess.CompletedProcess[str]) -> list[str]:
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if " WARN " in line
            and not any(known in line for known in OPENAPI_GENERATOR_KNOWN_WARNINGS)]


def python_env() -> dict[str, str]:
    # openapi-python-client formats its output with the ruff of its own environment.
    return {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}


# -- the four generators: generate, then type-check -----------------------------------------------


def build_hey_api() -> Build:
    folder = CLIENTS / "hey-api"
    build = Build()
    fresh(folder / "src" / "client")
    # Run in the folder: hey-api reads its tsconfig.json (NodeNext: imports end in .js).
    result = build.step("generate", [folder / "node_modules/.bin/openapi-ts", "-i", CONTRACT,
                                     "-o", "src/client"], cwd=folder)
    if re.search(r"warn|error", result.stdout + result.stderr, re.IGNORECASE):
        raise BuildFailed("hey-api warned\n" + output(result))
    build.step("tsc --strict", [folder / "node_modules/.bin/tsc", "-p", folder])
    return build


def build_typescript_fetch() -> Build:
    folder = CLIENTS / "typescript-fetch"
    build = Build()
    fresh(folder / "src" / "client")
    result = build.step("generate", [
        VENV_BIN / "openapi-generator-cli", "generate", "-i", CONTRACT, "-g", "typescript-fetch",
        "-o", folder / "src" / "client", "--global-property", NO_DOCS,
    ])
    if warnings := openapi_generator_warnings(result):
        raise BuildFailed("openapi-generator warned:\n" + "\n".join(warnings))
    build.step("tsc --strict", [ROOT / "node_modules/.bin/tsc", "-p", folder])
    return build


def build_openapi_python_client() -> Build:
    folder = CLIENTS / "openapi-python-client"
    build = Build()
    fresh(folder / "gen")
    result = build.step("generate", [
        VENV_BIN / "openapi-python-client", "generate", "--path", CONTRACT,
        "--output-path", folder / "gen" / "task_api_client", "--meta", "none",
    ], env=python_env())
    if re.search(r"warning|error", result.stdout + result.stderr, re.IGNORECASE):
        raise BuildFailed("openapi-python-client warned\n" + output(result))
    build.step("mypy --strict", [VENV_BIN / "mypy", "--strict", "flow.py"], cwd=folder,
               env={**os.environ, "MYPYPATH": str(folder / "gen")})
    return build


def build_openapi_generator_python() -> Build:
    folder = CLIENTS / "openapi-generator-python"
    build = Build()
    fresh(folder / "gen")
    result = build.step("generate", [
        VENV_BIN / "openapi-generator-cli", "generate", "-i", CONTRACT, "-g", "python",
        "-o", folder / "gen", "--package-name", "task_api_client", "--global-property", NO_DOCS,
    ])
    if warnings := openapi_generator_warnings(result):
        raise BuildFailed("openapi-generator warned:\n" + "\n".join(warnings))
    build.step("mypy --strict", [VENV_BIN / "mypy", "--strict", "flow.py"], cwd=folder,
               env={**os.environ, "MYPYPATH": str(folder / "gen")})
    return build


# -- the names each generator gave the contract's types -------------------------------------------


def names_hey_api(spec: dict[str, Any]) -> tuple[set[str], str]:
    source = (CLIENTS / "hey-api/src/client/types.gen.ts").read_text()
    names = set(re.findall(r"^export type (\w+) =", source, re.MULTILINE))
    # Besides the schemas: ClientOptions, the parameters' aliases (named after their keys) and
    # each operation's Data/Error(s)/Response(s) types, named after its operationId.
    operations = {operation["operationId"][0].upper() + operation["operationId"][1:]
                  for item in spec["paths"].values() for operation in item.values()
                  if isinstance(operation, dict) and "operationId" in operation}
    others = {"ClientOptions", *spec["components"]["parameters"]} | {
        operation + suffix for operation in operations
        for suffix in ("Data", "Error", "Errors", "Response", "Responses")}
    return names - others, source


def names_typescript_fetch(_spec: dict[str, Any]) -> tuple[set[str], str]:
    models = CLIENTS / "typescript-fetch/src/client/models"
    index = (models / "index.ts").read_text()
    return set(re.findall(r"export \* from '\./(\w+)'", index)), (models / "SortOrder.ts").read_text()


def names_openapi_python_client(_spec: dict[str, Any]) -> tuple[set[str], str]:
    models = CLIENTS / "openapi-python-client/gen/task_api_client/models"
    index = (models / "__init__.py").read_text()
    return set(re.findall(r"^from \.\w+ import (\w+)$", index, re.MULTILINE)), (
        models / "sort_order.py").read_text()


def names_openapi_generator_python(_spec: dict[str, Any]) -> tuple[set[str], str]:
    models = CLIENTS / "openapi-generator-python/gen/task_api_client/models"
    index = (models / "__init__.py").read_text()
    return set(re.findall(r"^from task_api_client\.models\.\w+ import (\w+)$", index,
                          re.MULTILINE)), (models / "sort_order.py").read_text()


@dataclass
class Generator:
    name: str
    build: Callable[[], Build]
    names: Callable[[dict[str, Any]], tuple[set[str], str]]
    run: Callable[[], tuple[list[str | Path], Path, dict[str, str]]]


def node_program(folder: str) -> tuple[list[str | Path], Path, dict[str, str]]:
    return [node_tools.node(), "build/flow.js"], CLIENTS / folder, {}


def python_program(folder: str) -> tuple[list[str | Path], Path, dict[str, str]]:
    return [VENV_BIN / "python", "flow.py"], CLIENTS / folder, {
        "PYTHONPATH": str(CLIENTS / folder / "gen")}


GENERATORS = {
    generator.name: generator
    for generator in [
        Generator("@hey-api/openapi-ts", build_hey_api, names_hey_api,
                  lambda: node_program("hey-api")),
        Generator("openapi-generator typescript-fetch", build_typescript_fetch,
                  names_typescript_fetch, lambda: node_program("typescript-fetch")),
        Generator("openapi-python-client", build_openapi_python_client,
                  names_openapi_python_client, lambda: python_program("openapi-python-client")),
        Generator("openapi-generator python", build_openapi_generator_python,
                  names_openapi_generator_python,
                  lambda: python_program("openapi-generator-python")),
    ]
}


# -- fixtures ---------------------------------------------------------------------------------------


def install_tools() -> None:
    """What the builds need, installed when missing or stale (test.sh has done it already)."""
    if shutil.which("java") is None:
        pytest.fail("java is required by openapi-generator: run scripts/ensure_java.sh")
    for command in (["bash", "scripts/ensure_npm.sh", ".", "clients/hey-api"],
                    ["bash", "scripts/ensure_clients_env.sh"]):
        result = run(list(command), timeout=900)
        assert result.returncode == 0, output(result)


@pytest.fixture(scope="module")
def builds(request: pytest.FixtureRequest) -> Iterator[dict[str, Future[Build]]]:
    """The build of every generator whose test runs (all, unless -k picks some), all started at
    once; each test waits for its own."""
    selected = {item.callspec.params["name"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")}
    install_tools()
    with ThreadPoolExecutor(max_workers=len(selected), thread_name_prefix="client-build") as pool:
        yield {name: pool.submit(GENERATORS[name].build) for name in sorted(selected)}


@pytest.fixture(scope="module")
def timings() -> Iterator[dict[str, Any]]:
    figures: dict[str, Any] = {}
    yield figures
    artifact("client-generators.json").write_text(json.dumps(figures, indent=2) + "\n")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CONTRACT.read_text())
    return loaded


def named_types(spec: dict[str, Any]) -> set[str]:
    """The contract's schemas that are types of their own in every client: objects and enums."""
    return {name for name, schema in spec["components"]["schemas"].items()
            if "enum" in schema or "properties" in schema or "allOf" in schema}


# -- the tests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(GENERATORS))
def test_generated_client_against_live_server(
    name: str, builds: dict[str, Future[Build]], timings: dict[str, Any], spec: dict[str, Any],
    base_url: str, alice: User, bob: User,
) -> None:
    generator = GENERATORS[name]
    started = time.monotonic()
    failure = builds[name].exception(timeout=900)
    if isinstance(failure, BuildFailed):
        pytest.fail(str(failure), pytrace=False)
    build = builds[name].result()
    waited = time.monotonic() - started

    # The names it gave the contract's types: exactly the schemas' names, nothing renamed or
    # invented (ModelError, TaskStatsByPriority, StatusFilter2...), and the sort order's members
    # from x-enum-varnames (not VALUE_1, field_created_at, CreatedAt2).
    types, sort_order_source = generator.names(spec)
    expected = named_types(spec)
    # Plain string schemas (UserId, SyncToken) are aliases some generators name and some inline.
    aliases = set(spec["components"]["schemas"]) - expected
    assert types - aliases == expected, (
        f"{name}: types not named after a schema: {sorted(types - expected - aliases)}; "
        f"schemas without their type: {sorted(expected - types)}"
    )
    sort_order = spec["components"]["schemas"]["SortOrder"]
    if name != "@hey-api/openapi-ts":  # hey-api: a union of the string values, no members
        for member, value in zip(sort_order["x-enum-varnames"], sort_order["enum"], strict=True):
            assert re.search(rf"\b{member}\b\s*[:=]\s*['\"]{value}['\"]", sort_order_source), (
                f"{name}: SortOrder.{member} = {value!r} not found\n{sort_order_source}")

    command, cwd, extra_env = generator.run()
    env = {**os.environ, **extra_env, "API_URL": base_url, "API_TOKEN": alice.token,
           "API_USER_ID": alice.id, "API_OTHER_TOKEN": bob.token}
    flow_start = time.monotonic()
    result = run(command, cwd=cwd, env=env, timeout=120)
    flow_seconds = round(time.monotonic() - flow_start, 2)
    print(result.stdout)
    assert result.returncode == 0, output(result)
    assert result.stdout.rstrip().endswith("client proof passed"), output(result)

    timings[name] = {"build_steps": dict(build.steps), "build_seconds": build.seconds,
                     "waited_for_build_seconds": round(waited, 2), "flow_seconds": flow_seconds}
    print(f"{name}: {timings[name]}")
