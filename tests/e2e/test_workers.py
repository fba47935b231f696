"""`cutover serve --workers N`: N processes on one port, refused without Redis."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

pytestmark = pytest.mark.e2e


def test_more_than_one_worker_needs_redis(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--workers", "2", "--jwt-secret", "x" * 32,
         "--store", f"sqlite:///{tmp_path}/w.db"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--workers 2 needs --redis-url" in result.stderr


def test_workers_share_one_port_and_stop_together(make_server):
    server = make_server("--workers", "2", "--redis-url", "redis://127.0.0.1:6379", "--grace-s", "3")
    nodes = set()
    for _ in range(40):
        with httpx.Client(timeout=10) as http:  # a new connection each time
            nodes.add(http.get(f"{server.url}/healthz").json()["node"])
        if len(nodes) == 2:
            break
    assert len(nodes) == 2, nodes
    assert all(node.endswith(("-w0", "-w1")) for node in nodes)
    server.signal()
    assert server.wait(15) == 0
