"""CORS in a real browser: a page on another origin imports the SDK from the node,
and the SDK's preflighted requests (tickets, GraphQL, beacons) and its socket work
for an allowed origin; for any other origin the browser keeps the answers from
the page, so the client never gets online."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.browser.conftest import DemoNode
from tests.browser.proxy import free_port

pytestmark = pytest.mark.e2e  # a node and Chromium

PAGE = b"<!doctype html><title>another app</title><p>an app on its own origin</p>"


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def other_origins():
    """Two static sites on their own ports: two origins other than the node's."""
    servers = [ThreadingHTTPServer(("127.0.0.1", free_port()), _Page) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield [f"http://127.0.0.1:{server.server_address[1]}" for server in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


def app_script(node, token: str) -> str:
    return f"""
import {{ createClient }} from "{node.url}/client/cutover.js";
window.client = createClient({{
  graphqlUrl: "{node.url}/graphql",
  getToken: async () => {json.dumps(token)},
  shareTabs: false,
}});
window.client.on("error", (e) => (window.errors = [...(window.errors || []), String(e.message)]));
window.client.start();
"""


def test_a_page_on_an_allowed_origin_uses_the_node_and_another_origin_cannot(
    chromium, tmp_path, other_origins
):
    allowed, foreign = other_origins
    node = DemoNode(tmp_path, extra_args=["--allowed-origins", allowed])
    node.seed()
    node.start()
    try:
        page = chromium.page(chromium.context(), f"{allowed}/")
        page.module(app_script(node, node.token("alice", ttl_s=600)))
        page.wait("window.client && window.client.status === 'online'", timeout=20)
        [socket] = page.sockets()
        assert socket["status"] == 101
        unread = page.eval("window.client.state.notifications.unread")
        assert unread == node.gql("alice", "{ unreadNotificationCount }")["unreadNotificationCount"]
        pong = page.eval("window.client.request('ping').then((p) => p.serverTime)")
        assert pong.endswith("Z")

        stranger = chromium.page(chromium.context(), f"{foreign}/")
        stranger.module(app_script(node, node.token("bob", ttl_s=600)))
        stranger.wait("(window.errors || []).length > 0", timeout=20)
        assert stranger.eval("window.client.status") != "online"
        assert stranger.sockets() == [], "no snapshot, so no ticket and no socket"
        print(
            f"\nfrom {allowed}: online, {unread} unread, ping {pong}; "
            f"from {foreign}: {stranger.eval('window.errors[0]')}"
        )
    finally:
        node.stop()
