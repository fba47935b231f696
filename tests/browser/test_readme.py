"""Every snippet of the README runs as written.

The shell snippets (fenced `sh`) run with bash against a demo node started the
way the README starts it, `make demo`, with the two changes a test needs: a
free port (`make demo PORT=...`, and `127.0.0.1:<port>` for `127.0.0.1:8080`
in the snippets) and `make -n test` for `make test` (the suite cannot run
itself). The sections about a cluster need PostgreSQL, Redis and nginx; the
chaos tests (`tests/chaos`) run those steps. The browser snippet (fenced `js`)
runs as a module script in Chromium on a page of the same node.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.browser.proxy import free_port

pytestmark = pytest.mark.e2e  # real processes: a node, `make demo`, Chromium

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
ELSEWHERE = {
    "Running many nodes": "tests/chaos",
    "Three nodes behind nginx, step by step": "tests/chaos",
}


def snippets(language: str) -> list[tuple[str, str]]:
    """(heading, text) of every fenced block of `language`, in order."""
    heading, out, block, lang = "", [], None, None
    for line in README.read_text("utf-8").splitlines():
        if block is None:
            if match := re.match(r"^#{1,6} (.+)$", line):
                heading = match.group(1).strip()
            elif match := re.match(r"^```(\S*)\s*$", line):
                block, lang = [], match.group(1)
        elif line.startswith("```"):
            if lang == language:
                out.append((heading, "\n".join(block) + "\n"))
            block = None
        else:
            block.append(line)
    return out


def for_this_node(text: str, port: int) -> str:
    lines = []
    for line in text.splitlines():
        command = line.split("#", 1)[0].strip()
        if command == "make demo":
            continue  # the node under test, started by the fixture exactly so
        if command == "make test":
            line = line.replace("make test", "make -n test", 1)
        lines.append(line.replace("127.0.0.1:8080", f"127.0.0.1:{port}"))
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def demo():
    """`make demo PORT=<free port>` from the repository, as a newcomer runs it."""
    port = free_port()
    process = subprocess.Popen(
        ["make", "demo", f"PORT={port}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("CUTOVER_")},
    )
    deadline = time.monotonic() + 600  # `make demo` first sets up .venv when it is stale
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"make demo did not serve: {process.stdout.read()}")
            time.sleep(0.2)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def test_the_readme_has_the_snippets_a_newcomer_runs():
    headings = [heading for heading, _ in snippets("sh")]
    assert headings[0] == "Cutover" and "A first look" in headings
    assert len(snippets("js")) == 1


def test_every_shell_snippet_runs_as_written(demo):
    ran = 0
    for heading, text in snippets("sh"):
        if heading in ELSEWHERE:
            continue
        script = for_this_node(text, demo)
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        where = f"README, {heading}:\n{text}"
        assert result.returncode == 0, f"{where}\nstdout: {result.stdout}\nstderr: {result.stderr}"
        for line in result.stdout.splitlines():
            if line.startswith("{"):
                answer = json.loads(line)
                assert "errors" not in answer and "error" not in answer, (where, answer)
        print(f"\n[{heading}] ran; it printed: {result.stdout.strip()[:300]}")
        ran += 1
    assert ran >= 4


def test_the_browser_snippet_runs_as_written(chromium, demo):
    [(_, snippet)] = snippets("js")
    page = chromium.page(chromium.context(), f"http://127.0.0.1:{demo}/healthz")
    page.module(snippet.replace("127.0.0.1:8080", f"127.0.0.1:{demo}"))
    deadline = time.monotonic() + 20
    while True:
        logs = page.logs()
        printed = [line.removeprefix("log: ") for line in logs["console"]]
        if any(line.startswith("server time:") for line in printed) or logs["errors"]:
            break
        assert time.monotonic() < deadline, printed
        time.sleep(0.1)
    assert not logs["errors"], logs["errors"]
    assert "status: online" in printed
    unread = next(line for line in printed if line.startswith("unread notifications:"))
    assert int(unread.split(":")[1]) >= 1
    print(f"\nthe README's browser snippet printed: {printed}")
