"""`conversations` reads only the fields its selection names, and answers exactly
as when it reads them all."""

from __future__ import annotations

import pytest

from gateway.domain import Domain, Viewer
from gateway.graphql import RequestContext, execute_request
from gateway.graphql import schema as schema_module
from gateway.store import open_store

POLL = "{ unreadNotificationCount conversations { id unreadCount lastMessage { id body } } }"


@pytest.fixture
def domain(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    domain = Domain(store)
    alice, bob = Viewer("alice"), Viewer("bob")
    first = domain.create_conversation(alice, ["bob", "carol"]).value["id"]
    sent = domain.send_chat_message(bob, first, "hello").value
    domain.mark_delivered(alice, first, [sent["id"]])
    domain.mark_conversation_read(alice, first, sent["id"])
    domain.send_chat_message(bob, first, "again")
    domain.create_conversation(bob, ["alice"])
    yield domain
    store.close()


def run(domain, query: str, variables: dict | None = None):
    ctx = RequestContext(viewer=Viewer("alice"), domain=domain, realtime_config=lambda uid: {})
    return execute_request({"query": query, "variables": variables}, ctx)


QUERIES = [
    POLL,
    "{ conversations { id participantIds lastReadMessageId updatedAt unreadCount"
    " lastMessage { id conversationId senderId body createdAt clientMessageId deliveredTo readBy } } }",
    "{ conversations(first: 1) { n: unreadCount last: lastMessage { who: readBy id } } }",
    "{ conversations { __typename id lastMessage { __typename deliveredTo } } }",
    "{ conversations { ...C } } fragment C on Conversation { id participantIds }",
    "{ conversations { id lastMessage { ... on Message { readBy } } } }",
    "{ conversations { id ... on Conversation { lastReadMessageId } } }",
    "{ a: conversations { id } b: conversations { lastMessage { deliveredTo } } }",
    "{ conversations { id } conversations { unreadCount } }",
    "query($x: Boolean!) { conversations { id participantIds @include(if: $x) } }",
]


@pytest.mark.parametrize("query", QUERIES)
def test_a_selective_read_answers_as_a_full_one(domain, monkeypatch, query):
    variables = {"x": True} if "$x" in query else None
    selective = run(domain, query, variables)
    monkeypatch.setattr(schema_module, "_selected", lambda info: None)
    full = run(domain, query, variables)
    assert selective == full and selective[0] == 200 and "errors" not in selective[1]


def test_the_poll_asks_the_domain_for_its_fields_only(domain, monkeypatch):
    asked = []
    original = domain.conversations

    def conversations(viewer, first=50, fields=None):
        asked.append(fields)
        return original(viewer, first, fields)

    monkeypatch.setattr(domain, "conversations", conversations)
    assert run(domain, POLL)[0] == 200
    run(domain, "{ conversations { ...C } } fragment C on Conversation { id }")
    run(domain, "{ conversations { id lastMessage { ... on Message { id } } } }")
    assert asked == [
        frozenset({"id", "unreadCount", "lastMessage", "lastMessage.id", "lastMessage.body"}),
        None,
        None,
    ]
