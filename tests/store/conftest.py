"""The store implementations the contract suite runs against."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

import pytest

from gateway.store import SqliteStore, Store
from tests.store._mongodb import drop_databases, mongodb_store
from tests.store._mongodb import limits as mongodb_limits
from tests.store._postgres import drop_schemas, drop_shared_schema, postgresql_store


class ManualClock:
    """A clock the test moves by hand."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.now = start or dt.datetime(2026, 2, 17, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


def _sqlite(tmp_path, clock: Callable[[], dt.datetime]) -> Store:
    return SqliteStore(tmp_path / "store.db", clock=clock)


IMPLEMENTATIONS = {"sqlite": _sqlite, "postgresql": postgresql_store}
IMPLEMENTATIONS["mongodb"] = mongodb_store

# Contract tests an implementation is expected to fail where the suite runs
# it, by implementation: {test function: the reason}.
EXPECTED_FAILURES: dict[str, dict[str, str]] = {"mongodb": mongodb_limits()}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        implementation = callspec.params.get("make_store") if callspec else None
        reason = EXPECTED_FAILURES.get(implementation, {}).get(item.originalname)
        if reason:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))


@pytest.fixture(scope="session", autouse=True)
def _drop_shared_postgresql_schema() -> Iterator[None]:
    """The PostgreSQL schema the session's tests shared goes at the end."""
    yield
    drop_shared_schema()


@pytest.fixture(autouse=True)
def _drop_postgresql_schemas() -> Iterator[None]:
    """Each test's PostgreSQL schema goes (the shared one is emptied) once its stores
    are closed."""
    yield
    drop_schemas()


@pytest.fixture(autouse=True)
def _drop_mongodb_databases() -> Iterator[None]:
    """Each test's MongoDB database (or mongomock client) goes once its stores are closed."""
    yield
    drop_databases()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def make_store(request, tmp_path, clock) -> Iterator[Callable[[], Store]]:
    """Opens stores of one implementation on the same data; all closed afterwards."""
    opened: list[Store] = []

    def make() -> Store:
        store = IMPLEMENTATIONS[request.param](tmp_path, clock)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store) -> Store:
    return make_store()
