"""Serves the hand-written contract verbatim (not FastAPI's derived schema) and the docs page,
with Swagger UI's assets from a pinned package so /docs works with no internet."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import fastapi_offline
import yaml
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

CONTRACT_PATH = Path(__file__).resolve().parents[2] / "openapi.yaml"
ASSETS_PATH = Path(fastapi_offline.__file__).parent / "static"
ASSETS_URL = "/docs-assets"


@cache
def contract_yaml() -> bytes:
    return CONTRACT_PATH.read_bytes()


@cache
def contract_json() -> bytes:
    return json.dumps(yaml.safe_load(contract_yaml()), ensure_ascii=False).encode()


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
