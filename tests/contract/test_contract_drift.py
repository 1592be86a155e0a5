"""The contract (openapi.yaml) and the routes the app really serves must not drift apart.

Every operation of the contract is compared with the generated APIRoute that serves it: method,
path, operationId, documented status codes, parameters (location, name, required), request body,
response models, tags and security. Then the app built by create_app must actually route every
generated operation, and scripts/regen.sh --check must agree that generated/ is up to date.
"""

from __future__ import annotations

import compileall
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastapi.routing
import httpx
import pytest
import yaml
from fastapi import FastAPI
from fastapi.routing import APIRoute

import impl.http.auth
from generated.routes import router
from impl.app import create_app
from tests.support.servers import settings

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "openapi.yaml"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

Param = tuple[str, str, bool]  # (location, name, required)


def load_contract() -> dict[str, Any]:
    return yaml.safe_load(CONTRACT.read_text(encoding="utf-8"))


def resolve(doc: dict[str, Any], node: Any) -> Any:
    """Follows local `$ref`s (`#/...`, JSON-pointer escaped) until a non-reference node."""
    seen: set[str] = set()
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert isinstance(ref, str) and ref.startswith("#/"), f"non-local $ref {ref!r}"
        assert ref not in seen, f"$ref cycle through {ref}"
        seen.add(ref)
        target: Any = doc
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def schema_name(ref_holder: dict[str, Any] | None) -> str | None:
    """`TaskWrite` for `{"$ref": "#/components/schemas/TaskWrite"}`."""
    if not ref_holder or "$ref" not in ref_holder:
        return None
    ref = ref_holder["$ref"]
    assert ref.startswith("#/components/schemas/"), ref
    return str(ref.rsplit("/", 1)[1])


@dataclass(frozen=True)
class Operation:
    operation_id: str
    statuses: frozenset[str]
    params: frozenset[Param]


def contract_operations(doc: dict[str, Any]) -> dict[tuple[str, str], Operation]:
    operations = {}
    for path, item in doc["paths"].items():
        item = resolve(doc, item)
        path_level = [resolve(doc, p) for p in item.get("parameters", [])]
        for method in HTTP_METHODS:
            if method not in item:
                continue
            op = item[method]
            # Operation-level parameters override path-level ones with the same (in, name).
            merged: dict[tuple[str, str], dict[str, Any]] = {}
            for param in [*path_level, *(resolve(doc, p) for p in op.get("parameters", []))]:
                merged[(param["in"], param["name"])] = param
            params = frozenset(
                (location, name, bool(p.get("required", False)))
                for (location, name), p in merged.items()
            )
            operations[(method.upper(), path)] = Operation(
                operation_id=op.get("operationId"),
                statuses=frozenset(str(code) for code in op["responses"]),
                params=params,
            )
    return operations


def _required(field: Any) -> bool:
    required = getattr(field, "required", None)
    if isinstance(required, bool):
        return required
    return bool(field.field_info.is_required())


def _own_params(route: APIRoute) -> frozenset[Param]:
    dependant = route.dependant
    return frozenset(
        (location, field.alias, _required(field))
        for location, fields in (
            ("path", dependant.path_params),
            ("query", dependant.query_params),
            ("header", dependant.header_params),
            ("cookie", dependant.cookie_params),
        )
        for field in fields
    )


def _sub_dependency_params(route: APIRoute) -> set[tuple[str, str]]:
    """Parameters that sub-dependencies (the security dependency) would read by themselves."""
    found: set[tuple[str, str]] = set()
    stack = list(route.dependant.dependencies)
    while stack:
        sub = stack.pop()
        for location, fields in (
            ("path", sub.path_params),
            ("query", sub.query_params),
            ("header", sub.header_params),
            ("cookie", sub.cookie_params),
            ("body", sub.body_params),
        ):
            found.update((location, f.alias) for f in fields)
        stack.extend(sub.dependencies)
    return found


def generated_routes() -> list[APIRoute]:
    routes = [r for r in router.routes if isinstance(r, APIRoute)]
    assert len(routes) == len(router.routes), "generated router holds a non-APIRoute route"
    return routes


def routed_operations() -> dict[tuple[str, str], Operation]:
    operations = {}
    for route in generated_routes():
        assert len(route.methods) == 1, (
            f"{route.path}: one operation per route, got {route.methods}"
        )
        (method,) = route.methods
        key = (method, route.path)
        assert key not in operations, f"{key} is routed twice"
        operations[key] = Operation(
            operation_id=route.operation_id,  # type: ignore[arg-type]
            statuses=frozenset({str(route.status_code), *map(str, route.responses)}),
            params=_own_params(route),
        )
    return operations


def _route_for(method: str, path: str) -> APIRoute:
    for route in generated_routes():
        if route.path == path and method in route.methods:
            return route
    raise AssertionError(f"no generated route for {method} {path}")


CONTRACT_DOC = load_contract()
CONTRACT_OPS = contract_operations(CONTRACT_DOC)
OP_IDS = [f"{method} {path}" for method, path in CONTRACT_OPS]


# ---------------------------------------------------------------------------------------------
# Contract <-> generated routes


def test_contract_has_the_expected_operations() -> None:
    # A guard against the helpers silently reading nothing: the contract has nineteen operations.
    assert set(CONTRACT_OPS) == {
        ("GET", "/api/health"),
        ("GET", "/api/ready"),
        ("GET", "/api/tasks"),
        ("POST", "/api/tasks"),
        ("GET", "/api/tasks/stats"),
        ("GET", "/api/tasks/changes"),
        ("GET", "/api/tasks/events"),
        ("GET", "/api/tasks/{task_id}"),
        ("PUT", "/api/tasks/{task_id}"),
        ("PATCH", "/api/tasks/{task_id}"),
        ("DELETE", "/api/tasks/{task_id}"),
        ("GET", "/api/webhooks"),
        ("POST", "/api/webhooks"),
        ("GET", "/api/webhooks/{webhook_id}"),
        ("PATCH", "/api/webhooks/{webhook_id}"),
        ("DELETE", "/api/webhooks/{webhook_id}"),
        ("POST", "/api/webhooks/{webhook_id}/rotate-secret"),
        ("GET", "/api/webhooks/{webhook_id}/deliveries"),
        ("POST", "/api/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"),
    }
    # Path-level parameters were applied to every operation of the path.
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        assert ("path", "task_id", True) in CONTRACT_OPS[(method, "/api/tasks/{task_id}")].params
    # $ref'd parameters and responses were resolved.
    assert ("query", "limit", False) in CONTRACT_OPS[("GET", "/api/tasks")].params
    assert {"400", "413", "415", "422"} <= CONTRACT_OPS[("POST", "/api/tasks")].statuses


def test_every_contract_operation_is_routed_exactly_as_documented() -> None:
    routed = routed_operations()
    assert set(routed) == set(CONTRACT_OPS), "routed (method, path) pairs differ from the contract"
    for key, documented in CONTRACT_OPS.items():
        assert routed[key] == documented, f"{key[0]} {key[1]} drifted from the contract"


@pytest.mark.parametrize(("method", "path"), list(CONTRACT_OPS), ids=OP_IDS)
def test_success_status_is_the_documented_2xx(method: str, path: str) -> None:
    route = _route_for(method, path)
    documented_2xx = {c for c in CONTRACT_OPS[(method, path)].statuses if c.startswith("2")}
    assert documented_2xx == {str(route.status_code)}


@pytest.mark.parametrize(("method", "path"), list(CONTRACT_OPS), ids=OP_IDS)
def test_request_body_matches_the_contract(method: str, path: str) -> None:
    """Bodies are read by impl.http.body (strict JSON-mode validation), a sub-dependency named
    parse_<Model>, never by FastAPI's own body parameters."""
    op = CONTRACT_DOC["paths"][path][method.lower()]
    route = _route_for(method, path)
    assert route.dependant.body_params == []
    parsers = [
        sub.call.__name__
        for sub in route.dependant.dependencies
        if sub.call is not None and sub.call.__name__.startswith("parse_")
    ]
    request_body = resolve(CONTRACT_DOC, op.get("requestBody"))
    if request_body is None:
        assert parsers == [], f"{method} {path} reads an undocumented body"
        return
    assert list(request_body["content"]) == ["application/json"]
    assert request_body.get("required", False), "optional bodies are refused by regen"
    expected = schema_name(request_body["content"]["application/json"]["schema"])
    assert parsers == [f"parse_{expected}"]


@pytest.mark.parametrize(("method", "path"), list(CONTRACT_OPS), ids=OP_IDS)
def test_response_models_and_tags_match_the_contract(method: str, path: str) -> None:
    op = CONTRACT_DOC["paths"][path][method.lower()]
    route = _route_for(method, path)
    assert route.tags == op["tags"]
    for code, response in op["responses"].items():
        response = resolve(CONTRACT_DOC, response)
        content = response.get("content")
        assert str(code) in route.responses, f"documented response {code} is not routed"
        routed = route.responses[str(code)]
        if not content:
            assert "model" not in routed, f"{code} has no body in the contract"
            continue
        if set(content) == {"text/event-stream"}:  # a stream: the handler writes events
            assert "model" not in routed, f"{code} is a stream, not a model"
            continue
        expected = schema_name(content["application/json"]["schema"])
        assert routed["model"].__name__ == expected, f"response {code}"


@pytest.mark.parametrize(("method", "path"), list(CONTRACT_OPS), ids=OP_IDS)
def test_security_matches_the_contract(method: str, path: str) -> None:
    op = CONTRACT_DOC["paths"][path][method.lower()]
    requirements = op.get("security", CONTRACT_DOC.get("security", []))
    secured = any(requirement for requirement in requirements)
    route = _route_for(method, path)
    calls = [sub.call for sub in route.dependant.dependencies]
    assert (impl.http.auth.authenticate in calls) == secured
    # The security dependency reads the Authorization header itself: it declares no parameter
    # that would be missing from the contract.
    assert _sub_dependency_params(route) == set()


# ---------------------------------------------------------------------------------------------
# Generated routes <-> the app


@pytest.fixture(scope="module")
def app(database_url: str) -> FastAPI:
    return create_app(settings(database_url))


def _app_routes(app: FastAPI) -> list[Any]:
    """The app's routes with included routers flattened (FastAPI may keep them as one entry)."""
    iter_route_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if iter_route_contexts is None:
        return list(app.routes)
    return [context.original_route for context in iter_route_contexts(app.routes)]


def _sample_path(path: str) -> str:
    return re.sub(r"\{[^/}]+\}", str(uuid.uuid4()), path)


@pytest.mark.parametrize("route", generated_routes(), ids=lambda r: r.name)
def test_app_can_build_a_url_for_every_generated_route(app: FastAPI, route: APIRoute) -> None:
    sample = "6f1c2a3e-8a53-4c8e-9d2f-1f6a9f5b7c01"
    names = re.findall(r"\{([^/}]+)\}", route.path)
    url = app.url_path_for(route.name, **{name: sample for name in names})
    assert url == route.path.format(**{name: sample for name in names})


def test_app_serves_the_generated_routes_and_no_other_api_route(app: FastAPI) -> None:
    routes = _app_routes(app)
    served = [r for r in routes if isinstance(r, APIRoute)]
    for route in generated_routes():
        assert any(r is route for r in served), f"{route.name} is not mounted in the app"
    documented = [r for r in served if r.include_in_schema]
    assert {(m, r.path) for r in documented for m in r.methods} == set(CONTRACT_OPS)
    # Anything the app serves under /api/ is in the contract.
    api_paths = {
        getattr(r, "path", "") for r in routes if getattr(r, "path", "").startswith("/api")
    }
    assert api_paths == {path for _, path in CONTRACT_OPS}


@pytest.mark.parametrize(("method", "path"), list(CONTRACT_OPS), ids=OP_IDS)
async def test_every_operation_is_reachable_over_http(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    """No credentials: a secured operation answers 401 (so it was routed, and auth runs), an
    open one answers 200. Never the router's 404 or 405."""
    op = CONTRACT_DOC["paths"][path][method.lower()]
    secured = any(req for req in op.get("security", CONTRACT_DOC["security"]))
    kwargs: dict[str, Any] = {}
    if "requestBody" in op:
        kwargs["json"] = {"title": "reachability probe"}
    response = await client.request(method, _sample_path(path), **kwargs)
    assert response.status_code not in (404, 405), response.text
    if secured:
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "UNAUTHORIZED"
        assert response.headers["www-authenticate"].startswith("Bearer")
    else:
        assert response.status_code == 200, response.text
        assert response.json()["data"]["status"] == "ok"


# ---------------------------------------------------------------------------------------------
# Contract hygiene


def _examples(doc: dict[str, Any], content: dict[str, Any] | None) -> list[Any]:
    found = []
    for media in (content or {}).values():
        if "example" in media:
            found.append(media["example"])
        for example in (media.get("examples") or {}).values():
            example = resolve(doc, example)
            assert "value" in example or "externalValue" in example, example
            found.append(example.get("value"))
    return found


@pytest.mark.parametrize(("method", "path"), list(CONTRACT_OPS), ids=OP_IDS)
def test_operation_has_id_one_tag_and_an_example(method: str, path: str) -> None:
    op = CONTRACT_DOC["paths"][path][method.lower()]
    assert isinstance(op.get("operationId"), str) and op["operationId"]
    tags = op.get("tags")
    assert isinstance(tags, list) and len(tags) == 1, f"tags: {tags!r}"
    assert tags[0] in {tag["name"] for tag in CONTRACT_DOC["tags"]}, "tag not declared"
    examples = _examples(
        CONTRACT_DOC, resolve(CONTRACT_DOC, op.get("requestBody") or {}).get("content")
    )
    for response in op["responses"].values():
        examples += _examples(CONTRACT_DOC, resolve(CONTRACT_DOC, response).get("content"))
    assert examples, f"{method} {path} has no request or response example"


def test_operation_ids_are_unique() -> None:
    ids = [op.operation_id for op in CONTRACT_OPS.values()]
    assert len(ids) == len(set(ids))


def _example_cases() -> list[Any]:
    """(where, schema, example value) for every example of a body, response or parameter."""
    cases = []
    for path, item in CONTRACT_DOC["paths"].items():
        for param in item.get("parameters", []):
            param = resolve(CONTRACT_DOC, param)
            if "example" in param:
                cases.append((f"{path} {param['name']}", param["schema"], param["example"]))
        for method in HTTP_METHODS:
            op = item.get(method)
            if op is None:
                continue
            where = f"{method.upper()} {path}"
            for param in op.get("parameters", []):
                param = resolve(CONTRACT_DOC, param)
                if "example" in param:
                    cases.append((f"{where} {param['name']}", param["schema"], param["example"]))
            bodies = [("request", resolve(CONTRACT_DOC, op.get("requestBody") or {}))]
            bodies += [(code, resolve(CONTRACT_DOC, r)) for code, r in op["responses"].items()]
            for label, body in bodies:
                for media in (body.get("content") or {}).values():
                    for value in _examples(CONTRACT_DOC, {"m": media}):
                        cases.append((f"{where} {label}", media["schema"], value))
    return cases


def test_every_example_validates_against_its_schema() -> None:
    from jsonschema import Draft202012Validator

    cases = _example_cases()
    assert len(cases) >= 20, "expected examples on bodies, responses and parameters"
    for where, schema, value in cases:
        # Local `#/components/...` refs resolve against this root, as they do in the contract.
        root = {"components": CONTRACT_DOC["components"], **schema}
        validator = Draft202012Validator(root, format_checker=Draft202012Validator.FORMAT_CHECKER)
        errors = [e.message for e in validator.iter_errors(value)]
        assert not errors, f"example of {where} does not match its schema: {errors}"


def test_contract_is_a_valid_openapi_document() -> None:
    from openapi_spec_validator import validate

    validate(CONTRACT_DOC)


# ---------------------------------------------------------------------------------------------
# Generated code is up to date


def _regen_sandbox(tmp_path: Path) -> Path:
    """A scratch copy of what regen.sh reads and compares (the contract, the generator's settings
    and templates, generated/, and impl/ for import sorting), without caches, to try the check
    on states of generated/ that the working tree must not be put in. The pinned generator
    environment is shared, not rebuilt."""
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("openapi.yaml", "pyproject.toml"):
        shutil.copy2(ROOT / name, root / name)
    no_caches = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "scripts", root / "scripts", ignore=no_caches)
    shutil.copytree(ROOT / "generated", root / "generated", ignore=no_caches)
    # isort tells first-party imports (impl.*) from third-party ones by what the root holds.
    shutil.copytree(ROOT / "impl", root / "impl", ignore=no_caches)
    if (ROOT / ".venv-codegen").is_dir():
        (root / ".venv-codegen").symlink_to(ROOT / ".venv-codegen")
    return root


def _regen_check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "scripts/regen.sh", "--check"],
        cwd=root,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_regen_check_reports_generated_code_up_to_date() -> None:
    result = _regen_check(ROOT)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "generated/ matches openapi.yaml" in result.stdout


def test_regen_check_notices_a_stale_generated_file(tmp_path: Path) -> None:
    """The check really compares: a hand edit under generated/ makes it fail."""
    root = _regen_sandbox(tmp_path)
    routes = root / "generated" / "routes.py"
    routes.write_text(routes.read_text() + "\n# hand edit\n")
    result = _regen_check(root)
    assert result.returncode == 1, result.stdout
    assert "stale" in result.stderr


def test_regen_check_ignores_bytecode_caches(tmp_path: Path) -> None:
    """Importing generated/ with bytecode on (Python's default, e.g. a plain pytest run) leaves
    generated/__pycache__; that is not staleness, so the check must still pass."""
    root = _regen_sandbox(tmp_path)
    assert compileall.compile_dir(root / "generated", quiet=1)  # what `import generated` leaves
    assert (root / "generated" / "__pycache__").is_dir()
    result = _regen_check(root)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            # A cookie parameter: the stubs only take path, query and header parameters.
            lambda doc: doc["paths"]["/api/tasks"]["get"]["parameters"].append(
                {"name": "session", "in": "cookie", "schema": {"type": "string"}}
            ),
            "parameters in 'cookie' are not supported",
        ),
        (
            # uniqueItems: the model generator drops it for Pydantic v2.
            lambda doc: doc["components"]["schemas"]["TaskPatch"]["properties"].update(
                {"labels": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}}
            ),
            "['uniqueItems'] would be dropped by the model generator",
        ),
        (
            lambda doc: doc["paths"]["/api/tasks"]["post"]["requestBody"]["content"].update(
                {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}}
            ),
            "request bodies must be application/json only",
        ),
        (
            lambda doc: doc["paths"]["/api/tasks"]["get"].pop("operationId"),
            "needs an operationId and exactly one tag",
        ),
    ],
)
def test_regen_refuses_what_the_stubs_cannot_express(
    tmp_path: Path, edit: Any, message: str
) -> None:
    """A contract feature the templates cannot express stops regen with a clear message,
    instead of being silently dropped, and leaves generated/ untouched."""
    root = _regen_sandbox(tmp_path)
    doc = yaml.safe_load((root / "openapi.yaml").read_text())
    edit(doc)
    (root / "openapi.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    before = (root / "generated" / "routes.py").read_text()
    result = subprocess.run(
        ["bash", "scripts/regen.sh"], cwd=root, check=False, capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert (root / "generated" / "routes.py").read_text() == before


def test_regen_is_deterministic(tmp_path: Path) -> None:
    """Two runs give identical bytes."""
    root = _regen_sandbox(tmp_path)
    outputs = []
    for _ in range(2):
        result = subprocess.run(
            ["bash", "scripts/regen.sh"], cwd=root, check=False, capture_output=True, text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        outputs.append({p.name: p.read_bytes() for p in sorted((root / "generated").glob("*.py"))})
    assert outputs[0] == outputs[1]
    assert outputs[0] == {
        p.name: p.read_bytes() for p in sorted((ROOT / "generated").glob("*.py"))
    }
