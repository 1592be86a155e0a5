"""Client proof for openapi-generator's `python` generator: every call below goes through the
package it generates from ../../openapi.yaml into task_api_client/ (at test time, never
committed), so a contract change that breaks its users breaks `mypy --strict` here; the run then
checks the live server.

    API_URL=http://127.0.0.1:8000 API_TOKEN=... API_USER_ID=<its sub> API_OTHER_TOKEN=... python flow.py

The same flow as every client proof (clients/README.md). Exits 0 when every check passes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from task_api_client import (
    ApiClient,
    ApiException,
    Configuration,
    ErrorCode,
    ErrorEnvelope,
    Priority,
    SortOrder,
    Task,
    TaskPatch,
    TasksApi,
    TaskWrite,
)


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


def header(headers: Mapping[str, str] | None, name: str) -> str:
    """A response header by any case: this client hands headers over as a plain dict, keyed by
    the names as sent (lower case from this server)."""
    found = [value for key, value in (headers or {}).items() if key.lower() == name.lower()]
    check(len(found) == 1, f"one {name} header expected in {headers}")
    return found[0]


def failed(call: Callable[[], Any], status: int, code: ErrorCode, what: str) -> ErrorEnvelope:
    """A failed call read through the client's own error type: it raises ApiException (a subclass
    per status: NotFoundException, UnprocessableEntityException...) with the parsed body in .data."""
    try:
        call()
    except ApiException as error:
        check(error.status == status, f"{what}: status {error.status}")
        envelope = error.data
        check(isinstance(envelope, ErrorEnvelope), f"{what}: ErrorEnvelope expected, got {envelope!r}")
        assert isinstance(envelope, ErrorEnvelope)
        check(envelope.error.code is code, f"{what}: code {envelope.error.code}")
        check(str(envelope.meta.request_id) == header(error.headers, "X-Request-ID"), "request_id")
        return envelope
    raise AssertionError(f"{what}: the call succeeded, {status} expected")


def client(token: str) -> TasksApi:
    return TasksApi(ApiClient(Configuration(host=env("API_URL"), access_token=token)))


def main() -> None:
    alice, bob = client(env("API_TOKEN")), client(env("API_OTHER_TOKEN"))

    # -- list: a new user has no task -----------------------------------------------------------
    empty = alice.list_tasks()
    check((empty.data, empty.meta.total, empty.meta.next_cursor) == ([], 0, None), "empty list")
    log("list_tasks -> 200, no task")

    # -- create with every field and an Idempotency-Key; the retry gives back the same task ----
    due = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    body = TaskWrite(
        title="Ship the openapi-generator python proof",
        description="Every field",
        completed=False,
        priority=Priority.HIGH,
        due_date=due,
        tags=["proof", "openapi-generator"],
    )
    key = f"openapi-generator-python-{time.time_ns()}"
    created = alice.create_task_with_http_info(task_write=body, idempotency_key=key)
    check(created.status_code == 201, f"create_task: {created.status_code}")
    task: Task = created.data.data
    check(
        (task.title, task.description, task.completed, task.priority, task.due_date, task.tags)
        == (body.title, "Every field", False, Priority.HIGH, due, ["proof", "openapi-generator"]),
        f"created fields: {task}",
    )
    check(task.version == 1 and task.completed_at is None, "version 1, not completed")
    check(task.user_id == env("API_USER_ID"), "user_id is the token's sub")
    check(header(created.headers, "Location") == f"/api/tasks/{task.id}", "Location")
    retry = alice.create_task(task_write=body, idempotency_key=key)
    check(retry.data.id == task.id, "Idempotency-Key retry returns the first task")
    log(f"create_task (every field, Idempotency-Key) -> 201 {task.id}; retry -> the same task")

    # -- get, and read the ETag -----------------------------------------------------------------
    task_id = task.id
    got = alice.get_task_with_http_info(task_id)
    check(got.status_code == 200 and got.data.data == task, "get_task returns the created task")
    etag = header(got.headers, "ETag")
    log(f"get_task -> 200, ETag {etag}")

    # -- PATCH with If-Match; then the old ETag is stale: 412 -----------------------------------
    patched = alice.update_task_with_http_info(task_id, TaskPatch(completed=True), if_match=etag)
    done = patched.data.data
    check((done.completed, done.version) == (True, task.version + 1), "completed, version")
    check(done.completed_at is not None, "completed_at set")
    new_etag = header(patched.headers, "ETag")
    check(new_etag != etag, f"ETag moves on: {new_etag}")
    failed(lambda: alice.update_task(task_id, TaskPatch(title="Lost"), if_match=etag),
           412, ErrorCode.PRECONDITION_FAILED, "PATCH with a stale If-Match")
    log(f"update_task If-Match {etag} -> 200 (ETag {new_etag}); again -> 412 PRECONDITION_FAILED")

    # -- a filter, following meta.next_cursor with limit=2 --------------------------------------
    for title in ("low one", "low two", "low three"):
        alice.create_task(TaskWrite(title=title, priority=Priority.LOW, tags=["batch"]))
    seen: list[str] = []
    cursors: list[str] = []
    cursor: str | None = None
    while True:
        page = alice.list_tasks(priority=Priority.LOW, tag="batch", sort=SortOrder.TITLE, limit=2,
                                cursor=cursor)
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
    stats = alice.get_task_stats().data
    counts = stats.by_priority
    check(
        (stats.total, stats.completed, stats.pending, stats.overdue) == (4, 1, 3, 0)
        and (counts.low, counts.medium, counts.high) == (3, 0, 1),
        f"stats: {stats}",
    )
    log("get_task_stats -> total 4, completed 1, pending 3, by priority low 3 / medium 0 / high 1")

    # -- delete, then a 404 and a 422 through the client's error type ---------------------------
    deleted = alice.delete_task_with_http_info(task_id, if_match=new_etag)
    check(deleted.status_code == 204, f"delete_task: {deleted.status_code}")
    log("delete_task with If-Match -> 204")

    failed(lambda: alice.get_task(task_id), 404, ErrorCode.NOT_FOUND, "get after delete")
    log("get_task -> 404 NOT_FOUND (NotFoundException, ErrorEnvelope)")

    invalid = failed(
        lambda: bob.list_tasks(priority=Priority.LOW, tag="batch", sort=SortOrder.TITLE, limit=2,
                               cursor=cursors[0]),
        422, ErrorCode.VALIDATION_ERROR, "another user's cursor",
    )
    # `field` is a reserved word of this generator: the property is var_field (aliased to "field").
    check([d.var_field for d in invalid.error.details or []] == ["query.cursor"], "422 details")
    log("list_tasks with another user's cursor -> 422 VALIDATION_ERROR at query.cursor "
        "(UnprocessableEntityException)")

    print("client proof passed", flush=True)


if __name__ == "__main__":
    main()
