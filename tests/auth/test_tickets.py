"""Handshake tickets: issued from a principal, redeemed once, never stored in the clear."""

from __future__ import annotations

import json

import pytest

from gateway.auth import Principal, TicketBook
from gateway.errors import TokenExpired, Unauthorized


class MemoryTickets:
    """The two store methods a ticket book uses, kept in a dict."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, float, str]] = {}

    def put_ticket(self, ticket_hash: str, user_id: str, expires_at: float, claims_json: str):
        self.rows[ticket_hash] = (user_id, expires_at, claims_json)

    def peek_ticket(self, ticket_hash: str, now: float) -> tuple[str, str] | None:
        row = self.rows.get(ticket_hash)
        if row is None or row[1] <= now:
            return None
        return row[0], row[2]

    def take_ticket(self, ticket_hash: str, now: float) -> tuple[str, str] | None:
        row = self.rows.pop(ticket_hash, None)
        if row is None or row[1] <= now:
            return None
        return row[0], row[2]


NOW = 1_800_000_000.0


@pytest.fixture
def store() -> MemoryTickets:
    return MemoryTickets()


def _principal(**overrides) -> Principal:
    values = {
        "user_id": "acme/alice",
        "scopes": frozenset({"admin", "read"}),
        "tenant": "acme",
        "name": "Alice",
        "expires_at": NOW + 3600,
        "token": "the.jwt.itself",
    }
    return Principal(**{**values, **overrides})


def test_issue_then_redeem_gives_the_same_user(store):
    book = TicketBook(store, ttl_s=30)
    ticket, expires_at = book.issue(_principal(), now=NOW)
    assert expires_at == NOW + 30
    assert len(ticket) >= 43
    principal = book.redeem(ticket, now=NOW + 5)
    assert principal.user_id == "acme/alice"
    assert principal.subject == "alice"
    assert principal.scopes == frozenset({"admin", "read"})
    assert principal.is_admin
    assert principal.tenant == "acme"
    assert principal.name == "Alice"


def test_ticket_keeps_the_tokens_expiry(store):
    book = TicketBook(store, ttl_s=30)
    ticket, _ = book.issue(_principal(), now=NOW)
    assert book.redeem(ticket, now=NOW + 1).expires_at == NOW + 3600


def test_only_the_hash_is_stored_and_no_token(store):
    book = TicketBook(store)
    ticket, _ = book.issue(_principal(), now=NOW)
    (stored_hash,) = store.rows
    assert ticket not in stored_hash and len(stored_hash) == 64
    user_id, _, claims_json = store.rows[stored_hash]
    assert user_id == "acme/alice"
    assert ticket not in claims_json
    assert "the.jwt.itself" not in claims_json
    assert json.loads(claims_json)["sub"] == "alice"


def test_tickets_are_unique(store):
    book = TicketBook(store)
    tickets = {book.issue(_principal(), now=NOW)[0] for _ in range(50)}
    assert len(tickets) == 50


def test_reuse_is_refused(store):
    book = TicketBook(store)
    ticket, _ = book.issue(_principal(), now=NOW)
    book.redeem(ticket, now=NOW + 1)
    with pytest.raises(Unauthorized, match="already used"):
        book.redeem(ticket, now=NOW + 2)


def test_expired_ticket_is_refused(store):
    book = TicketBook(store, ttl_s=30)
    ticket, expires_at = book.issue(_principal(), now=NOW)
    with pytest.raises(Unauthorized):
        book.redeem(ticket, now=expires_at + 0.001)


@pytest.mark.parametrize("ticket", ["", "not-a-ticket", "x" * 10_000])
def test_unknown_ticket_is_refused(store, ticket):
    book = TicketBook(store)
    book.issue(_principal(), now=NOW)
    with pytest.raises(Unauthorized):
        book.redeem(ticket, now=NOW)


def test_ticket_never_outlives_its_token(store):
    book = TicketBook(store, ttl_s=30)
    ticket, expires_at = book.issue(_principal(expires_at=NOW + 10), now=NOW)
    assert expires_at == NOW + 10
    with pytest.raises(Unauthorized):
        book.redeem(ticket, now=NOW + 11)


def test_expired_principal_gets_no_ticket(store):
    book = TicketBook(store)
    with pytest.raises(TokenExpired):
        book.issue(_principal(expires_at=NOW - 1), now=NOW)
    assert store.rows == {}


def test_a_tampered_record_is_refused(store):
    book = TicketBook(store)
    ticket, _ = book.issue(_principal(), now=NOW)
    (key,) = store.rows
    _, expires_at, claims_json = store.rows[key]
    store.rows[key] = ("mallory", expires_at, claims_json)
    with pytest.raises(Unauthorized, match="does not match"):
        book.redeem(ticket, now=NOW + 1)
