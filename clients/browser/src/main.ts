// The Task API from a page on another origin: openapi-fetch with types generated from
// ../../openapi.yaml (src/api.d.ts, generated, never committed), bundled by esbuild into the
// page's app.js. Only paths and operations are named here, never schema components.
//
// Everything comes from the URL fragment (never sent to the page's server):
//   index.html#api=http://127.0.0.1:8000&token=<JWT>&mode=flow
//   index.html#api=...&token=...&mode=probe&task=<id of an existing task>
// "flow" runs create, list, read the ETag, PATCH with If-Match, a stale If-Match, DELETE with
// If-Match, a 404 and a 422; "probe" tries a read and three writes once each, for a page whose
// origin the API does not allow. The page records what each call gave back, as the browser let
// it see it, in a table and as JSON in <pre id="results">; it judges nothing: the test does.

import createClient, { type Client } from "openapi-fetch";

import type { paths } from "./api";

/** What one call gave back, as far as the browser let the page see it. */
interface Step {
  step: string;
  request: string;
  outcome: "response" | "network-error";
  status?: number;
  headers?: Record<(typeof READ_HEADERS)[number], string | null>;
  body?: unknown;
  error?: { name: string; message: string };
}

/** Response headers the page reads: the API must expose the first three to other origins. */
const READ_HEADERS = ["etag", "location", "x-request-id", "content-type"] as const;

type Api = Client<paths>;

const fragment = new URLSearchParams(location.hash.slice(1));
const steps: Step[] = [];

function required(name: string): string {
  const value = fragment.get(name);
  if (!value) throw new Error(`the URL fragment has no ${name}=`);
  return value;
}

function element(id: string): HTMLElement {
  const found = document.getElementById(id);
  if (!found) throw new Error(`no #${id} on the page`);
  return found;
}

/** Send one request and record what came back; undefined when the fetch itself failed. */
async function call<R extends { response: Response; data?: unknown; error?: unknown }>(
  step: string,
  request: string,
  send: () => Promise<R>,
): Promise<R | undefined> {
  try {
    const result = await send();
    const { response } = result;
    const headers = Object.fromEntries(
      READ_HEADERS.map((name) => [name, response.headers.get(name)]),
    ) as Step["headers"];
    steps.push({
      step, request, outcome: "response", status: response.status, headers,
      body: result.data ?? result.error ?? null,
    });
    return result;
  } catch (thrown: unknown) {
    const error = thrown instanceof Error
      ? { name: thrown.name, message: thrown.message }
      : { name: typeof thrown, message: String(thrown) };
    steps.push({ step, request, outcome: "network-error", error });
    return undefined;
  } finally {
    render();
  }
}

// -- mode=flow: everything a frontend does with a task, from another origin ------------------------

async function flow(client: Api): Promise<string> {
  const created = await call("create", "POST /api/tasks", () =>
    client.POST("/api/tasks", {
      params: { header: { "Idempotency-Key": `browser-${Date.now()}-${Math.random()}` } },
      body: {
        title: "Written from another origin",
        description: "Created by the bundled client in Chromium",
        priority: "high",
        tags: ["browser", "cors"],
      },
    }));
  const task = created?.data?.data;
  if (!task) return "stopped: create failed";

  const second = await call("create second", "POST /api/tasks", () =>
    client.POST("/api/tasks", { body: { title: "Deleted from another origin" } }));
  const doomed = second?.data?.data;
  const doomedEtag = second?.response.headers.get("ETag");
  if (!doomed || !doomedEtag) return "stopped: second create failed or hid its ETag";

  await call("list", "GET /api/tasks?limit=10", () =>
    client.GET("/api/tasks", { params: { query: { limit: 10 } } }));

  const path = { task_id: task.id };
  const read = await call("read", "GET /api/tasks/{id}", () =>
    client.GET("/api/tasks/{task_id}", { params: { path } }));
  const etag = read?.response.headers.get("ETag");
  if (!etag) return "stopped: the ETag is not readable from this origin";

  await call("patch", `PATCH /api/tasks/{id} If-Match: ${etag}`, () =>
    client.PATCH("/api/tasks/{task_id}", {
      params: { path, header: { "If-Match": etag } },
      body: { title: "Patched from another origin", completed: true },
    }));

  await call("stale patch", `PATCH /api/tasks/{id} If-Match: ${etag}`, () =>
    client.PATCH("/api/tasks/{task_id}", {
      params: { path, header: { "If-Match": etag } },
      body: { title: "A lost update" },
    }));

  const doomedPath = { task_id: doomed.id };
  await call("delete", `DELETE /api/tasks/{id} If-Match: ${doomedEtag}`, () =>
    client.DELETE("/api/tasks/{task_id}", {
      params: { path: doomedPath, header: { "If-Match": doomedEtag } },
    }));

  await call("read deleted", "GET /api/tasks/{id}", () =>
    client.GET("/api/tasks/{task_id}", { params: { path: doomedPath } }));

  await call("invalid create", "POST /api/tasks {title: \"\"}", () =>
    client.POST("/api/tasks", { body: { title: "" } }));
  return `done: ${steps.length} calls`;
}

// -- mode=probe: the same calls from an origin the API does not allow -------------------------------

async function probe(client: Api): Promise<string> {
  const path = { task_id: required("task") };
  await call("list", "GET /api/tasks", () => client.GET("/api/tasks"));
  await call("create", "POST /api/tasks", () =>
    client.POST("/api/tasks", { body: { title: "Written by the probe" } }));
  await call("patch", "PATCH /api/tasks/{id} If-Match: \"1\"", () =>
    client.PATCH("/api/tasks/{task_id}", {
      params: { path, header: { "If-Match": '"1"' } },
      body: { title: "Changed by the probe" },
    }));
  await call("delete", "DELETE /api/tasks/{id} If-Match: \"1\"", () =>
    client.DELETE("/api/tasks/{task_id}", { params: { path, header: { "If-Match": '"1"' } } }));
  return `done: ${steps.length} calls`;
}

// -- rendering ---------------------------------------------------------------------------------------

function field(value: unknown, ...keys: string[]): unknown {
  let current = value;
  for (const key of keys) {
    if (typeof current !== "object" || current === null) return undefined;
    current = (current as Record<string, unknown>)[key];
  }
  return current;
}

/** One line a person can read: the error envelope's code and message, or the task. */
function describe(step: Step): string {
  if (step.outcome === "network-error") return `${step.error?.name}: ${step.error?.message}`;
  const code = field(step.body, "error", "code");
  if (typeof code === "string") {
    const details = field(step.body, "error", "details");
    const fields = Array.isArray(details) ? details.map((detail) => String(field(detail, "field"))) : [];
    const where = fields.length ? ` (${fields.join(", ")})` : "";
    return `${code}: ${String(field(step.body, "error", "message"))}${where}`;
  }
  const data = field(step.body, "data");
  const etag = step.headers?.etag ? `, ETag ${step.headers.etag}` : "";
  if (Array.isArray(data)) return `${data.length} tasks, total ${String(field(step.body, "meta", "total"))}`;
  if (data !== undefined) {
    const done = field(data, "completed") ? " (completed)" : "";
    return `"${String(field(data, "title"))}"${done}${etag}`;
  }
  return step.status === 204 ? "no body" : "";
}

function render(): void {
  const rows = steps.map((step) => {
    const row = document.createElement("tr");
    row.className = step.outcome === "network-error"
      ? "blocked"
      : step.status !== undefined && step.status < 400 ? "ok" : "error";
    const cells = [
      step.step, step.request,
      step.outcome === "network-error" ? "blocked" : String(step.status), describe(step),
    ];
    cells.forEach((text, index) => {
      const cell = document.createElement("td");
      const content = index === 1 ? cell.appendChild(document.createElement("code")) : cell;
      content.textContent = text;
      if (index === 2) cell.className = "status";
      row.append(cell);
    });
    return row;
  });
  element("steps").replaceChildren(...rows);
  element("results").textContent = JSON.stringify(
    { mode: fragment.get("mode"), page_origin: location.origin, api: fragment.get("api"), steps },
    null, 2,
  );
}

async function main(): Promise<void> {
  const apiUrl = required("api");
  const mode = required("mode");
  const client = createClient<paths>({
    baseUrl: apiUrl,
    headers: { Authorization: `Bearer ${required("token")}` },
  });
  element("page-origin").textContent = location.origin;
  element("api-origin").textContent = new URL(apiUrl).origin;
  element("mode").textContent = mode;
  const modes: Record<string, (client: Api) => Promise<string>> = { flow, probe };
  const run = modes[mode];
  if (!run) throw new Error(`unknown mode=${mode}`);
  element("summary").textContent = await run(client);
  document.body.dataset.state = "done";
}

main().catch((thrown: unknown) => {
  document.body.dataset.state = "failed";
  const summary = document.getElementById("summary");
  if (summary) summary.textContent = `the page failed: ${String(thrown)}`;
});
