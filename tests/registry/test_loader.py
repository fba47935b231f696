"""Loading a registry directory: the examples load, bad files are refused by name."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from gateway.registry import (
    DeclarationInvalid,
    PayloadInvalid,
    UnknownEventType,
    build_registry,
    load_registry,
)
from tests.registry.conftest import BUILTINS, EXAMPLES, event_decl, write_json


def test_examples_load_with_builtins():
    registry = load_registry([EXAMPLES], builtins=BUILTINS)
    names = [t.name for t in registry.types()]
    assert names == [
        "chat.message",
        "chat.typing.started",
        "feed.like.created",
        "feed.post.typing",
        "goal.activity.created",
        "goal.viewers.updated",
        "sms.message.received",
        "system.notice",
    ]
    sms = registry.get("sms.message.received")
    assert sms.durable and sms.recipients == "users" and sms.version == 1
    assert sms.source == str(EXAMPLES / "sms.message.received.json")
    viewers = registry.get("goal.viewers.updated")
    assert not viewers.durable and viewers.recipients == "topic" and viewers.topic == "goal"
    assert viewers.ephemeral_class == "latest"
    assert registry.get("chat.message").builtin
    assert not registry.get("feed.like.created").builtin


def test_json_schema_is_one_valid_document():
    registry = load_registry([EXAMPLES], builtins=BUILTINS)
    document = registry.json_schema()
    Draft202012Validator.check_schema(document)
    assert set(document["$defs"]) == {f"{t.name}.v1" for t in registry.types()}
    entry = next(e for e in document["eventTypes"] if e["name"] == "goal.viewers.updated")
    assert entry == {
        "name": "goal.viewers.updated",
        "version": 1,
        "durable": False,
        "recipients": "topic",
        "builtin": False,
        "topic": "goal",
        "ephemeralClass": "latest",
        "payload": {"$ref": "#/$defs/goal.viewers.updated.v1"},
    }
    assert {"topic": "goal", "auth": "tenant", "cacheSeconds": 30.0} in document["topics"]
    # Each payload schema validates through the combined document.
    feed = {**document, "$ref": "#/$defs/feed.like.created.v1"}
    validator = Draft202012Validator(feed)
    good = {"postId": "p", "likerId": "u", "likeCount": 3, "createdAt": "2025-01-01T00:00:00Z"}
    assert validator.is_valid(good)
    assert not validator.is_valid({**good, "likeCount": -1})


def test_validate_good_and_bad_payloads_name_the_path():
    registry = load_registry([EXAMPLES], builtins=BUILTINS)
    activity = {"id": "a1", "kind": "comment", "actorId": "u1", "createdAt": "2025-01-01T00:00:00Z"}
    registry.validate("goal.activity.created", {"goalId": "g1", "activity": activity})

    with pytest.raises(PayloadInvalid) as missing:
        registry.validate("goal.activity.created", {"activity": activity})
    assert missing.value.path == "$.payload.goalId"
    assert missing.value.code == "BAD_REQUEST"

    with pytest.raises(PayloadInvalid) as nested:
        registry.validate(
            "goal.activity.created", {"goalId": "g1", "activity": {**activity, "kind": "poke"}}
        )
    assert nested.value.path == "$.payload.activity.kind"
    assert "poke" in nested.value.message

    with pytest.raises(PayloadInvalid) as item:
        registry.validate(
            "goal.viewers.updated", {"goalId": "g1", "viewerIds": ["u1", 7], "count": 2}
        )
    assert item.value.path == "$.payload.viewerIds[1]"

    with pytest.raises(PayloadInvalid) as not_object:
        registry.validate("feed.like.created", ["not", "an", "object"])
    assert not_object.value.path == "$.payload"


def test_unknown_type_and_version():
    registry = load_registry([EXAMPLES], builtins=[])
    with pytest.raises(UnknownEventType):
        registry.get("goal.activity.deleted")
    with pytest.raises(UnknownEventType):
        registry.validate("goal.activity.created", {"goalId": "g"}, version=2)


def test_topic_rule_by_prefix():
    registry = load_registry([EXAMPLES], builtins=[])
    assert registry.topic_rule("goal:acme/g1").auth == "tenant"
    assert registry.topic_rule("post:p1").auth == "callback"
    assert registry.topic_rule("conversation:c1") is None
    assert registry.topic_rule("goal") is None


def _refused(directory: Path, builtins=()) -> DeclarationInvalid:
    with pytest.raises(DeclarationInvalid) as info:
        load_registry([directory], builtins=list(builtins))
    return info.value


def test_invalid_json_is_refused_naming_the_file(registry_dir: Path):
    write_json(registry_dir / "feed.like.created.json", event_decl("feed.like.created"))
    bad = write_json(
        registry_dir / "goal.activity.created.json", '{"name": "goal.activity.created",'
    )
    error = _refused(registry_dir)
    assert error.source == str(bad)
    assert str(bad) in error.message and "not valid JSON" in error.message


def test_invalid_schema_is_refused_naming_the_file(registry_dir: Path):
    decl = event_decl()
    decl["schema"]["properties"]["goalId"]["type"] = "strnig"
    bad = write_json(registry_dir / "goal.activity.created.json", decl)
    error = _refused(registry_dir)
    assert error.source == str(bad)
    assert "invalid JSON Schema" in error.reason and "$.properties.goalId.type" in error.reason


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"name": "goal.created"}, "domain.entity.verb"),
        ({"name": "Goal.Activity.Created"}, "domain.entity.verb"),
        ({"recipients": "topic"}, "recipients must be 'users'"),
        ({"version": 0}, "version"),
        ({"durable": "yes"}, "durable"),
        ({"recipient": "users"}, "unknown field(s): recipient"),
        ({"schema": {"type": "array"}}, '"type": "object"'),
        ({"durable": False, "recipients": "topic", "topic": "nowhere"}, "no declaration"),
    ],
)
def test_bad_declarations_are_refused(registry_dir: Path, overrides, fragment):
    bad = write_json(registry_dir / "x.json", event_decl(**overrides))
    error = _refused(registry_dir)
    assert error.source == str(bad)
    assert fragment in error.reason


def test_bad_topic_declarations_are_refused(registry_dir: Path):
    topic = write_json(registry_dir / "topics" / "goal.json", {"topic": "goal", "auth": "callback"})
    assert _refused(registry_dir).source == str(topic)
    write_json(topic, {"topic": "conversation", "auth": "public"})
    assert "defined by the contract" in _refused(registry_dir).reason
    write_json(topic, {"topic": "goal", "auth": "friends"})
    assert "auth must be one of" in _refused(registry_dir).reason


def test_a_declared_type_cannot_shadow_a_builtin(registry_dir: Path):
    shadow = write_json(
        registry_dir / "chat.typing.started.json",
        event_decl("chat.typing.started", durable=False, recipients="topic"),
    )
    error = _refused(registry_dir, BUILTINS)
    assert error.source == str(shadow)
    assert "built-in" in error.reason
    # Without the built-ins the same file loads.
    assert "chat.typing.started" in load_registry([registry_dir], builtins=[])


def test_redeclaration_must_be_compatible_within_a_major_version(tmp_path: Path):
    base, app = tmp_path / "base", tmp_path / "app"
    write_json(base / "goal.activity.created.json", event_decl())

    additive = event_decl()
    additive["schema"]["properties"]["note"] = {"type": "string"}
    write_json(app / "goal.activity.created.json", additive)
    registry = load_registry([base, app], builtins=[])
    assert "note" in registry.get("goal.activity.created").schema["properties"]

    breaking = copy.deepcopy(additive)
    breaking["schema"]["properties"]["goalId"] = {"type": "integer"}
    bad = write_json(app / "goal.activity.created.json", breaking)
    error = _refused_many([base, app])
    assert error.source == str(bad)
    assert "$.payload.goalId" in error.reason and "type changed" in error.reason
    assert str(base / "goal.activity.created.json") in error.reason

    # A new major version may change anything; both are served.
    write_json(app / "goal.activity.created.json", {**breaking, "version": 2})
    registry = load_registry([base, app], builtins=[])
    assert registry.get("goal.activity.created").version == 2
    assert registry.get("goal.activity.created", 1).schema["properties"]["goalId"] == {
        "type": "string"
    }


def _refused_many(dirs: list[Path]) -> DeclarationInvalid:
    with pytest.raises(DeclarationInvalid) as info:
        load_registry(dirs, builtins=[])
    return info.value


def test_missing_directory_is_refused(tmp_path: Path):
    error = _refused_many([tmp_path / "absent"])
    assert error.source == str(tmp_path / "absent")


def test_build_registry_from_values():
    registry = build_registry(
        [("mem:a", event_decl("goal.activity.created"))],
        [("mem:t", {"topic": "goal", "auth": "public"})],
        BUILTINS,
    )
    assert len(registry) == 4
    assert registry.topic_rule("goal:g1").auth == "public"
