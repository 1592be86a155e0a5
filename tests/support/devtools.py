"""Headless Chromium driven live over the DevTools protocol, for browser tests that must act
while a page runs (a stream open, two pages at once) rather than read the page when it is done
(tests/support/chromium.py's --dump-dom runs, whose virtual time never ends while a stream is
open). The protocol goes over a pipe (--remote-debugging-pipe: commands on fd 3, answers and
events on fd 4, each JSON message ended by a NUL byte), so there is no debugging port to find or
to leave open, and nothing to install: no browser driver, no websocket client.

Each page is its own tab with its own session; evaluate() runs an expression in it and returns
its value, awaiting it when it is a promise."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tests.support.chromium import BASE_FLAGS, NO_NETWORK_FLAGS, find_chromium

# Puppeteer's defaults: a tab that is not in front keeps its timers and its renderer at full
# speed, so two pages side by side behave like two windows of their own.
FOREGROUND_FLAGS = (
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--disable-renderer-backgrounding",
)
# Runs in the child before Chromium: puts our two pipe ends on fds 3 and 4, where
# --remote-debugging-pipe expects them (subprocess can pass fds, not renumber them). Copied away
# first, as either may already be 3 or 4; then made inheritable, as dup2 onto itself keeps the
# close-on-exec flag that os.dup set.
_ON_FDS_3_AND_4 = (
    "import os, sys; r, w = os.dup(int(sys.argv[1])), os.dup(int(sys.argv[2])); "
    "os.dup2(r, 3); os.dup2(w, 4); os.set_inheritable(3, True); os.set_inheritable(4, True); "
    "os.closerange(5, 1024); os.execv(sys.argv[3], sys.argv[3:])"
)
MESSAGE_LIMIT = 64 * 1024 * 1024  # a page's whole copy of the tasks comes back in one message


class PageError(AssertionError):
    """An exception thrown in the page, with what the page logged before it."""


class Page:
    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session
        self.console: list[str] = []  # console messages and uncaught exceptions, for failures
        self.loaded = asyncio.Event()

    async def evaluate(self, expression: str, timeout: float = 30) -> Any:
        answer = await self.browser.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session=self.session, timeout=timeout,
        )
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            thrown = details.get("exception", {}).get("description") or details.get("text")
            raise PageError(f"{expression!r} threw in the page: {thrown}\n"
                            + "\n".join(self.console[-30:]))
        return answer["result"].get("value")


class Browser:
    def __init__(self, process: asyncio.subprocess.Process, reader: asyncio.StreamReader,
                 writer: asyncio.WriteTransport) -> None:
        self.process = process
        self.reader = reader
        self.writer = writer
        self.next_id = 0
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.pages: dict[str, Page] = {}
        self.listener = asyncio.ensure_future(self._listen())

    async def send(self, method: str, params: dict[str, Any] | None = None,
                   session: str | None = None, timeout: float = 30) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        answer = self.waiting[self.next_id] = asyncio.get_running_loop().create_future()
        self.writer.write(json.dumps(message).encode() + b"\0")
        try:
            reply = await asyncio.wait_for(answer, timeout)
        finally:
            self.waiting.pop(message["id"], None)
        if "error" in reply:
            raise RuntimeError(f"DevTools {method}: {reply['error']}")
        result: dict[str, Any] = reply["result"]
        return result

    async def _listen(self) -> None:
        while True:
            try:
                raw = await self.reader.readuntil(b"\0")
            except (asyncio.IncompleteReadError, ConnectionError):
                failure = ConnectionError(f"Chromium closed its pipe (exit {self.process.returncode})")
                for answer in self.waiting.values():
                    if not answer.done():
                        answer.set_exception(failure)
                return
            message = json.loads(raw[:-1])
            if "id" in message:
                waiting = self.waiting.get(message["id"])
                if waiting is not None and not waiting.done():
                    waiting.set_result(message)
                continue
            page = self.pages.get(message.get("sessionId", ""))
            if page is None:
                continue
            params = message.get("params", {})
            if message["method"] == "Page.loadEventFired":
                page.loaded.set()
            elif message["method"] == "Runtime.consoleAPICalled":
                text = " ".join(str(arg.get("value", arg.get("description")))
                                for arg in params.get("args", []))
                page.console.append(f"console.{params.get('type')}: {text}")
            elif message["method"] == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                page.console.append("uncaught: " + str(
                    details.get("exception", {}).get("description") or details.get("text")))

    async def open_page(self, url: str, timeout: float = 60) -> Page:
        """A new tab at `url`, once its load event has fired."""
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        page = self.pages[attached["sessionId"]] = Page(self, attached["sessionId"])
        await self.send("Page.enable", session=page.session)
        await self.send("Runtime.enable", session=page.session)
        await self.send("Page.navigate", {"url": url}, session=page.session)
        await asyncio.wait_for(page.loaded.wait(), timeout)
        return page


@asynccontextmanager
async def chromium(*args: str) -> AsyncIterator[Browser]:
    """Headless Chromium with a fresh profile and no network beyond loopback; closed (its whole
    process group) on the way out."""
    binary = find_chromium()
    commands_read, commands_write = os.pipe()
    events_read, events_write = os.pipe()
    with tempfile.TemporaryDirectory(prefix="task-api-chromium-") as profile:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _ON_FDS_3_AND_4, str(commands_read), str(events_write),
            binary, *BASE_FLAGS, *NO_NETWORK_FLAGS, *FOREGROUND_FLAGS,
            f"--user-data-dir={profile}", "--remote-debugging-pipe", *args, "about:blank",
            pass_fds=(commands_read, events_write), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        os.close(commands_read)
        os.close(events_write)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=MESSAGE_LIMIT)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(events_read, "rb", 0))
        writer, _ = await loop.connect_write_pipe(
            asyncio.Protocol, os.fdopen(commands_write, "wb", 0))
        browser = Browser(process, reader, writer)
        try:
            await browser.send("Target.setDiscoverTargets", {"discover": False}, timeout=60)
            yield browser
        finally:
            with contextlib.suppress(Exception):
                await browser.send("Browser.close", timeout=10)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # its renderers, if it hung
            await process.wait()
            browser.listener.cancel()
            writer.close()
