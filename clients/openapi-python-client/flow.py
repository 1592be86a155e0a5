"""Client proof for openapi-python-client: every call below goes through the package it generates
from ../../openapi.yaml into task_api_client/ (at test time, never committed), so a contract
change that breaks its users breaks `mypy --strict` here; the run then checks the live server.

    API_URL=http://127.0.0.1:8000 API_TOKEN=... API_USER_ID=<its sub> API_OTHER_TOKEN=... python flow.py

The same flow as every client proof (clients/README.md). Exits 0 when every check passes.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import TypeVar

from task_api_client import AuthenticatedClient
from task_api_client.api.tasks import (
    create_task,
    delete_task,
    get_task,
    get_task_stats,
    list_tasks,
    update_task,
)
from task_api_client.models import (
    ErrorCode,
    ErrorEnvelope,
    Priority,
    SortOrder,
    Task,
    TaskPatch,
    TaskWrite,
)
from task_api_client.types import UNSET, Response, Unset

T = TypeVar("T")


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"{name} is not set")
    return value


def check(condition: object, message: str) -> None:
    if not condition:
        raise AssertionError(f"check failed: {message}")


def log(message: str) -> None:
    print(f"ok   {message}", flush=True)


def ok(response: Response[ErrorEnvelope | T], status: int, what: str) -> T:
    """The typed body of a call that answered this status (the error envelope is not one)."""
    check(response.status_code == status, f"{what}: {response.status_code} {response.content!r}")
    body = response.parsed
    check(body is not None and not isinstance(body, ErrorEnvelope), f"{what}: body {body!r}")
    assert body is not None and not isinstance(body, ErrorEnvelope)
    return body


def failed(response: Response[ErrorEnvelope | T], status: int, code: ErrorCode, what: str) -> ErrorEnvelope:
    """A failed call read through the client's own type for it: the parsed ErrorEnvelope."""
    check(response.status_code == status, f"{what}: {response.status_code} {response.content!r}")
    envelope = response.parsed
    check(isinstance(envelope, ErrorEnvelope), f"{what}: ErrorEnvelope expected, got {envelope!r}")
    assert isinstance(envelope, ErrorEnvelope)
    check(envelope.error.code is code, f"{what}: code {envelope.error.code}")
    check(str(envelope.meta.request_id) == response.headers["X-Request-ID"], f"{what}: request_id")
    return envelope


def main() -> None:
    alice = AuthenticatedClient(base_url=env("API_URL"), token=env("API_TOKEN"))
    bob = AuthenticatedClient(base_url=env("API_URL"), token=env("API_OTHER_TOKEN"))

    # -- list: a new user has no task -----------------------------------------------------------
    empty = ok(list_tasks.sync_detailed(client=alice), 200, "list_tasks")
    check((empty.data, empty.meta.total, empty.meta.next_cursor) == ([], 0, None), "empty list")
    log("list_tasks -> 200, no task")

    # -- create with every field and an Idempotency-Key; the retry gives back the same task ----
    due = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    body = TaskWrite(
        title="Ship the openapi-python-client proof",
        description="Every field",
        completed=False,
        priority=Priority.HIGH,
        due_date=due,
        tags=["proof", "openapi-python-client"],
    )
    key = f"openapi-python-client-{time.time_ns()}"
    created = create_task.sync_detailed(client=alice, body=body, idempotency_key=key)
    task: Task = ok(created, 201, "create_task").data
    check(
        (task.title, task.description, task.completed, task.priority, task.due_date, task.tags)
        == (body.title, "Every field", False, Priority.HIGH, due, ["proof", "openapi-python-client"]),
        f"created fields: {task}",
    )
    check(task.version == 1 and task.completed_at is None, "version 1, not completed")
    check(task.user_id == env("API_USER_ID"), "user_id is the token's sub")
    check(created.headers["Location"] == f"/api/tasks/{task.id}", "Location")
    retry = ok(create_task.sync_detailed(client=alice, body=body, idempotency_key=key), 201, "retry")
    check(retry.data.id == task.id, "Idempotency-Key retry returns the first task")
    log(f"create_task (every field, Idempotency-Key) -> 201 {task.id}; retry -> the same task")

    # -- get, and read the ETag -----------------------------------------------------------------
    got = get_task.sync_detailed(task.id, client=alice)
    check(ok(got, 200, "get_task").data == task, "get_task returns the created task")
    etag = got.headers["ETag"]
    log(f"get_task -> 200, ETag {etag}")

    # -- PATCH with If-Match; then the old ETag is stale: 412 -----------------------------------
    patched = update_task.sync_detailed(task.id, client=alice, body=TaskPatch(completed=True), if_match=etag)
    done = ok(patched, 200, "update_task").data
    check((done.completed, done.version) == (True, task.version + 1), "completed, version")
    check(done.completed_at is not None, "completed_at set")
    new_etag = patched.headers["ETag"]
    check(new_etag != etag, f"ETag moves on: {new_etag}")
    stale = update_task.sync_detailed(task.id, client=alice, body=TaskPatch(title="Lost"), if_match=etag)
    failed(stale, 412, ErrorCode.PRECONDITION_FAILED, "PATCH with a stale If-Match")
    log(f"update_task If-Match {etag} -> 200 (ETag {new_etag}); again -> 412 PRECONDITION_FAILED")

    # -- a filter, following meta.next_cursor with limit=2 --------------------------------------
    for title in ("low one", "low two", "low three"):
        new = TaskWrite(title=title, priority=Priority.LOW, tags=["batch"])
        ok(create_task.sync_detailed(client=alice, body=new), 201, f"create {title}")
    seen: list[str] = []
    cursors: list[str] = []
    cursor: str | Unset = UNSET
    while True:
        page = ok(
            list_tasks.sync_detailed(
                client=alice, priority=Priority.LOW, tag="batch", sort=SortOrder.TITLE, limit=2,
                cursor=cursor,
            ),
            200,
            "list_tasks page",
        )
        check((page.meta.total, page.meta.limit) == (3, 2), "meta.total, meta.limit")
        seen += [t.title for t in page.data]
        if page.meta.next_cursor is None:
            break
        cursor = page.meta.next_cursor
        cursors.append(cursor)
        check(len(cursors) < 3, "pagination does not end")
    check(seen == ["low one", "low three", "low two"], f"filtered pages, sorted by title: {seen}")
    log(f"list_tasks priority=low tag=batch sort=title limit=2 -> {len(cursors) + 1} pages: {seen}")

    # -- stats ----------------------------------------------------------------------------------
    stats = ok(get_task_stats.sync_detailed(client=alice), 200, "get_task_stats").data
    counts = stats.by_priority
    check(
        (stats.total, stats.completed, stats.pending, stats.overdue) == (4, 1, 3, 0)
        and (counts.low, counts.medium, counts.high) == (3, 0, 1),
        f"stats: {stats}",
    )
    log("get_task_stats -> total 4, completed 1, pending 3, by priority low 3 / medium 0 / high 1")

    # -- delete, then a 404 and a 422 through the client's error type ---------------------------
    deleted = delete_task.sync_detailed(task.id, client=alice, if_match=new_etag)
    check(deleted.status_code == 204 and deleted.parsed is None, f"delete: {deleted.status_code}")
    log("delete_task with If-Match -> 204")

    failed(get_task.sync_detailed(task.id, client=alice), 404, ErrorCode.NOT_FOUND, "get after delete")
    log("get_task -> 404 NOT_FOUND (ErrorEnvelope)")

    foreign = list_tasks.sync_detailed(
        client=bob, priority=Priority.LOW, tag="batch", sort=SortOrder.TITLE, limit=2, cursor=cursors[0]
    )
    invalid = failed(foreign, 422, ErrorCode.VALIDATION_ERROR, "another user's cursor")
    details = invalid.error.details
    check(not isinstance(details, Unset) and [d.field for d in details] == ["query.cursor"], "details")
    log("list_tasks with another user's cursor -> 422 VALIDATION_ERROR at query.cursor (ErrorEnvelope)")

    print("client proof passed", flush=True)


if __name__ == "__main__":
    main()
