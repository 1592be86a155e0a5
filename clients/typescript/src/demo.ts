// Client proof for the frontend teams: every request and response below is typed by
// openapi-typescript from ../../openapi.yaml (src/api.d.ts, generated, never committed), so a
// contract change that breaks a client breaks `tsc` here; the run then checks the live server.
//
//   API_URL=http://127.0.0.1:8000 API_TOKEN=... API_USER_ID=<the token's sub> \
//     API_OTHER_TOKEN=<another user's token> node build/demo.js
//
// The flow of every client proof (clients/README.md), and more. Exits 0 when every check passes,
// 1 on the first mismatch (printed to stderr).

import createClient from "openapi-fetch";

import type { components, operations, paths } from "./api.js";

type Task = components["schemas"]["Task"];
type SortOrder = components["schemas"]["SortOrder"];
type TaskWrite = components["schemas"]["TaskWrite"];
type ErrorEnvelope = components["schemas"]["ErrorEnvelope"];
type ErrorCode = components["schemas"]["ErrorCode"];
type TaskChanges = components["schemas"]["TaskChanges"];
type TaskTombstone = components["schemas"]["TaskTombstone"];
type SyncUpToDate = components["schemas"]["SyncUpToDate"];
// The change feed's query, named by its operationId: renaming the operation breaks this line.
type ChangesQuery = NonNullable<operations["listTaskChanges"]["parameters"]["query"]>;

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`check failed: ${message}`);
}

function equal<T>(actual: T, expected: T, what: string): void {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  check(a === e, `${what}: expected ${e}, got ${a}`);
}

/** The typed error envelope of a failed call, checked against the expected status and code. */
function expectError(
  result: { error?: ErrorEnvelope; response: Response },
  status: number,
  code: ErrorCode,
  what: string,
): void {
  equal(result.response.status, status, `${what}: status`);
  check(result.error !== undefined, `${what}: error envelope expected`);
  equal(result.error.error.code, code, `${what}: error.code`);
  check(typeof result.error.error.message === "string", `${what}: error.message`);
  check(UUID.test(result.error.meta.request_id), `${what}: meta.request_id`);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function checkTimestamp(value: string, what: string): void {
  check(!Number.isNaN(Date.parse(value)), `${what}: not a date-time: ${value}`);
}

const client = createClient<paths>({
  baseUrl: env("API_URL"),
  headers: { Authorization: `Bearer ${env("API_TOKEN")}` },
});
const otherUser = createClient<paths>({
  baseUrl: env("API_URL"),
  headers: { Authorization: `Bearer ${env("API_OTHER_TOKEN")}` },
});

function log(message: string): void {
  console.log(`ok   ${message}`);
}

async function createTask(body: TaskWrite, idempotencyKey?: string): Promise<Task> {
  const { data, error, response } = await client.POST("/api/tasks", {
    params: idempotencyKey ? { header: { "Idempotency-Key": idempotencyKey } } : {},
    body,
  });
  check(!error, `POST /api/tasks: ${response.status} ${JSON.stringify(error)}`);
  equal(response.status, 201, "POST /api/tasks status");
  check(data !== undefined, "POST /api/tasks: body expected");
  const task: Task = data.data;
  check(UUID.test(task.id), `task.id is a UUID: ${task.id}`);
  equal(response.headers.get("Location"), `/api/tasks/${task.id}`, "Location header");
  equal(response.headers.get("ETag"), `"${task.version}"`, "ETag header");
  equal(response.headers.get("X-Request-ID"), data.meta.request_id, "X-Request-ID = meta.request_id");
  checkTimestamp(data.meta.timestamp, "meta.timestamp");
  return task;
}

async function main(): Promise<void> {
  // -- list: a new user has no task ---------------------------------------------------------------
  const empty = await client.GET("/api/tasks");
  check(empty.data !== undefined, `GET /api/tasks: ${empty.response.status}`);
  equal([empty.data.data, empty.data.meta.total, empty.data.meta.next_cursor], [[], 0, null], "empty list");
  log("GET /api/tasks -> 200, no task");

  // -- create: every writable field (TaskWrite), with an Idempotency-Key ---------------------------
  const full = await createTask({
    title: "Ship the client proof",
    description: "Generated types, typed calls, live server",
    completed: false,
    priority: "high",
    due_date: "2030-01-02T03:04:05+00:00",
    tags: ["frontend", "contract"],
  }, `client-proof-full-${Date.now()}`);
  equal(full.title, "Ship the client proof", "title");
  equal(full.description, "Generated types, typed calls, live server", "description");
  equal(full.priority, "high", "priority");
  equal(full.tags, ["frontend", "contract"], "tags");
  equal(full.completed, false, "completed");
  equal(full.completed_at, null, "completed_at");
  equal(full.version, 1, "version");
  check(full.due_date !== null && Date.parse(full.due_date) === Date.parse("2030-01-02T03:04:05Z"),
    `due_date: ${full.due_date}`);
  equal(full.user_id, env("API_USER_ID"), "user_id is the token's sub (opaque)");
  checkTimestamp(full.created_at, "created_at");
  equal(full.updated_at, full.created_at, "updated_at = created_at on create");
  log(`POST /api/tasks -> 201 ${full.id} (every field, Idempotency-Key)`);

  // -- create: only the required field; the others take their documented defaults ---------------
  const minimal = await createTask({ title: "Minimal task" });
  equal(
    [minimal.description, minimal.completed, minimal.priority, minimal.due_date, minimal.tags],
    [null, false, "medium", null, []],
    "defaults",
  );
  log(`POST /api/tasks -> 201 ${minimal.id} (defaults)`);

  // -- create: Idempotency-Key (typed header parameter); a retry gives back the same task --------
  const key = `client-proof-${Date.now()}`;
  const first = await createTask({ title: "Idempotent task" }, key);
  const retry = await createTask({ title: "Idempotent task" }, key);
  equal(retry.id, first.id, "Idempotency-Key retry returns the first task");
  const conflict = await client.POST("/api/tasks", {
    params: { header: { "Idempotency-Key": key } },
    body: { title: "Another body" },
  });
  expectError(conflict, 409, "CONFLICT", "Idempotency-Key reused with another body");
  log("POST /api/tasks with Idempotency-Key -> 201, 201 (same task), 409 CONFLICT");

  const more = [await createTask({ title: "Task four" }), await createTask({ title: "Task five" })];
  const created = [full, minimal, first, ...more];
  log(`created ${created.length} tasks`);

  // -- list: a filter, limit=2, follow meta.next_cursor to the end --------------------------------
  const seen: Task[] = [];
  const sort: SortOrder = "-created_at";
  let cursor: string | undefined;
  let firstCursor: string | undefined;
  let pages = 0;
  for (;;) {
    const { data, error, response } = await client.GET("/api/tasks", {
      params: { query: { status: "pending", limit: 2, sort, ...(cursor ? { cursor } : {}) } },
    });
    check(!error, `GET /api/tasks: ${response.status} ${JSON.stringify(error)}`);
    check(data !== undefined, "GET /api/tasks: body expected");
    pages += 1;
    check(pages <= created.length, "pagination does not end");
    equal(data.meta.limit, 2, "meta.limit");
    equal(data.meta.total, created.length, "meta.total");
    check(data.data.length >= 1 && data.data.length <= 2, `page size ${data.data.length}`);
    seen.push(...data.data);
    if (data.meta.next_cursor === null) break;
    cursor = data.meta.next_cursor;
    firstCursor ??= cursor;
  }
  const seenIds = seen.map((task) => task.id);
  equal(new Set(seenIds).size, seenIds.length, "no task on two pages");
  equal([...seenIds].sort(), created.map((task) => task.id).sort(), "pages hold every task");
  equal(pages, Math.ceil(created.length / 2), "page count");
  for (let i = 1; i < seen.length; i++) {
    const [previous, current] = [seen[i - 1], seen[i]];
    check(previous !== undefined && current !== undefined, "page entries");
    check(Date.parse(previous.created_at) >= Date.parse(current.created_at), "sorted by -created_at");
  }
  log(`GET /api/tasks?status=pending&limit=2 -> ${pages} pages, ${seen.length} distinct tasks, total ${created.length}`);

  // -- get: read the ETag, the If-Match of the next write -----------------------------------------
  const current = await client.GET("/api/tasks/{task_id}", { params: { path: { task_id: full.id } } });
  check(current.data !== undefined, `GET /api/tasks/{id}: ${current.response.status}`);
  equal(current.data.data, full, "GET returns the created task");
  const etag = current.response.headers.get("ETag");
  check(etag !== null, "ETag on GET");
  log(`GET /api/tasks/{id} -> 200, ETag ${etag}`);

  // -- patch: complete one task, with If-Match; the ETag moves on ---------------------------------
  const target = { params: { path: { task_id: full.id } } };
  const patched = await client.PATCH("/api/tasks/{task_id}", {
    params: { ...target.params, header: { "If-Match": etag } },
    body: { completed: true },
  });
  check(!patched.error, `PATCH: ${patched.response.status} ${JSON.stringify(patched.error)}`);
  equal(patched.response.status, 200, "PATCH status");
  check(patched.data !== undefined, "PATCH: body expected");
  const done: Task = patched.data.data;
  equal(done.completed, true, "completed after PATCH");
  check(done.completed_at !== null, "completed_at set after PATCH");
  checkTimestamp(done.completed_at, "completed_at");
  equal(done.version, full.version + 1, "version after PATCH");
  equal(done.title, full.title, "PATCH leaves title alone");
  equal(done.tags, full.tags, "PATCH leaves tags alone");
  equal(patched.response.headers.get("ETag"), `"${done.version}"`, "ETag after PATCH");
  log(`PATCH /api/tasks/{id} {completed: true} -> 200, ETag ${patched.response.headers.get("ETag")}`);

  const stale = await client.PATCH("/api/tasks/{task_id}", {
    params: { ...target.params, header: { "If-Match": etag } },
    body: { title: "Lost update" },
  });
  expectError(stale, 412, "PRECONDITION_FAILED", "PATCH with a stale If-Match");
  log("PATCH with the old ETag -> 412 PRECONDITION_FAILED");

  const fetched = await client.GET("/api/tasks/{task_id}", target);
  check(fetched.data !== undefined, `GET after PATCH: ${fetched.response.status}`);
  equal(fetched.data.data, done, "GET returns the patched task");
  equal(fetched.response.headers.get("ETag"), `"${done.version}"`, "ETag on GET");

  // -- stats ----------------------------------------------------------------------------------------
  const stats = await client.GET("/api/tasks/stats");
  check(stats.data !== undefined, `GET /api/tasks/stats: ${stats.response.status}`);
  equal(stats.data.data, {
    total: created.length, completed: 1, pending: created.length - 1, overdue: 0,
    by_priority: { low: 0, medium: created.length - 1, high: 1 },
  }, "stats");
  log(`GET /api/tasks/stats -> total ${created.length}, completed 1, by priority 0/${created.length - 1}/1`);

  // -- delete, then the task is gone --------------------------------------------------------------
  const deleted = await client.DELETE("/api/tasks/{task_id}", {
    params: { ...target.params, header: { "If-Match": `"${done.version}"` } },
  });
  check(!deleted.error, `DELETE: ${deleted.response.status} ${JSON.stringify(deleted.error)}`);
  equal(deleted.response.status, 204, "DELETE status");
  equal(deleted.data, undefined, "DELETE has no body");
  log("DELETE /api/tasks/{id} with If-Match -> 204");

  const gone = await client.GET("/api/tasks/{task_id}", target);
  check(gone.data === undefined, "GET after DELETE returned a task");
  expectError(gone, 404, "NOT_FOUND", "GET after DELETE");
  check(gone.error?.error.code === "NOT_FOUND", "typed error code");
  log("GET /api/tasks/{id} -> 404 NOT_FOUND");

  const after = await client.GET("/api/tasks", { params: { query: { limit: 100 } } });
  check(after.data !== undefined, `GET /api/tasks after DELETE: ${after.response.status}`);
  equal(after.data.meta.total, created.length - 1, "meta.total after DELETE");
  check(!after.data.data.some((task) => task.id === full.id), "deleted task still listed");
  log(`GET /api/tasks -> total ${after.data.meta.total} after DELETE`);

  // -- 422 through the typed error: a cursor is only good for the user it was issued to ----------
  check(firstCursor !== undefined, "a cursor from the first page");
  const foreign = await otherUser.GET("/api/tasks", {
    params: { query: { status: "pending", limit: 2, sort, cursor: firstCursor } },
  });
  expectError(foreign, 422, "VALIDATION_ERROR", "another user's cursor");
  equal(foreign.error?.error.details?.map((detail) => detail.field), ["query.cursor"], "422 details");
  log("GET /api/tasks with another user's cursor -> 422 VALIDATION_ERROR at query.cursor");

  await changeFeed();
  console.log("client proof passed");
}

/** One page of the change feed (GET /api/tasks/changes), typed from the contract. */
async function changesPage(query: ChangesQuery): Promise<{ changes: TaskChanges; token: string; hasMore: boolean }> {
  const { data, error, response } = await client.GET("/api/tasks/changes", { params: { query } });
  check(!error, `GET /api/tasks/changes: ${response.status} ${JSON.stringify(error)}`);
  check(data !== undefined, "GET /api/tasks/changes: body expected");
  return { changes: data.data, token: data.meta.sync_token, hasMore: data.meta.has_more };
}

/** Keep a copy in step with the feed: a first sync (no token) or a later one, page by page. */
async function sync(copy: Map<string, Task>, since?: string): Promise<{ token: string; tombstones: TaskTombstone[] }> {
  const tombstones: TaskTombstone[] = [];
  for (let pages = 1; ; pages++) {
    check(pages <= 20, "the feed does not end");
    const page = await changesPage({ limit: 2, ...(since ? { since } : {}) });
    for (const task of page.changes.tasks) copy.set(task.id, task);
    for (const tombstone of page.changes.deleted) copy.delete(tombstone.id);
    tombstones.push(...page.changes.deleted);
    since = page.token;
    if (!page.hasMore) return { token: page.token, tombstones };
  }
}

/** The first event of the live stream (GET /api/tasks/events), resumed from `lastEventId`. */
async function firstEvent(lastEventId: string): Promise<{ event: string; id: string; data: string }> {
  const controller = new AbortController();
  const response = await fetch(`${env("API_URL")}/api/tasks/events`, {
    headers: { Authorization: `Bearer ${env("API_TOKEN")}`, "Last-Event-ID": lastEventId },
    signal: controller.signal,
  });
  equal(response.status, 200, "GET /api/tasks/events status");
  check(response.body !== null, "a stream body");
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      check(!done, `the stream ended before an event: ${JSON.stringify(text)}`);
      text += decoder.decode(value, { stream: true });
      for (const block of text.split("\n\n").slice(0, -1)) {
        const fields = new Map(block.split("\n").map((line) => {
          const at = line.indexOf(": ");
          return [line.slice(0, at), line.slice(at + 2)] as const;
        }));
        const [event, id, data] = [fields.get("event"), fields.get("id"), fields.get("data")];
        if (event !== undefined && id !== undefined && data !== undefined) return { event, id, data };
      }
    }
  } finally {
    controller.abort();
  }
}

async function changeFeed(): Promise<void> {
  // -- first sync: no token, every task, page by page (limit=2) while has_more ---------------------
  const copy = new Map<string, Task>();
  const first = await sync(copy);
  const listed = await client.GET("/api/tasks", { params: { query: { limit: 100 } } });
  check(listed.data !== undefined, `GET /api/tasks: ${listed.response.status}`);
  const byId = (tasks: Iterable<Task>) => [...tasks].sort((a, b) => a.id.localeCompare(b.id));
  equal(byId(copy.values()), byId(listed.data.data), "first sync = the list");
  equal(first.tombstones, [], "a first sync has no tombstones");
  log(`GET /api/tasks/changes (first sync, limit=2) -> ${copy.size} tasks and a sync token`);

  // -- a later sync: one task edited, one deleted; only those come, the deleted one as a tombstone
  const [edited, doomed] = byId(copy.values());
  check(edited !== undefined && doomed !== undefined, "two tasks to change");
  const patched = await client.PATCH("/api/tasks/{task_id}", {
    params: { path: { task_id: edited.id } }, body: { title: "Edited after the first sync" },
  });
  check(patched.data !== undefined, `PATCH: ${patched.response.status}`);
  const removed = await client.DELETE("/api/tasks/{task_id}", { params: { path: { task_id: doomed.id } } });
  equal(removed.response.status, 204, "DELETE status");
  const later = await changesPage({ since: first.token });
  equal(later.changes.tasks, [patched.data.data], "a later sync: the edited task, whole");
  const tombstone: TaskTombstone | undefined = later.changes.deleted[0];
  check(tombstone !== undefined && later.changes.deleted.length === 1, "one tombstone");
  equal(tombstone.id, doomed.id, "the tombstone's id");
  checkTimestamp(tombstone.deleted_at, "deleted_at");
  const second = await sync(copy, first.token);
  check(!copy.has(doomed.id) && copy.get(edited.id)?.title === "Edited after the first sync", "copy updated");
  log("GET /api/tasks/changes?since=... -> the edited task and a tombstone (id, deleted_at)");

  // -- the live stream, resumed from the token: caught up, so an up-to-date event (SyncUpToDate) --
  const event = await firstEvent(second.token);
  equal(event.event, "up-to-date", "the first event when caught up");
  const upToDate = JSON.parse(event.data) as SyncUpToDate;
  equal(upToDate.sync_token, event.id, "up-to-date: the token is the event id");
  const resumed = await changesPage({ since: upToDate.sync_token });
  equal([resumed.changes.tasks, resumed.changes.deleted, resumed.hasMore], [[], [], false],
    "nothing changed since the stream's token");
  log("GET /api/tasks/events (Last-Event-ID) -> up-to-date, its token good for the feed");
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.stack ?? error.message : error);
  process.exit(1);
});
