"""A real node for the browser tests, and one headless Chromium for the whole run.

The node is `cutover serve` with permessage-deflate on (browsers offer it),
the demo page, every poll compared (`--parity-sample-rate 1`), polling every
second (a rollout file: chat, notifications, events and presence LIVE, follow
requests in SHADOW) and the push path behind `PushProxy`, on a fixed port so
it can be killed and started again where the pages expect it. Its store is
seeded with the demo's world (alice, bob, carol, dave).
"""

from __future__ import annotations

import signal
from pathlib import Path

import attrs
import httpx
import pytest

from gateway.auth import mint_token
from gateway.demo import seed
from gateway.domain import Domain
from gateway.store import open_store
from tests.browser.chromium import Chromium, missing
from tests.browser.proxy import PushProxy, free_port
from tests.e2e.server import SECRET, ServerProcess

ROLLOUT = """\
[defaults]
poll_interval_ms = 1000

[domains.chat]
stage = "LIVE"

[domains.notification]
stage = "LIVE"

[domains.event]
stage = "LIVE"

[domains.presence]
stage = "LIVE"

[domains.follow]
stage = "SHADOW"

[domains.organization]
stage = "SHADOW"

[domains.activity]
stage = "SHADOW"
"""


@attrs.define
class DemoNode:
    """One `cutover serve` of the demo's world; `kill` and `start` keep its port and store."""

    workdir: Path
    port: int = attrs.Factory(free_port)
    proxy: PushProxy | None = None
    process: ServerProcess | None = None
    ids: dict[str, str] = attrs.Factory(dict)
    extra_args: list[str] = attrs.Factory(list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def seed(self) -> None:
        store = open_store(f"sqlite:///{self.workdir / 'cutover.db'}")
        try:
            self.ids = seed(Domain(store))
        finally:
            store.close()

    def start(self) -> DemoNode:
        if self.proxy is None:
            self.proxy = PushProxy(self.port).start()
        (self.workdir / "rollout.toml").write_text(ROLLOUT)
        args = [
            "--bind", f"127.0.0.1:{self.port}",
            "--ws-compression", "on",
            "--demo-page",
            "--flags", str(self.workdir / "rollout.toml"),
            "--parity-sample-rate", "1",
            "--parity-beacons-per-minute", "30",
            "--websocket-url", self.proxy.url,
            *self.extra_args,
        ]  # fmt: skip
        self.process = ServerProcess(self.workdir, args).start()
        return self

    def kill(self) -> None:
        """SIGKILL: no reconnect hint, no close frame; sockets just break."""
        assert self.process is not None and self.process.process is not None
        self.process.process.send_signal(signal.SIGKILL)
        self.process.process.wait(10)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        if self.proxy is not None:
            self.proxy.stop()

    def token(self, user: str, **kwargs) -> str:
        return mint_token(SECRET, user, **kwargs)

    def gql(self, user: str, query: str, variables: dict | None = None, **token) -> dict:
        response = httpx.post(
            f"{self.url}/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {self.token(user, **token)}"},
            timeout=30,
        )
        body = response.json()
        assert response.status_code == 200 and "errors" not in body, body
        return body["data"]

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=30).text

    def page_url(self, user: str, **params: object) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"user": user, **params}.items())
        return f"{self.url}/demo?{query}"


@pytest.fixture(scope="session")
def chromium():
    reason = missing()
    if reason is not None:
        pytest.fail(f"the browser tests need Chromium and playwright-core: {reason}")
    browser = Chromium()
    yield browser
    browser.quit()


@pytest.fixture
def node(tmp_path):
    demo = DemoNode(tmp_path)
    demo.seed()
    demo.start()
    yield demo
    demo.stop()
