"""meta.total and the dashboard read per-user counters kept by a trigger: they must always equal
a recount of the rows, whatever mix of writes happened."""

from __future__ import annotations

import random

import asyncpg
import httpx

from tests.support.factories import RECOUNT, RECOUNT_TAGS, RELIST_TAGS, RELIST_WORDS, User


async def test_counters_follow_every_kind_of_write(
    client: httpx.AsyncClient, alice: User, db: asyncpg.Connection
) -> None:
    rng = random.Random(7)
    priorities = ["low", "medium", "high"]
    tags = ["home", "work", "urgent", "it's", "back\\slash"]
    ids: list[str] = []
    for step in range(60):
        action = rng.choice(["create", "create", "patch", "put", "delete"]) if ids else "create"
        if action == "create":
            response = await client.post(
                "/api/tasks",
                json={"title": f"t{step}", "priority": rng.choice(priorities),
                      "completed": rng.random() < 0.3, "tags": rng.sample(tags, rng.randrange(3))},
                headers=alice.headers,
            )
            ids.append(response.json()["data"]["id"])
        elif action == "patch":
            change: dict = {"completed": rng.random() < 0.5, "priority": rng.choice(priorities)}
            if rng.random() < 0.5:
                change["tags"] = rng.sample(tags, rng.randrange(4))
            await client.patch(f"/api/tasks/{rng.choice(ids)}", json=change, headers=alice.headers)
        elif action == "put":
            await client.put(f"/api/tasks/{rng.choice(ids)}", json={"title": "r"}, headers=alice.headers)
        else:
            victim = ids.pop(rng.randrange(len(ids)))
            await client.delete(f"/api/tasks/{victim}", headers=alice.headers)
    stats = (await client.get("/api/tasks/stats", headers=alice.headers)).json()["data"]
    real = await db.fetchrow(
        "SELECT count(*) AS total, count(*) FILTER (WHERE completed) AS completed "
        "FROM tasks WHERE user_id = $1",
        alice.id,
    )
    assert stats["total"] == real["total"] == len(ids)
    assert stats["completed"] == real["completed"]
    assert stats["pending"] == real["total"] - real["completed"]
    assert sum(stats["by_priority"].values()) == real["total"]
    for status, expected in (
        ("all", real["total"]),
        ("pending", real["total"] - real["completed"]),
        ("completed", real["completed"]),
    ):
        listed = await client.get("/api/tasks", params={"status": status}, headers=alice.headers)
        assert listed.json()["meta"]["total"] == expected, status
    for tag in tags:
        for priority in priorities:
            real_count = await db.fetchval(
                "SELECT count(*) FROM tasks WHERE user_id = $1 AND $2 = ANY(tags) "
                "AND priority = $3::task_priority AND NOT completed",
                alice.id, tag, priority,
            )
            listed = await client.get(
                "/api/tasks", params={"tag": tag, "priority": priority, "status": "pending"},
                headers=alice.headers,
            )
            meta = listed.json()["meta"]
            assert (meta["total"], meta["total_exact"]) == (real_count, True), (tag, priority)
    # And for every user the session has written so far.
    assert await db.fetch(RECOUNT) == []
    assert await db.fetch(RECOUNT_TAGS) == []
    assert await db.fetch(RELIST_TAGS) == []
    assert await db.fetch(RELIST_WORDS) == []
