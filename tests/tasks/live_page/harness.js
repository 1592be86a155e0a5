// The test's handles on a page (tests/tasks/test_live_browser.py evaluates these): as page A,
// write through the API with fetch and say when each answer arrived; as page B, keep a copy
// with live_sync.js and say when each change was applied. Times are performance.timeOrigin +
// performance.now(): one clock for both pages of the browser, in milliseconds.

import { keepInStep } from "./live_sync.js";

const now = () => performance.timeOrigin + performance.now();

let config = null;

// Page A: one API call; `at` is when fetch resolved (the server had answered, so committed).
async function call(method, path, body) {
  const headers = { Authorization: `Bearer ${config.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(`${config.api}${path}`, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const at = now();
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null, at };
}

// Page B: the copy, every event in order, and when each task's state (id -> version, or
// null once deleted) was applied.
const live = {
  tasks: new Map(),
  events: [],
  applied: {},
  sync: null,
  waiters: [],
  start() {
    this.sync = keepInStep({
      api: config.api, getToken: async () => config.token, tasks: this.tasks,
      lastEventId: localStorage.getItem("lastEventId"),
      onEvent: (event) => this.record(event),
    });
  },
  record(event) {
    const at = now();
    const entry = { type: event.type, id: event.id, at, tasks: [], deleted: [] };
    if (event.type === "changes") {
      const { tasks, deleted } = JSON.parse(event.data);
      for (const task of tasks) this.applied[`${task.id} ${task.version}`] = at;
      for (const tombstone of deleted) this.applied[`${tombstone.id} deleted`] = at;
      entry.tasks = tasks.map((task) => [task.id, task.version]);
      entry.deleted = deleted.map((tombstone) => tombstone.id);
    }
    this.events.push(entry);
    this.waiters = this.waiters.filter((waiter) => !waiter());
  },
  // Resolves once check() is true, checked again after every event: no polling.
  until(check) {
    return new Promise((resolve) => {
      const waiter = () => check() && (resolve(true), true);
      if (!waiter()) this.waiters.push(waiter);
    });
  },
  // When B applied this task at this version ("deleted": its tombstone), or undefined.
  appliedAt(id, version) {
    return this.applied[`${id} ${version}`];
  },
  copy() {
    return [...this.tasks.values()];
  },
};

window.harness = {
  configure(api, token) {
    config = { api, token };
  },
  call,
  live,
};
