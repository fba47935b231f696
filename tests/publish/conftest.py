"""A publish API over a real SQLite store, the example registry and a recording fan-out."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs
import pytest

from gateway.auth import AuthConfig, Authenticator, mint_token
from gateway.events import Ephemeral, StoredEvent
from gateway.publish_api import PublishApi
from gateway.registry import Registry, load_registry
from gateway.store import Store, open_store

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "registry"
SECRET = "publish-tests-secret-0123456789abcdef"
API_KEY = "pk_test_0123456789abcdef"


@attrs.define
class FanOut:
    """Records what the API handed to the hub."""

    calls: list[tuple[list[StoredEvent], list[Ephemeral]]] = attrs.Factory(list)

    async def __call__(self, events: Sequence[StoredEvent], ephemeral: Sequence[Ephemeral]) -> None:
        self.calls.append((list(events), list(ephemeral)))

    @property
    def events(self) -> list[StoredEvent]:
        return [event for events, _ in self.calls for event in events]

    @property
    def ephemeral(self) -> list[Ephemeral]:
        return [event for _, ephemeral in self.calls for event in ephemeral]


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="session")
def registry() -> Registry:
    return load_registry([EXAMPLES])


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path}/t.db")
    yield opened
    opened.close()


@pytest.fixture
def fanout() -> FanOut:
    return FanOut()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def api(store, fanout, registry, clock) -> PublishApi:
    authenticator = Authenticator(AuthConfig(secret=SECRET))
    return PublishApi(store, fanout, lambda: registry, authenticator, [API_KEY], clock=clock)


def token(user: str, **kwargs) -> str:
    return mint_token(SECRET, user, **kwargs)


# -- a real `cutover serve` with the example registry (end-to-end and client tests) --

E2E_API_KEY = "pk_e2e_0123456789abcdef"


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    from tests.e2e.server import ServerProcess

    node = ServerProcess(
        tmp_path_factory.mktemp("publish-node"),
        args=["--registry", str(EXAMPLES), "--publish-api-keys", E2E_API_KEY],
        env={"PYTHONPATH": str(ROOT)},
    ).start()
    try:
        yield node
    finally:
        node.stop()
