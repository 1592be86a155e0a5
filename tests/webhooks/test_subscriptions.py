"""Subscriptions through the API (the session server: https only, public addresses only):
create (the secret shown once), list, get, update, delete, rotate; isolation between users;
the per-user quota; bad input as 422 envelopes."""

from __future__ import annotations

import re
import uuid

import asyncpg
import httpx
import pytest

from tests.support.factories import User, new_user
from tests.support.servers import running_server, settings

URL = "https://hooks.example.com/tasks"
SECRET = re.compile(r"^whsec_[A-Za-z0-9+/]{32}$")


async def create(client: httpx.AsyncClient, user: User, **body: object) -> httpx.Response:
    return await client.post("/api/webhooks", headers=user.headers,
                             json={"url": URL, "event_types": ["task.created"], **body})


async def test_create_shows_the_secret_once_then_never(client: httpx.AsyncClient,
                                                      alice: User) -> None:
    created = await create(client, alice, event_types=["task.created", "task.created",
                                                       "reminder.due"], description="n")
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    assert SECRET.match(data["secret"])
    assert created.headers["location"] == f"/api/webhooks/{data['id']}"
    assert data["event_types"] == ["task.created", "reminder.due"]  # duplicates merged
    assert (data["enabled"], data["disabled_reason"], data["rotation_ends_at"]) == (True, None, None)
    got = (await client.get(created.headers["location"], headers=alice.headers)).json()["data"]
    listed = (await client.get("/api/webhooks", headers=alice.headers)).json()["data"]
    assert "secret" not in got and [w["id"] for w in listed] == [data["id"]]
    assert "secret" not in listed[0]


async def test_update_rotate_delete(client: httpx.AsyncClient, alice: User,
                                    db: asyncpg.Connection) -> None:
    data = (await create(client, alice)).json()["data"]
    path = f"/api/webhooks/{data['id']}"
    patched = await client.patch(path, headers=alice.headers,
                                 json={"enabled": False, "description": None,
                                       "event_types": ["task.deleted"]})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["data"]["enabled"], patched.json()["data"]["event_types"]) == (
        False, ["task.deleted"])
    rotated = await client.post(f"{path}/rotate-secret", headers=alice.headers)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["data"]
    assert SECRET.match(new["secret"]) and new["secret"] != data["secret"]
    assert new["rotation_ends_at"] is not None
    stored = await db.fetchrow("SELECT secret, previous_secret FROM webhook_subscriptions "
                               "WHERE id = $1", uuid.UUID(data["id"]))
    assert (stored["secret"], stored["previous_secret"]) == (new["secret"], data["secret"])
    assert (await client.delete(path, headers=alice.headers)).status_code == 204
    assert (await client.get(path, headers=alice.headers)).status_code == 404


async def test_another_user_s_subscription_is_403_and_a_missing_one_404(
    client: httpx.AsyncClient, alice: User, bob: User
) -> None:
    path = f"/api/webhooks/{(await create(client, alice)).json()['data']['id']}"
    for method, suffix in (("GET", ""), ("PATCH", ""), ("DELETE", ""),
                           ("POST", "/rotate-secret"), ("GET", "/deliveries"),
                           ("POST", f"/deliveries/{uuid.uuid4()}/redeliver")):
        body = {"enabled": False} if method == "PATCH" else None
        foreign = await client.request(method, path + suffix, headers=bob.headers, json=body)
        assert foreign.status_code == 403, (method, suffix, foreign.text)
        assert foreign.json()["error"]["code"] == "FORBIDDEN"
        missing = await client.request(method, f"/api/webhooks/{uuid.uuid4()}{suffix}",
                                       headers=alice.headers, json=body)
        assert missing.status_code == 404, (method, suffix, missing.text)
    assert (await client.get("/api/webhooks", headers=bob.headers)).json()["data"] == []
    assert (await client.get(path, headers=alice.headers)).json()["data"]["enabled"] is True


@pytest.mark.parametrize(("body", "field"), [
    ({"url": URL, "event_types": []}, "body.event_types"),
    ({"url": URL, "event_types": ["task.exploded"]}, "body.event_types.0"),
    ({"url": URL}, "body.event_types"),
    ({"event_types": ["task.created"]}, "body.url"),
    ({"url": "not a url", "event_types": ["task.created"]}, "body.url"),
    ({"url": URL, "event_types": ["task.created"], "secret": "whsec_x"}, "body.secret"),
    ({"url": URL, "event_types": ["task.created"], "description": "a\u0000b"}, "body.description"),
    # 2048 characters as sent, one more once normalised (a "/" after the bare host).
    ({"url": "https://" + "a" * 63 + ("." + "a" * 63) * 30 + "." + "a" * 56,
      "event_types": ["task.created"]}, "body.url"),
])
async def test_bad_bodies_are_422(client: httpx.AsyncClient, alice: User, body: dict[str, object],
                                  field: str) -> None:
    refused = await client.post("/api/webhooks", headers=alice.headers, json=body)
    assert refused.status_code == 422, refused.text
    assert field in [d["field"] for d in refused.json()["error"]["details"]]


async def test_patch_refuses_null_for_what_is_not_nullable(client: httpx.AsyncClient,
                                                         alice: User) -> None:
    path = f"/api/webhooks/{(await create(client, alice)).json()['data']['id']}"
    for name in ("url", "event_types", "enabled"):
        refused = await client.patch(path, headers=alice.headers, json={name: None})
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["details"][0]["field"] == f"body.{name}"


async def test_the_quota_counts_subscriptions_per_user(database_url: str) -> None:
    user, other = new_user(), new_user()
    with running_server(settings(database_url, max_webhooks_per_user=2)) as base_url:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            for _ in range(2):
                assert (await create(client, user)).status_code == 201
            over = await create(client, user)
            assert over.status_code == 409 and over.json()["error"]["code"] == "QUOTA_EXCEEDED"
            assert (await create(client, other)).status_code == 201  # per user
