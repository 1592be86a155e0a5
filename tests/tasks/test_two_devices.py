"""Two devices of one user, in step through the change feed whatever happens between their syncs.

A seeded random walk of steps, each one of: a create (sometimes with an Idempotency-Key, and
sometimes replayed), an edit (PATCH or PUT, sometimes with a stale If-Match that must be a 412),
a completion or a reopening, a delete (sometimes of a task the other device deletes at the same
moment), two devices editing one task at once, or a device syncing, sometimes while writes are
in flight. Writes come from either device, through the API. After the walk both devices sync
once more and each copy must equal, field by field, what PostgreSQL holds. The seed is in the
test's id: a failure replays exactly.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support.devices import Device, database_copy, stored
from tests.support.factories import new_user

STEPS = 80


class Walk:
    def __init__(self, client: httpx.AsyncClient, seed: int) -> None:
        self.client = client
        self.rng = random.Random(seed)
        self.user = new_user()
        self.devices = [Device(self.user, limit=self.rng.choice([1, 3, 200]))
                        for _ in range(2)]
        self.known: dict[str, int] = {}  # task id -> version last seen by a writer
        self.keys: list[tuple[str, dict[str, Any]]] = []  # Idempotency-Keys used, with bodies

    def _body(self) -> dict[str, Any]:
        rng = self.rng
        body: dict[str, Any] = {"title": f"task {rng.randrange(10_000)}"}
        if rng.random() < 0.5:
            body["priority"] = rng.choice(["low", "medium", "high"])
        if rng.random() < 0.3:
            body["tags"] = rng.sample(["home", "work", "errands", "later"], rng.randint(1, 3))
        if rng.random() < 0.3:
            body["due_date"] = f"2027-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T09:00:00+01:00"
        return body

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.user.headers, **kwargs.pop("headers", {})}
        return await self.client.request(method, path, headers=headers, **kwargs)

    async def create(self) -> None:
        body = self._body()
        headers = {}
        if self.keys and self.rng.random() < 0.3:  # a replay: the same task comes back
            key, body = self.rng.choice(self.keys)
            headers["Idempotency-Key"] = key
        elif self.rng.random() < 0.4:
            key = uuid.uuid4().hex
            self.keys.append((key, body))
            headers["Idempotency-Key"] = key
        response = await self._request("POST", "/api/tasks", json=body, headers=headers)
        if response.status_code == 409:  # the key's task was deleted since: a clear refusal
            assert "deleted" in response.json()["error"]["message"]
            return
        assert response.status_code == 201, response.text
        task = response.json()["data"]
        self.known.setdefault(task["id"], task["version"])

    def _pick(self) -> str | None:
        return self.rng.choice(sorted(self.known)) if self.known else None

    async def edit(self, task_id: str | None = None) -> None:
        task_id = task_id or self._pick()
        if task_id is None:
            return await self.create()
        rng = self.rng
        headers = {}
        stale = rng.random() < 0.2
        if stale or rng.random() < 0.3:
            version = self.known[task_id] - 1 if stale else self.known[task_id]
            headers["If-Match"] = f'"{max(version, 0)}"'
        if rng.random() < 0.5:
            change = rng.choice([{"completed": True}, {"completed": False}, {"title": "edited"},
                                 {"description": None}, {"description": "notes"},
                                 {"due_date": None}, {"tags": []}])
            response = await self._request("PATCH", f"/api/tasks/{task_id}", json=change,
                                           headers=headers)
        else:
            response = await self._request("PUT", f"/api/tasks/{task_id}", json=self._body(),
                                           headers=headers)
        assert response.status_code in (200, 404, 412), response.text
        if response.status_code == 200:
            self.known[task_id] = response.json()["data"]["version"]
        elif response.status_code == 404:  # deleted by the other device meanwhile
            self.known.pop(task_id, None)
        else:  # 412: a stale If-Match never writes; learn the current version
            current = await self._request("GET", f"/api/tasks/{task_id}")
            if current.status_code == 200:
                self.known[task_id] = current.json()["data"]["version"]

    async def delete(self, task_id: str | None = None) -> None:
        task_id = task_id or self._pick()
        if task_id is None:
            return
        response = await self._request("DELETE", f"/api/tasks/{task_id}")
        assert response.status_code in (204, 404), response.text
        self.known.pop(task_id, None)

    async def race(self) -> None:
        """Both devices act on one task at the same moment: two edits, or an edit and a delete,
        or two deletes."""
        task_id = self._pick()
        if task_id is None:
            return await self.create()
        one, other = self.rng.choice([(self.edit, self.edit), (self.edit, self.delete),
                                      (self.delete, self.delete)])
        await asyncio.gather(one(task_id), other(task_id))

    async def sync(self) -> None:
        device = self.rng.choice(self.devices)
        if self.rng.random() < 0.5:  # while writes are in flight
            await asyncio.gather(device.sync(self.client), self.create(), self.edit())
        else:
            await device.sync(self.client)

    async def step(self) -> None:
        action = self.rng.choices(
            [self.create, self.edit, self.delete, self.race, self.sync],
            weights=[4, 4, 2, 1, 3],
        )[0]
        await action()


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_two_devices_end_equal_to_the_database(
    client: httpx.AsyncClient, db: asyncpg.Connection, seed: int
) -> None:
    walk = Walk(client, seed)
    for _ in range(STEPS):
        await walk.step()
    truth = await database_copy(db, walk.user)
    for device in walk.devices:
        await device.sync(client)
        assert stored(device) == truth
    assert truth, "the walk left no task: it checked little"
    assert all(device.pages > 1 for device in walk.devices)
