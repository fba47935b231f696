"""The GraphQL executor without HTTP: one snapshot per polling request, errors, cursor first."""

from __future__ import annotations

import threading

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


def ctx(domain, user):
    return RequestContext(viewer=Viewer(user), domain=domain, realtime_config=lambda uid: {})


def test_a_polling_request_reads_one_snapshot(domain):
    bob = Viewer("bob")
    conv = domain.create_conversation(bob, ["alice"]).value["id"]
    domain.send_chat_message(bob, conv, "one")
    written = threading.Event()

    def write_between_fields(_root, info, **_args):
        # A concurrent writer commits after the badge was read and before the list is.
        thread = threading.Thread(
            target=lambda: (domain.send_chat_message(bob, conv, "two"), written.set())
        )
        thread.start()
        thread.join()
        return info.context.domain.conversations(info.context.viewer)

    from gateway.graphql.schema import polling_schema

    field = polling_schema().query_type.fields["conversations"]
    original = field.resolve
    field.resolve = write_between_fields
    try:
        status, body = execute_request(
            {"query": "{ chatUnreadCount conversations { unreadCount } }"}, ctx(domain, "alice")
        )
    finally:
        field.resolve = original
    assert written.is_set() and status == 200
    data = body["data"]
    assert data["chatUnreadCount"] == sum(c["unreadCount"] for c in data["conversations"]) == 1


def test_realtime_cursor_is_read_before_other_fields(domain):
    domain.create_notification(ADMIN, "alice", "K", "t")
    status, body = execute_request(
        {"query": "{ unreadNotificationCount realtimeCursor { seq } }"}, ctx(domain, "alice")
    )
    assert status == 200 and body["data"]["realtimeCursor"]["seq"] == 1


def test_bad_requests_name_the_problem(domain):
    assert execute_request({"nope": 1}, ctx(domain, "a"))[0] == 400
    status, body = execute_request({"query": "{ noSuchField }"}, ctx(domain, "a"))
    assert status == 400 and "noSuchField" in body["errors"][0]["message"]
    status, body = execute_request({"query": '{ conversation(id: "x") { id } }'}, ctx(domain, "a"))
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"


def _polls(domain_name: str) -> float:
    from ops import metrics

    return (
        metrics.REGISTRY.get_sample_value("cutover_poll_requests_total", {"domain": domain_name})
        or 0.0
    )


def test_polling_requests_count_each_domain_once_and_mutations_not_at_all(domain):
    before = {d: _polls(d) for d in ("chat", "notification", "event")}
    query = "{ chatUnreadCount conversations { id } unreadNotificationCount }"
    assert execute_request({"query": query}, ctx(domain, "alice"))[0] == 200
    mutation = 'mutation { createEvent(title: "E", startsAt: "2031-01-01T00:00:00.000Z") { id } }'
    assert execute_request({"query": mutation}, ctx(domain, "alice"))[0] == 200
    assert _polls("chat") == before["chat"] + 1
    assert _polls("notification") == before["notification"] + 1
    assert _polls("event") == before["event"]


def test_a_mutation_the_store_cannot_take_answers_503_with_the_error(domain, monkeypatch):
    def unavailable(*_args, **_kwargs):
        raise StoreUnavailable("the store is unavailable: no connection in time")

    monkeypatch.setattr(domain, "create_notification", unavailable)
    admin = RequestContext(viewer=ADMIN, domain=domain, realtime_config=lambda uid: {})
    status, body = execute_request(
        {"query": 'mutation { createNotification(userId: "bob", kind: "k", text: "t") { id } }'},
        admin,
    )
    assert status == 503
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "UNAVAILABLE"
