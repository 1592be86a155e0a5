// Client proof for @hey-api/openapi-ts: every call below goes through the SDK it generates from
// ../../openapi.yaml into src/client/ (at test time, never committed), so a contract change that
// breaks its users breaks `tsc --strict` here; the run then checks the live server.
//
//   API_URL=http://127.0.0.1:8000 API_TOKEN=... API_USER_ID=<its sub> API_OTHER_TOKEN=... node build/flow.js
//
// The same flow as every client proof (clients/README.md). Exits 0 when every check passes.

import { createClient, createConfig } from "./client/client/index.js";
import { client as alice } from "./client/client.gen.js";
import {
  createTask,
  deleteTask,
  getTask,
  getTaskStats,
  listTaskChanges,
  listTasks,
  updateTask,
  type ErrorCode,
  type ErrorEnvelope,
  type SortOrder,
  type SyncUpToDate,
  type Task,
  type TaskChanges,
  type TaskTombstone,
  type TaskWrite,
} from "./client/index.js";

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`check failed: ${message}`);
}

function equal<T>(actual: T, expected: T, what: string): void {
  const [a, e] = [JSON.stringify(actual), JSON.stringify(expected)];
  check(a === e, `${what}: expected ${e}, got ${a}`);
}

function log(message: string): void {
  console.log(`ok   ${message}`);
}

/** What an SDK function gives back when it does not throw: the typed body or the typed error. */
type Result<Data> = ({ data: Data; error: undefined } | { data: undefined; error: ErrorEnvelope }) & {
  response?: Response;
};

/** A call that succeeded with this status: its typed body and the response (headers). */
function ok<Data>(
  result: Result<Data>,
  status: number,
  what: string,
): { data: NonNullable<Data>; response: Response } {
  check(result.response !== undefined, `${what}: no response`);
  check(result.error === undefined, `${what}: ${result.response.status} ${JSON.stringify(result.error)}`);
  equal(result.response.status, status, `${what}: status`);
  check(result.data !== undefined && result.data !== null, `${what}: no body`);
  return { data: result.data, response: result.response };
}

/** A failed call read through the SDK's typed `error` (the contract's ErrorEnvelope). */
function failed<Data>(result: Result<Data>, status: number, code: ErrorCode, what: string): ErrorEnvelope {
  check(result.response !== undefined, `${what}: no response`);
  equal(result.response.status, status, `${what}: status`);
  check(result.error !== undefined, `${what}: error envelope expected`);
  equal(result.error.error.code, code, `${what}: error.code`);
  equal(result.error.meta.request_id, result.response.headers.get("X-Request-ID"), `${what}: meta.request_id`);
  return result.error;
}

alice.setConfig({ baseUrl: env("API_URL"), headers: { Authorization: `Bearer ${env("API_TOKEN")}` } });
const bob = createClient(createConfig({
  baseUrl: env("API_URL"),
  headers: { Authorization: `Bearer ${env("API_OTHER_TOKEN")}` },
}));

async function main(): Promise<void> {
  // -- list: a new user has no task ------------------------------------------------------------------
  const empty = ok(await listTasks(), 200, "listTasks").data;
  equal([empty.data, empty.meta.total, empty.meta.next_cursor], [[], 0, null], "empty list");
  log("listTasks -> 200, no task");

  // -- create with every field and an Idempotency-Key; the retry gives back the same task ---------
  const body: TaskWrite = {
    title: "Ship the hey-api proof",
    description: "Every field",
    completed: false,
    priority: "high",
    due_date: "2030-01-02T03:04:05+00:00",
    tags: ["proof", "hey-api"],
  };
  const key = `hey-api-${Date.now()}`;
  const created = ok(await createTask({ body, headers: { "Idempotency-Key": key } }), 201, "createTask");
  const task: Task = created.data.data;
  equal([task.title, task.description, task.completed, task.priority, task.tags, task.version],
    ["Ship the hey-api proof", "Every field", false, "high", ["proof", "hey-api"], 1], "created fields");
  check(task.due_date !== null && Date.parse(task.due_date) === Date.parse("2030-01-02T03:04:05Z"),
    `due_date ${task.due_date}`);
  equal(task.user_id, env("API_USER_ID"), "user_id is the token's sub");
  equal(created.response.headers.get("Location"), `/api/tasks/${task.id}`, "Location");
  const retry = ok(await createTask({ body, headers: { "Idempotency-Key": key } }), 201, "createTask retry");
  equal(retry.data.data.id, task.id, "Idempotency-Key retry returns the first task");
  log(`createTask (every field, Idempotency-Key) -> 201 ${task.id}; retry -> the same task`);

  // -- get, and read the ETag ----------------------------------------------------------------------
  const path = { task_id: task.id };
  const got = ok(await getTask({ path }), 200, "getTask");
  equal(got.data.data, task, "getTask returns the created task");
  const etag = got.response.headers.get("ETag");
  check(etag !== null, "ETag header on getTask");
  log(`getTask -> 200, ETag ${etag}`);

  // -- PATCH with If-Match; then the old ETag is stale: 412 ----------------------------------------
  const patched = ok(await updateTask({ path, headers: { "If-Match": etag }, body: { completed: true } }),
    200, "updateTask");
  const done = patched.data.data;
  equal([done.completed, done.version], [true, task.version + 1], "completed, version after PATCH");
  check(done.completed_at !== null, "completed_at set");
  const newEtag = patched.response.headers.get("ETag");
  check(newEtag !== null && newEtag !== etag, `ETag moves on: ${newEtag}`);
  failed(await updateTask({ path, headers: { "If-Match": etag }, body: { title: "Lost update" } }),
    412, "PRECONDITION_FAILED", "PATCH with a stale If-Match");
  log(`updateTask If-Match ${etag} -> 200 (ETag ${newEtag}); again -> 412 PRECONDITION_FAILED`);

  // -- a filter, following meta.next_cursor with limit=2 -------------------------------------------
  for (const title of ["low one", "low two", "low three"]) {
    ok(await createTask({ body: { title, priority: "low", tags: ["batch"] } }), 201, `createTask ${title}`);
  }
  const sort: SortOrder = "title";
  const query = { priority: "low", tag: "batch", sort, limit: 2 } as const;
  const seen: string[] = [];
  const cursors: string[] = [];
  for (let cursor: string | undefined; ; ) {
    const page = ok(await listTasks({ query: { ...query, cursor } }), 200, "listTasks page").data;
    equal([page.meta.total, page.meta.limit], [3, 2], "meta.total, meta.limit");
    seen.push(...page.data.map((t) => t.title));
    if (page.meta.next_cursor === null) break;
    cursor = page.meta.next_cursor;
    cursors.push(cursor);
    check(cursors.length < 3, "pagination does not end");
  }
  equal(seen, ["low one", "low three", "low two"], "filtered pages, sorted by title");
  log(`listTasks priority=low tag=batch sort=title limit=2 -> ${cursors.length + 1} pages: ${seen.join(", ")}`);

  // -- stats ---------------------------------------------------------------------------------------
  const stats = ok(await getTaskStats(), 200, "getTaskStats").data.data;
  equal(stats, { total: 4, completed: 1, pending: 3, overdue: 0, by_priority: { low: 3, medium: 0, high: 1 } },
    "stats");
  log("getTaskStats -> total 4, completed 1, pending 3, by priority low 3 / medium 0 / high 1");

  // -- delete, then a 404 and a 422 through the typed error ----------------------------------------
  const deleted = await deleteTask({ path, headers: { "If-Match": newEtag } });
  check(deleted.error === undefined, `deleteTask: ${JSON.stringify(deleted.error)}`);
  equal(deleted.response?.status, 204, "deleteTask status");
  log("deleteTask with If-Match -> 204");

  failed(await getTask({ path }), 404, "NOT_FOUND", "getTask after delete");
  log("getTask -> 404 NOT_FOUND (typed error)");

  const foreign = await listTasks({ client: bob, query: { ...query, cursor: cursors[0] } });
  const invalid = failed(foreign, 422, "VALIDATION_ERROR", "another user's cursor");
  equal(invalid.error.details?.map((d) => d.field), ["query.cursor"], "422 details name the cursor");
  log("listTasks with another user's cursor -> 422 VALIDATION_ERROR at query.cursor (typed error)");

  // -- the change feed: a first sync, then one since its token: a task deleted in between --------
  const first = ok(await listTaskChanges(), 200, "listTaskChanges").data;
  const firstChanges: TaskChanges = first.data;
  equal([firstChanges.tasks.length, firstChanges.deleted, first.meta.has_more], [stats.total - 1, [], false],
    "first sync: every task left");
  const extra = ok(await createTask({ body: { title: "Deleted after the first sync" } }), 201, "createTask").data.data;
  equal((await deleteTask({ path: { task_id: extra.id } })).response?.status, 204, "deleteTask status");
  const later = ok(await listTaskChanges({ query: { since: first.meta.sync_token } }), 200, "listTaskChanges since").data;
  const tombstone: TaskTombstone | undefined = later.data.deleted[0];
  check(tombstone !== undefined && tombstone.id === extra.id, `tombstone: ${JSON.stringify(later.data)}`);
  check(!Number.isNaN(Date.parse(tombstone.deleted_at)), `deleted_at: ${tombstone.deleted_at}`);
  equal(later.data.tasks, [], "a task created and deleted between syncs comes only as its tombstone");
  // The live stream's up-to-date event carries this type (its data); its token works in the feed.
  const upToDate: SyncUpToDate = { sync_token: later.meta.sync_token };
  const again = ok(await listTaskChanges({ query: { since: upToDate.sync_token, limit: 10 } }), 200, "listTaskChanges again").data;
  equal([again.data.tasks, again.data.deleted, again.meta.has_more], [[], [], false], "nothing new");
  log(`listTaskChanges: first sync ${firstChanges.tasks.length} tasks; since its token -> one tombstone; then nothing new`);

  console.log("client proof passed");
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.stack ?? error.message : error);
  process.exit(1);
});
