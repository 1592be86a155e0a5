"""The ASGI entry point uvicorn imports in every worker: `impl.asgi:create_from_env`."""

from __future__ import annotations

from fastapi import FastAPI

from impl.app import create_app
from impl.settings import Settings


def create_from_env() -> FastAPI:
    settings = Settings()
    if settings.database_url is None:
        raise SystemExit("DATABASE_URL is not set: start the server with `task-api serve`")
    problem = settings.auth_problem()
    if problem:
        raise SystemExit(f"refusing to start: {problem}")
    return create_app(settings)
