"""Serves the hand-written contract verbatim (not FastAPI's derived schema) and the docs page,
with Swagger UI's assets from a pinned package so /docs works with no internet."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import fastapi_offline
import yaml
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

CONTRACT_PATH = Path(__file__).resolve().parent.parent / "openapi.yaml"
ASSETS_PATH = Path(fastapi_offline.__file__).parent / "static"
ASSETS_URL = "/docs-assets"


@cache
def contract_yaml() -> bytes:
    return CONTRACT_PATH.read_bytes()


@cache
def contract_json() -> bytes:
    return json.dumps(yaml.safe_load(contract_yaml()), ensure_ascii=False).encode()


@cache
def _path_methods() -> list[tuple[re.Pattern[str], frozenset[str]]]:
    paths = yaml.safe_load(contract_yaml())["paths"]
    table = []
    for template, item in paths.items():
        pattern = re.sub(r"\\{[^/]+\\}", "[^/]+", re.escape(template))
        methods = {m.upper() for m in item if m in ("get", "put", "post", "delete", "patch")}
        table.append((re.compile(f"^{pattern}$"), template.count("{"), frozenset(methods)))
    # Literal paths before templated ones: /api/tasks/stats is not /api/tasks/{task_id}.
    table.sort(key=lambda row: row[1])
    return [(pattern, methods) for pattern, _, methods in table]


def documented_methods(path: str) -> frozenset[str] | None:
    """The methods the contract documents for a path, or None when the path is not in it."""
    for pattern, methods in _path_methods():
        if pattern.match(path):
            return methods
    return None


def check_documented_method(method: str, path: str) -> None:
    """A method the contract does not document for a path is a 405, even when a templated
    route would take it (DELETE /api/tasks/stats is not a task id)."""
    methods = documented_methods(path)
    if methods is None or method in methods or (method == "HEAD" and "GET" in methods):
        return
    raise HTTPException(405, headers={"Allow": ", ".join(sorted(methods))})


async def require_documented_method(request: Request) -> None:
    """App-wide dependency for requests without a body; the body guard checks the others
    before their body is read, so that a 405 is not hidden behind a 415 or 413."""
    check_documented_method(request.method, request.url.path)


def install_contract_routes(app: FastAPI) -> None:
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_PATH), name="docs-assets")

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_json() -> Response:
        return Response(contract_json(), media_type="application/json")

    @app.get("/openapi.yaml", include_in_schema=False)
    async def openapi_yaml() -> Response:
        return Response(contract_yaml(), media_type="application/yaml")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Task API",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
            swagger_ui_parameters={"persistAuthorization": True},
        )
