// Client proof for openapi-generator's `typescript-fetch`: every call below goes through the
// client it generates from ../../openapi.yaml into src/client/ (at test time, never committed),
// so a contract change that breaks its users breaks `tsc --strict` here; the run then checks the
// live server. Its models use camelCase properties (dueDate, nextCursor) and Date objects.
//
//   API_URL=http://127.0.0.1:8000 API_TOKEN=... API_USER_ID=<its sub> API_OTHER_TOKEN=... node build/flow.js
//
// The same flow as every client proof (clients/README.md). Exits 0 when every check passes.

import {
  Configuration,
  ErrorCode,
  ErrorEnvelopeFromJSON,
  Priority,
  ResponseError,
  SortOrder,
  TasksApi,
  type ApiResponse,
  type ErrorEnvelope,
  type Task,
  type TaskWrite,
} from "./client/index";

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

/** A call that answered 2xx with this status: the raw response (headers) and the typed body. */
async function ok<T>(call: Promise<ApiResponse<T>>, status: number, what: string): Promise<{ value: T; raw: Response }> {
  const response = await call;
  equal(response.raw.status, status, `${what}: status`);
  return { value: await response.value(), raw: response.raw };
}

/** A call that failed: the client throws its ResponseError; the body is the typed ErrorEnvelope. */
async function failed(call: Promise<unknown>, status: number, code: ErrorCode, what: string): Promise<ErrorEnvelope> {
  try {
    await call;
  } catch (error: unknown) {
    check(error instanceof ResponseError, `${what}: ResponseError expected, got ${String(error)}`);
    equal(error.response.status, status, `${what}: status`);
    const envelope = ErrorEnvelopeFromJSON(await error.response.json());
    equal(envelope.error.code, code, `${what}: error.code`);
    equal(envelope.meta.requestId, error.response.headers.get("X-Request-ID"), `${what}: meta.requestId`);
    return envelope;
  }
  throw new Error(`${what}: the call succeeded, ${status} expected`);
}

const config = (token: string): Configuration => new Configuration({ basePath: env("API_URL"), accessToken: token });
const tasks = new TasksApi(config(env("API_TOKEN")));
const bobsTasks = new TasksApi(config(env("API_OTHER_TOKEN")));

async function main(): Promise<void> {
  // -- list: a new user has no task ------------------------------------------------------------------
  const empty = await tasks.listTasks({});
  equal([empty.data, empty.meta.total, empty.meta.nextCursor], [[], 0, null], "empty list");
  log("listTasks -> 200, no task");

  // -- create with every field and an Idempotency-Key; the retry gives back the same task ---------
  const taskWrite: TaskWrite = {
    title: "Ship the typescript-fetch proof",
    description: "Every field",
    completed: false,
    priority: Priority.High,
    dueDate: new Date("2030-01-02T03:04:05Z"),
    tags: ["proof", "typescript-fetch"],
  };
  const key = `typescript-fetch-${Date.now()}`;
  const created = await ok(tasks.createTaskRaw({ taskWrite, idempotencyKey: key }), 201, "createTask");
  const task: Task = created.value.data;
  equal([task.title, task.description, task.completed, task.priority, task.tags, task.version],
    ["Ship the typescript-fetch proof", "Every field", false, "high", ["proof", "typescript-fetch"], 1],
    "created fields");
  equal(task.dueDate?.getTime(), Date.parse("2030-01-02T03:04:05Z"), "dueDate");
  equal(task.userId, env("API_USER_ID"), "userId is the token's sub");
  equal(created.raw.headers.get("Location"), `/api/tasks/${task.id}`, "Location");
  const retry = await tasks.createTask({ taskWrite, idempotencyKey: key });
  equal(retry.data.id, task.id, "Idempotency-Key retry returns the first task");
  log(`createTask (every field, Idempotency-Key) -> 201 ${task.id}; retry -> the same task`);

  // -- get, and read the ETag ----------------------------------------------------------------------
  const got = await ok(tasks.getTaskRaw({ taskId: task.id }), 200, "getTask");
  equal(got.value.data, task, "getTask returns the created task");
  const etag = got.raw.headers.get("ETag");
  check(etag !== null, "ETag header on getTask");
  log(`getTask -> 200, ETag ${etag}`);

  // -- PATCH with If-Match; then the old ETag is stale: 412 ----------------------------------------
  const patched = await ok(
    tasks.updateTaskRaw({ taskId: task.id, ifMatch: etag, taskPatch: { completed: true } }), 200, "updateTask");
  const done = patched.value.data;
  equal([done.completed, done.version], [true, task.version + 1], "completed, version after PATCH");
  check(done.completedAt instanceof Date, "completedAt set");
  const newEtag = patched.raw.headers.get("ETag");
  check(newEtag !== null && newEtag !== etag, `ETag moves on: ${newEtag}`);
  await failed(tasks.updateTask({ taskId: task.id, ifMatch: etag, taskPatch: { title: "Lost update" } }),
    412, ErrorCode.PreconditionFailed, "PATCH with a stale If-Match");
  log(`updateTask If-Match ${etag} -> 200 (ETag ${newEtag}); again -> 412 PRECONDITION_FAILED`);

  // -- a filter, following meta.nextCursor with limit=2 --------------------------------------------
  for (const title of ["low one", "low two", "low three"]) {
    await tasks.createTask({ taskWrite: { title, priority: Priority.Low, tags: ["batch"] } });
  }
  const query = { priority: Priority.Low, tag: "batch", sort: SortOrder.TITLE, limit: 2 };
  const seen: string[] = [];
  const cursors: string[] = [];
  for (let cursor: string | undefined; ; ) {
    const page = await tasks.listTasks({ ...query, cursor });
    equal([page.meta.total, page.meta.limit], [3, 2], "meta.total, meta.limit");
    seen.push(...page.data.map((t) => t.title));
    if (page.meta.nextCursor === null) break;
    cursor = page.meta.nextCursor;
    cursors.push(cursor);
    check(cursors.length < 3, "pagination does not end");
  }
  equal(seen, ["low one", "low three", "low two"], "filtered pages, sorted by title");
  log(`listTasks priority=low tag=batch sort=title limit=2 -> ${cursors.length + 1} pages: ${seen.join(", ")}`);

  // -- stats ---------------------------------------------------------------------------------------
  const stats = (await tasks.getTaskStats()).data;
  equal(stats, { total: 4, completed: 1, pending: 3, overdue: 0, byPriority: { low: 3, medium: 0, high: 1 } },
    "stats");
  log("getTaskStats -> total 4, completed 1, pending 3, by priority low 3 / medium 0 / high 1");

  // -- delete, then a 404 and a 422 through the client's error ---------------------------------------
  const deleted = await tasks.deleteTaskRaw({ taskId: task.id, ifMatch: newEtag });
  equal(deleted.raw.status, 204, "deleteTask status");
  log("deleteTask with If-Match -> 204");

  await failed(tasks.getTask({ taskId: task.id }), 404, ErrorCode.NotFound, "getTask after delete");
  log("getTask -> 404 NOT_FOUND (ResponseError, ErrorEnvelope)");

  const invalid = await failed(bobsTasks.listTasks({ ...query, cursor: cursors[0] }),
    422, ErrorCode.ValidationError, "another user's cursor");
  equal(invalid.error.details?.map((d) => d.field), ["query.cursor"], "422 details name the cursor");
  log("listTasks with another user's cursor -> 422 VALIDATION_ERROR at query.cursor (ResponseError)");

  console.log("client proof passed");
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.stack ?? error.message : error);
  process.exit(1);
});
