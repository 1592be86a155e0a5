"""Users who follow their own live stream while they write, all through one URL (HAProxy in the
rolling restart test): each has a Follower (tests/support/live_client.py: reconnects with
Last-Event-ID, applies every event to its copy) and a writer that creates, edits, completes and
deletes the user's tasks until told to stop. When the writers have stopped, one last write per
user and the `up-to-date` after its event say that the copy is complete: it can then be
compared with PostgreSQL."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx

from tests.support.factories import User, new_user
from tests.support.live_client import Follower, arrival_of, caught_up_after

PAUSE_SECONDS = 0.05  # between one user's writes: a stream's worth of changes, not a load test
KEEP_TASKS = 3  # a writer creates until it has this many, then also edits and deletes


@dataclass
class StreamingUser:
    user: User
    follower: Follower
    writes: Counter[str] = field(default_factory=Counter)  # "patch 200", "create ReadError"
    last_write_latency: float | None = None  # its last write's response -> its event


class StreamingUsers:
    def __init__(self, base_url: str, count: int, seed: int = 27) -> None:
        self.base_url = base_url
        self.users = []
        for _ in range(count):
            user = new_user()
            self.users.append(StreamingUser(user, Follower(base_url, user.token)))
        self.rng = random.Random(seed)
        self._stop_writing = asyncio.Event()
        self._following: list[asyncio.Task[None]] = []
        self._writing: list[asyncio.Task[None]] = []

    async def start_following(self, timeout: float) -> None:
        """Every stream open and caught up (its first `up-to-date`)."""
        self._following = [asyncio.create_task(u.follower.run()) for u in self.users]
        for user in self.users:
            await user.follower.wait_for(lambda got: got, timeout)

    def start_writing(self) -> None:
        self._writing = [asyncio.create_task(self._write(u)) for u in self.users]

    async def stop_writing(self) -> None:
        self._stop_writing.set()
        await asyncio.gather(*self._writing)

    async def last_write_seen(self, timeout: float) -> None:
        """One last write per user, then until each stream has delivered it and said
        `up-to-date` after it (see caught_up_after)."""
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as http:
            for user in self.users:
                response = await http.post(
                    "/api/tasks", json={"title": "last write"},
                    headers={**user.user.headers, "Idempotency-Key": str(uuid.uuid4())})
                written_at = time.monotonic()
                assert response.status_code == 201, response.text
                task_id = response.json()["data"]["id"]
                arrived = await user.follower.wait_for(arrival_of(task_id, 1), timeout)
                user.last_write_latency = arrived - written_at
                await user.follower.wait_for(caught_up_after(task_id, 1), timeout)

    async def close(self) -> None:
        self._stop_writing.set()
        for user in self.users:
            user.follower.stop()
        tasks = [*self._following, *self._writing]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _write(self, user: StreamingUser) -> None:
        """Until stop_writing(). A failed request is counted, not retried: the copies are
        compared with PostgreSQL, not with what the writer was told."""
        rng, n = self.rng, 0
        ids: list[str] = []
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30,
                                     headers=user.user.headers) as http:
            while not self._stop_writing.is_set():
                n += 1
                op = "create" if len(ids) < KEEP_TASKS else rng.choice(
                    ("create", "edit", "complete", "delete"))
                try:
                    if op == "create":
                        response = await http.post(
                            "/api/tasks", headers={"Idempotency-Key": str(uuid.uuid4())},
                            json={"title": f"t{n}", "priority": rng.choice(("low", "high"))})
                        if response.status_code == 201:
                            ids.append(response.json()["data"]["id"])
                    elif op == "delete":
                        response = await http.delete(f"/api/tasks/{ids.pop()}")
                    else:
                        body = ({"completed": rng.random() < 0.7} if op == "complete" else
                                {"title": f"t{n} edited", "tags": [f"n{n % 5}"],
                                 "description": None if rng.random() < 0.3 else f"d{n}"})
                        response = await http.patch(f"/api/tasks/{rng.choice(ids)}", json=body)
                    user.writes[f"{op} {response.status_code}"] += 1
                except httpx.TransportError as exc:
                    user.writes[f"{op} {type(exc).__name__}"] += 1
                await asyncio.sleep(PAUSE_SECONDS)
