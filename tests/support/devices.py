"""A device that keeps a copy of its user's tasks in step through the change feed (GET
/api/tasks/changes), as a frontend would, and the database's own view to compare it with
(tests/support/task_state.py; tests/support/live_client.py follows the live stream instead)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx

from tests.support.factories import User
from tests.support.task_state import as_stored, tasks_in_database


@dataclass
class Device:
    user: User
    limit: int = 200
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    token: str | None = None
    pages: int = 0

    async def sync(self, client: httpx.AsyncClient) -> list[dict[str, Any]]:
        """Pages until caught up; applies each page; returns the pages' data. Each task is at
        most once in a page (checked here, on every page of every test that syncs)."""
        seen: list[dict[str, Any]] = []
        while True:
            params: dict[str, Any] = {"limit": self.limit}
            if self.token is not None:
                params["since"] = self.token
            response = await client.get(
                "/api/tasks/changes", params=params, headers=self.user.headers
            )
            assert response.status_code == 200, response.text
            body = response.json()
            self.apply(body["data"])
            seen.append(body["data"])
            self.token = body["meta"]["sync_token"]
            self.pages += 1
            if not body["meta"]["has_more"]:
                return seen

    def apply(self, changes: dict[str, Any]) -> None:
        ids = [task["id"] for task in changes["tasks"]] + [gone["id"] for gone in changes["deleted"]]
        assert len(ids) == len(set(ids)), f"a task twice in one page: {ids}"
        for task in changes["tasks"]:
            assert task["user_id"] == self.user.id
            self.tasks[task["id"]] = task
        for gone in changes["deleted"]:
            self.tasks.pop(gone["id"], None)


async def database_copy(db: asyncpg.Connection, user: User) -> dict[str, dict[str, Any]]:
    """The user's tasks as PostgreSQL holds them, in the terms of `stored(device)`."""
    return await tasks_in_database(db, user.id)


def stored(device: Device) -> dict[str, dict[str, Any]]:
    """The device's copy in the terms of database_copy(): compared field by field."""
    return as_stored(device.tasks)
