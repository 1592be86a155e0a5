"""meta.total and the dashboard read per-user counters kept by a trigger: they must always equal
a recount of the rows, whatever mix of writes happened."""

from __future__ import annotations

import random

import asyncpg
import httpx

from tests.conftest import User

COUNTERS = ("total", "completed", "low", "medium", "high",
            "low_completed", "medium_completed", "high_completed")
_COUNTS = ", ".join([
    "count(*) AS total", "count(*) FILTER (WHERE completed) AS completed",
    *(f"count(*) FILTER (WHERE priority = '{p}') AS {p}" for p in ("low", "medium", "high")),
    *(f"count(*) FILTER (WHERE completed AND priority = '{p}') AS {p}_completed"
      for p in ("low", "medium", "high")),
])
_DIFFERS = (
    "(" + ", ".join(f"coalesce(c.{n}, 0)" for n in COUNTERS) + ") IS DISTINCT FROM ("
    + ", ".join(f"coalesce(r.{n}, 0)" for n in COUNTERS) + ")"
)
# Users (and users' tags) whose counters differ from a recount of their rows.
RECOUNT = f"""
    SELECT coalesce(c.user_id, r.user_id) AS user_id
    FROM task_counts AS c
    FULL JOIN (SELECT user_id, {_COUNTS} FROM tasks GROUP BY user_id) AS r
        ON r.user_id = c.user_id
    WHERE {_DIFFERS}
"""
RECOUNT_TAGS = f"""
    SELECT coalesce(c.user_id, r.user_id) AS user_id, coalesce(c.tag, r.tag) AS tag
    FROM task_tag_counts AS c
    FULL JOIN (
        SELECT user_id, tag, {_COUNTS}
        FROM (SELECT DISTINCT id, user_id, completed, priority, unnest(tags) AS tag FROM tasks)
            AS tagged
        GROUP BY user_id, tag
    ) AS r ON r.user_id = c.user_id AND r.tag = c.tag
    WHERE {_DIFFERS}
"""


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
