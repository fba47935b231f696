"""A store that cannot serve the request answers 503 (retry later), not 200."""

from __future__ import annotations

import pytest

from gateway.domain import Domain, Viewer
from gateway.errors import StoreUnavailable
from gateway.graphql import RequestContext, execute_request
from gateway.store import open_store

ADMIN = Viewer("ops", scopes=frozenset({"admin"}))


@pytest.fixture
def domain(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/g.db")
    yield Domain(store)
    store.close()


def test_a_mutation_the_store_cannot_take_answers_503_with_the_error(domain, monkeypatch):
    def unavailable(*_args, **_kwargs):
        raise StoreUnavailable("the store is unavailable: no connection in time")

    monkeypatch.setattr(domain, "create_notification", unavailable)
    ctx = RequestContext(viewer=ADMIN, domain=domain, realtime_config=lambda uid: {})
    status, body = execute_request(
        {"query": 'mutation { createNotification(userId: "bob", kind: "k", text: "t") { id } }'},
        ctx,
    )
    assert status == 503
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "UNAVAILABLE"
