"""A domain over a real store, SQLite and PostgreSQL in turn, with a clock that ticks
one millisecond per reading."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from gateway.domain import Domain, Viewer
from gateway.store import SqliteStore, Store
from tests.store._postgres import drop_schemas, drop_shared_schema, postgresql_store


class TickingClock:
    """Each reading is one millisecond after the previous one."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 2, 17, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(milliseconds=1)
        return self.now


@pytest.fixture(scope="session", autouse=True)
def _drop_shared_postgresql_schema() -> Iterator[None]:
    """The PostgreSQL schema the session's tests shared goes at the end."""
    yield
    drop_shared_schema()


@pytest.fixture
def clock() -> TickingClock:
    return TickingClock()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path, clock) -> Iterator[Store]:
    if request.param == "postgresql":
        store = postgresql_store(tmp_path, clock)
    else:
        store = SqliteStore(tmp_path / "domain.db", clock=clock)
    yield store
    store.close()
    drop_schemas()


@pytest.fixture
def domain(store, clock) -> Domain:
    return Domain(store, clock=clock)


@pytest.fixture
def alice() -> Viewer:
    return Viewer("alice", name="Alice")


@pytest.fixture
def bob() -> Viewer:
    return Viewer("bob", name="Bob")


@pytest.fixture
def carol() -> Viewer:
    return Viewer("carol")


@pytest.fixture
def admin() -> Viewer:
    return Viewer("ops", scopes=frozenset({"admin"}))


def by_user(outcome) -> dict[str, list[tuple[str, dict]]]:
    """An outcome's durable events grouped per recipient: (type, payload) in order."""
    grouped: dict[str, list[tuple[str, dict]]] = {}
    for event in outcome.events:
        grouped.setdefault(event.user_id, []).append((event.type, event.payload))
    return grouped


def types_for(outcome, user_id: str) -> list[str]:
    return [event.type for event in outcome.events if event.user_id == user_id]


def assert_streams_contiguous(store: Store, *user_ids: str) -> None:
    """Every user's stream holds seq 1..head with no gap, in order."""
    for user_id in user_ids:
        head = store.stream_position(user_id).seq
        assert [e.seq for e in store.events_after(user_id, 0)] == list(range(1, head + 1))
