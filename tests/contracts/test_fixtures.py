"""Every golden fixture round-trips, and every event type and action has one."""

from __future__ import annotations

import json
import re

import pytest

import contracts
from contracts import ACTIONS, EVENT_TYPES

from .conftest import fixture_names, fixture_text, load_fixture

EVENT_FIXTURES = fixture_names("events")
ACTION_FIXTURES = fixture_names("actions")


def test_every_event_type_has_a_fixture_and_every_fixture_a_type():
    assert set(EVENT_FIXTURES) == set(EVENT_TYPES)


def test_every_action_has_a_fixture_and_every_fixture_an_action():
    assert set(ACTION_FIXTURES) == set(ACTIONS)


def test_the_catalogs_cover_the_protocol_tables():
    durable = {name for name, spec in EVENT_TYPES.items() if spec.durable and not spec.control}
    assert durable == {
        "notification.new",
        "notification.read",
        "chat.message",
        "chat.conversation.updated",
        "chat.read",
        "chat.message.delivered",
        "follow.request.created",
        "follow.request.updated",
        "event.rsvp.updated",
        "event.saved.updated",
        "organization.member.updated",
        "organization.announcement",
        "activity.feed.item",
    }
    assert {
        "chat.typing.started",
        "chat.typing.stopped",
        "user.presence.updated",
        "event.counters.updated",
        "system.notice",
        "system.reconnect",
        "ack",
        "error",
        "ping.pong",
        "session.welcome",
        "session.resumed",
        "session.reset",
    } <= set(EVENT_TYPES)
    assert set(ACTIONS) == {
        "ping",
        "session.resume",
        "auth.refresh",
        "subscribe",
        "unsubscribe",
        "notification.subscribe",
        "chat.send",
        "chat.read",
        "chat.delivered",
        "chat.typing",
        "presence.set",
    }


@pytest.mark.parametrize("name", EVENT_FIXTURES)
def test_event_fixture_round_trips(name):
    envelope = load_fixture("events", name)
    spec = EVENT_TYPES[envelope["type"]]
    assert envelope["type"] == name
    assert ("seq" in envelope) == spec.durable

    payload = contracts.validate_event(envelope["type"], envelope["payload"])
    assert isinstance(payload, spec.payload_cls)
    assert contracts.unstructure(payload) == envelope["payload"]

    encoded = contracts.encode_envelope(
        envelope["type"],
        contracts.unstructure(payload),
        id=envelope["id"],
        sent_at=envelope["sentAt"],
        seq=envelope.get("seq"),
        reply_to=envelope.get("replyTo"),
    )
    assert "\n" not in encoded
    assert json.loads(encoded) == envelope
    assert contracts.split_frame(encoded) == [envelope]


@pytest.mark.parametrize("name", ACTION_FIXTURES)
def test_action_fixture_round_trips(name):
    text = fixture_text("actions", name)
    frame = json.loads(text)

    decoded = contracts.decode_action(text)
    assert decoded.action == name
    assert decoded.id == frame["id"]
    assert isinstance(decoded.payload, ACTIONS[name])
    assert contracts.unstructure(decoded) == frame

    encoded = contracts.encode_action(name, frame["payload"], id=frame["id"])
    assert json.loads(encoded) == frame
    assert contracts.decode_action(encoded.encode()) == decoded


def test_fixture_times_use_the_contract_format():
    pattern = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
    for name in EVENT_FIXTURES:
        assert pattern.match(load_fixture("events", name)["sentAt"]), name
