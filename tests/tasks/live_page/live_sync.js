// Keep a local copy of the signed-in user's tasks in step with the API's live stream
// (GET /api/tasks/events, Server-Sent Events). Read with fetch, not EventSource: EventSource
// cannot send the Authorization header, and a token never goes in a URL.
//
//   const tasks = new Map();  // task id -> task, as the API returns it
//   const sync = keepInStep({
//     api: "https://tasks.example.com",
//     getToken: async () => (await authClient.token()).data.token,  // a fresh JWT per connect
//     tasks,
//     lastEventId: localStorage.getItem("lastEventId"),
//   });
//   ...
//   await sync.stop();        // e.g. when the user signs out
//
// Every event's id is a sync token: remember the last one, and a reconnect (Last-Event-ID)
// resumes exactly there, missing nothing.

export function keepInStep({ api, getToken, tasks, lastEventId = null, onEvent = () => {} }) {
  const controller = new AbortController();
  let retryMs = 3000; // until the server's `retry:` line says otherwise

  function apply(event) {
    if (event.type === "changes") {
      const { tasks: changed, deleted } = JSON.parse(event.data);
      for (const task of changed) tasks.set(task.id, task); // created or updated: whole
      for (const tombstone of deleted) tasks.delete(tombstone.id);
    }
    lastEventId = event.id;
    localStorage.setItem("lastEventId", lastEventId); // survives a reload or going offline
    onEvent(event);
  }

  async function connect() {
    const headers = { Authorization: `Bearer ${await getToken()}` };
    if (lastEventId) headers["Last-Event-ID"] = lastEventId;
    const response = await fetch(`${api}/api/tasks/events`, { headers, signal: controller.signal });
    if (response.status === 410 || response.status === 422) {
      // 410: the token is older than the server keeps deletions; 422: it is not this user's.
      // Start over from everything.
      tasks.clear();
      lastEventId = null;
      return connect();
    }
    if (!response.ok) throw new Error(`stream refused: ${response.status}`);
    await readEvents(response.body, apply, (ms) => (retryMs = ms));
  }

  const running = (async () => {
    while (!controller.signal.aborted) {
      try {
        await connect(); // returns when the server ends the stream (e.g. it restarts)
      } catch (error) {
        if (controller.signal.aborted) break;
        console.warn("stream lost, reconnecting:", error);
      }
      await new Promise((resume) => {
        setTimeout(resume, retryMs);
        controller.signal.addEventListener("abort", resume);
      });
    }
  })();
  async function stop() {
    controller.abort();
    await running; // the stream is closed when this resolves
  }
  return { stop };
}

// A small Server-Sent Events parser for a fetch body: calls onEvent({type, data, id}) for
// each event and onRetry(ms) for a `retry:` line; comments (": heartbeat") are skipped.
async function readEvents(body, onEvent, onRetry) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { type: "message", data: [], id: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const lines = buffer.split(/\r?\n/);
    buffer = lines.pop(); // an unfinished line waits for the next chunk
    for (const line of lines) {
      if (line === "") { // a blank line ends an event
        if (event.data.length) onEvent({ ...event, data: event.data.join("\n") });
        event = { type: "message", data: [], id: event.id };
        continue;
      }
      if (line.startsWith(":")) continue;
      const [, field, value] = line.match(/^([^:]*):? ?(.*)$/);
      if (field === "event") event.type = value;
      else if (field === "data") event.data.push(value);
      else if (field === "id") event.id = value;
      else if (field === "retry" && /^\d+$/.test(value)) onRetry(Number(value));
    }
  }
}
