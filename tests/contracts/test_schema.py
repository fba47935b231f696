"""The published JSON Schema: valid, complete, and agreeing with the fixtures."""

from __future__ import annotations

import copy

import pytest
from jsonschema import Draft202012Validator

import contracts
from contracts import ACTIONS, EVENT_TYPES

from .conftest import fixture_names, load_fixture

SCHEMA = contracts.json_schema()


def validator_for(def_name: str) -> Draft202012Validator:
    return Draft202012Validator({**SCHEMA, "anyOf": [{"$ref": f"#/$defs/{def_name}"}]})


def refs_in(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [ref for value in node.values() for ref in refs_in(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in refs_in(value)]
    return []


def test_schema_is_valid_draft_2020_12():
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_schema_has_every_payload_and_object_type():
    defs = SCHEMA["$defs"]
    for spec in EVENT_TYPES.values():
        assert spec.payload_cls.__name__ in defs
    for cls in ACTIONS.values():
        assert cls.__name__ in defs
    for name in [
        "Notification",
        "Message",
        "Conversation",
        "FollowRequest",
        "Rsvp",
        "Event",
        "RsvpCounts",
        "Announcement",
        "FeedItem",
        "Membership",
        "Presence",
    ]:
        assert name in defs
    assert defs["Event"]["properties"]["rsvpCounts"] == {"$ref": "#/$defs/RsvpCounts"}
    assert set(defs["Message"]["required"]) == {
        "id",
        "conversationId",
        "senderId",
        "body",
        "createdAt",
        "clientMessageId",
        "deliveredTo",
        "readBy",
    }
    assert set(SCHEMA["eventTypes"]) == set(EVENT_TYPES)
    assert set(SCHEMA["actions"]) == set(ACTIONS)


def test_json_schema_returns_an_independent_copy():
    schema = contracts.json_schema()
    schema["$defs"].clear()
    assert contracts.json_schema()["$defs"]


@pytest.mark.parametrize("name", fixture_names("events"))
def test_every_event_fixture_validates(name):
    envelope = load_fixture("events", name)
    validator_for("ServerEnvelope").validate(envelope)
    Draft202012Validator(SCHEMA).validate(envelope)


@pytest.mark.parametrize("name", fixture_names("actions"))
def test_every_action_fixture_validates(name):
    frame = load_fixture("actions", name)
    validator_for("ClientActionFrame").validate(frame)
    Draft202012Validator(SCHEMA).validate(frame)


def test_schema_rejects_what_the_decoder_rejects():
    envelope = load_fixture("events", "chat.message")
    broken = copy.deepcopy(envelope)
    del broken["payload"]["message"]["senderId"]
    assert not validator_for("ServerEnvelope").is_valid(broken)
    no_seq = copy.deepcopy(envelope)
    del no_seq["seq"]
    assert not validator_for("ServerEnvelope").is_valid(no_seq)

    frame = load_fixture("actions", "chat.delivered")
    frame["payload"]["messageIds"] = "m1"
    assert not validator_for("ClientActionFrame").is_valid(frame)
    frame = load_fixture("actions", "chat.typing")
    frame["payload"]["state"] = "typing"
    assert not validator_for("ClientActionFrame").is_valid(frame)


def test_schema_allows_unknown_fields():
    envelope = load_fixture("events", "system.notice")
    envelope["payload"]["link"] = "https://status.example.com"
    envelope["trace"] = "abc"
    assert validator_for("ServerEnvelope").is_valid(envelope)


def test_builtin_declarations_cover_every_domain_event_with_self_contained_schemas():
    declarations = contracts.builtin_declarations()
    domain_events = [name for name, spec in EVENT_TYPES.items() if not spec.control]
    assert [d["name"] for d in declarations] == domain_events
    assert "chat.message" in domain_events
    assert "ack" not in domain_events
    for declaration in declarations:
        spec = EVENT_TYPES[declaration["name"]]
        assert declaration["version"] == 1
        assert declaration["durable"] is spec.durable
        assert declaration["recipients"] == ("users" if spec.durable else spec.audience)
        assert spec.recipients in declaration["description"]
        schema = declaration["schema"]
        Draft202012Validator.check_schema(schema)
        for ref in refs_in(schema):
            assert ref.startswith("#/$defs/")
            assert ref.removeprefix("#/$defs/") in schema["$defs"]
        fixture = load_fixture("events", declaration["name"])
        Draft202012Validator(schema).validate(fixture["payload"])


def test_ephemeral_declarations_name_their_topic_and_buffer_class():
    by_name = {d["name"]: d for d in contracts.builtin_declarations()}
    assert by_name["chat.typing.started"]["topic"] == "conversation"
    assert by_name["chat.typing.started"]["ephemeralClass"] == "drop"
    assert by_name["user.presence.updated"]["ephemeralClass"] == "latest"
    assert by_name["system.notice"]["recipients"] == "broadcast"
    assert "ephemeralClass" not in by_name["chat.message"]


def test_builtin_declarations_load_into_the_event_type_registry():
    from gateway.registry import load_registry

    registry = load_registry([], builtins=contracts.builtin_declarations())
    loaded = {event_type.name for event_type in registry.types()}
    assert loaded == {d["name"] for d in contracts.builtin_declarations()}
    payload = load_fixture("events", "chat.message")["payload"]
    registry.validate("chat.message", payload)
