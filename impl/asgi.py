"""The ASGI entry point uvicorn imports in every worker: `impl.asgi:create_from_env`."""

from __future__ import annotations

from fastapi import FastAPI

from impl.app import create_app
from impl.platform.settings import ConfigurationError, load_settings


def create_from_env() -> FastAPI:
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        raise SystemExit(f"task-api: {exc}") from None
    if settings.database_url is None:
        raise SystemExit("DATABASE_URL is not set: start the server with `task-api serve`")
    problem = settings.auth_problem()
    if problem:
        raise SystemExit(f"refusing to start: {problem}")
    return create_app(settings)
