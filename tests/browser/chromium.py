"""Headless Chromium for the browser tests: `bridge.mjs` (playwright-core) driven over
a pipe, one JSON request and one JSON answer per line."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))


def missing() -> str | None:
    """What this machine lacks to run the browser tests (`make test` installs it), or None."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (make test runs apt-get install -y chromium)"
    if shutil.which("node") is None:
        return "node is missing"
    if not (HERE / "node_modules" / "playwright-core").is_dir():
        return "tests/browser/node_modules is missing (make test runs npm ci there)"
    return None


class BrowserError(RuntimeError):
    """The bridge refused or failed a request (a timeout waiting for the page, ...)."""


class Chromium:
    """One Chromium process; contexts are isolated browsers (one user each), pages are tabs."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            ["node", str(HERE / "bridge.mjs")],
            cwd=HERE,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "CHROMIUM": str(CHROMIUM)},
        )
        self._answers: queue.Queue[dict] = queue.Queue()
        self._serial = 0
        self._lock = threading.Lock()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip():
                self._answers.put(json.loads(line))
        self._answers.put({"id": None, "ok": False, "error": "the bridge exited"})

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)

    def call(self, op: str, timeout: float = 60.0, **params: Any) -> Any:
        with self._lock:
            self._serial += 1
            request = {"id": self._serial, "op": op, **params}
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            try:
                answer = self._answers.get(timeout=timeout)
            except queue.Empty:
                raise BrowserError(f"{op}: no answer in {timeout} s") from None
            if answer["id"] != request["id"]:
                raise BrowserError(f"{op}: {answer.get('error')}\n{''.join(self.stderr[-20:])}")
            if not answer["ok"]:
                raise BrowserError(f"{op}: {answer['error']}")
            return answer["result"]

    def context(self) -> str:
        return self.call("context")["context"]

    def page(self, context: str, url: str) -> Page:
        return Page(self, self.call("page", context=context, url=url)["page"])

    def quit(self) -> None:
        try:
            self.call("quit", timeout=20)
        except BrowserError:
            pass
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


class Page:
    """A tab: evaluate JavaScript in it, wait for a condition, read its WebSockets."""

    def __init__(self, browser: Chromium, page_id: str) -> None:
        self.browser = browser
        self.id = page_id

    def eval(self, expr: str) -> Any:
        return self.browser.call("eval", page=self.id, expr=expr)

    def wait(self, expr: str, timeout: float = 10.0) -> Any:
        """The first truthy value of `expr`, polled every 20 ms; BrowserError after `timeout`."""
        return self.browser.call(
            "wait", timeout=timeout + 10, page=self.id, expr=expr, timeoutMs=int(timeout * 1000)
        )

    def fill(self, selector: str, text: str) -> None:
        self.browser.call("fill", page=self.id, selector=selector, text=text)

    def click(self, selector: str) -> None:
        self.browser.call("click", page=self.id, selector=selector)

    def module(self, code: str) -> None:
        """Run `code` as a module script of the page (top-level await allowed)."""
        self.browser.call("module", page=self.id, code=code)

    def screenshot(self, path: Path, *, full_page: bool = False) -> Path:
        self.browser.call("screenshot", page=self.id, path=str(path), fullPage=full_page)
        return path

    def sockets(self) -> list[dict]:
        return self.browser.call("sockets", page=self.id)

    def logs(self) -> dict:
        return self.browser.call("logs", page=self.id)

    def close(self) -> None:
        self.browser.call("close", page=self.id)
