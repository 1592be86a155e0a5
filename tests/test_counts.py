"""meta.total and the dashboard read per-user counters kept by a trigger: they must always equal
a recount of the rows, whatever mix of writes happened."""

from __future__ import annotations

import random

import asyncpg
import httpx

from tests.conftest import User

RECOUNT = """
    SELECT coalesce(c.user_id, r.user_id) AS user_id
    FROM task_counts AS c
    FULL JOIN (
        SELECT user_id, count(*) AS total, count(*) FILTER (WHERE completed) AS completed,
               count(*) FILTER (WHERE priority = 'low') AS low,
               count(*) FILTER (WHERE priority = 'medium') AS medium,
               count(*) FILTER (WHERE priority = 'high') AS high
        FROM tasks GROUP BY user_id
    ) AS r ON r.user_id = c.user_id
    WHERE (coalesce(c.total, 0), coalesce(c.completed, 0), coalesce(c.low, 0),
           coalesce(c.medium, 0), coalesce(c.high, 0))
       IS DISTINCT FROM
          (coalesce(r.total, 0), coalesce(r.completed, 0), coalesce(r.low, 0),
           coalesce(r.medium, 0), coalesce(r.high, 0))
"""


async def test_counters_follow_every_kind_of_write(
    client: httpx.AsyncClient, alice: User, db: asyncpg.Connection
) -> None:
    rng = random.Random(7)
    priorities = ["low", "medium", "high"]
    ids: list[str] = []
    for step in range(60):
        action = rng.choice(["create", "create", "patch", "put", "delete"]) if ids else "create"
        if action == "create":
            response = await client.post(
                "/api/tasks",
                json={"title": f"t{step}", "priority": rng.choice(priorities),
                      "completed": rng.random() < 0.3},
                headers=alice.headers,
            )
            ids.append(response.json()["data"]["id"])
        elif action == "patch":
            await client.patch(
                f"/api/tasks/{rng.choice(ids)}",
                json={"completed": rng.random() < 0.5, "priority": rng.choice(priorities)},
                headers=alice.headers,
            )
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
    # And for every user the session has written so far.
    assert await db.fetch(RECOUNT) == []
