"""JSON Schema (draft 2020-12) of the contract, generated from the attrs classes.

The walker turns each attrs class into an object schema (camelCase
properties; a field without a default is required) and each field type into
its JSON form. Unknown properties stay allowed: the contract is additive.
"""

from __future__ import annotations

import copy
import enum
import functools
import types
import typing
from typing import Any

import attrs

from ._actions import ACTIONS, TOPIC_PATTERN, Topic
from ._codes import PROTOCOL_VERSION
from ._events import EVENT_TYPES
from ._objects import OBJECT_TYPES
from ._scalars import TIMESTAMP_PATTERN, Timestamp, to_camel

__all__ = ["builtin_declarations", "json_schema"]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
TYPE_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$"

_SCALARS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
}

_NAMED: dict[Any, tuple[str, dict[str, Any]]] = {
    Timestamp: (
        "DateTime",
        {
            "type": "string",
            "pattern": TIMESTAMP_PATTERN,
            "description": "ISO-8601 UTC with milliseconds and a Z.",
        },
    ),
    Topic: (
        "Topic",
        {
            "type": "string",
            "pattern": TOPIC_PATTERN,
            "description": "conversation:<id>, presence:<userId> or event:<id>.",
        },
    ),
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/$defs/{name}"}


class _Walker:
    """Collects `$defs` while turning Python types into JSON Schema."""

    def __init__(self) -> None:
        self.defs: dict[str, Any] = {}

    def type_schema(self, t: Any) -> dict[str, Any]:
        if t in _SCALARS:
            return dict(_SCALARS[t])
        if t in _NAMED:
            name, schema = _NAMED[t]
            self.defs.setdefault(name, dict(schema))
            return _ref(name)
        origin = typing.get_origin(t)
        args = typing.get_args(t)
        if origin is typing.Literal:
            return {"type": "string", "enum": list(args)}
        if origin in (typing.Union, types.UnionType):
            options = [self.type_schema(arg) for arg in args]
            return options[0] if len(options) == 1 else {"anyOf": options}
        if origin is list:
            return {"type": "array", "items": self.type_schema(args[0])}
        if origin is dict:
            return {"type": "object", "additionalProperties": self.type_schema(args[1])}
        if isinstance(t, type) and issubclass(t, enum.Enum):
            self.defs.setdefault(
                t.__name__, {"type": "string", "enum": [member.value for member in t]}
            )
            return _ref(t.__name__)
        if isinstance(t, type) and attrs.has(t):
            if t.__name__ not in self.defs:
                self.defs[t.__name__] = {}  # reserve the name before walking fields
                self.defs[t.__name__] = self.class_schema(t)
            return _ref(t.__name__)
        raise TypeError(f"no JSON Schema for {t!r}")

    def class_schema(self, cls: type) -> dict[str, Any]:
        hints = typing.get_type_hints(cls)
        properties = {}
        required = []
        for field in attrs.fields(cls):
            key = to_camel(field.name)
            properties[key] = self.type_schema(hints[field.name])
            if field.default is attrs.NOTHING:
                required.append(key)
        schema: dict[str, Any] = {"type": "object", "title": cls.__name__}
        doc = (cls.__doc__ or "").strip().split("\n\n")[0]
        if doc:
            schema["description"] = " ".join(doc.split())
        schema["properties"] = properties
        if required:
            schema["required"] = required
        return schema


def _envelope(walker: _Walker) -> dict[str, Any]:
    cases = []
    for name, spec in EVENT_TYPES.items():
        then: dict[str, Any] = {"properties": {"payload": walker.type_schema(spec.payload_cls)}}
        if spec.durable:
            then["required"] = ["seq"]
        else:
            then["not"] = {"required": ["seq"]}
        cases.append(
            {"if": {"properties": {"type": {"const": name}}, "required": ["type"]}, "then": then}
        )
    return {
        "type": "object",
        "title": "ServerEnvelope",
        "description": "One server envelope; a frame holds one or more, separated by a newline.",
        "properties": {
            "v": {"const": PROTOCOL_VERSION},
            "id": {"type": "string"},
            "type": {"type": "string", "pattern": TYPE_PATTERN},
            "seq": {"type": "integer", "minimum": 1},
            "sentAt": walker.type_schema(Timestamp),
            "replyTo": {"type": ["string", "null"]},
            "payload": {"type": "object"},
        },
        "required": ["v", "id", "type", "sentAt", "payload"],
        "allOf": cases,
    }


def _action_frame(walker: _Walker) -> dict[str, Any]:
    frames = []
    for name, payload_cls in ACTIONS.items():
        needs_payload = any(f.default is attrs.NOTHING for f in attrs.fields(payload_cls))
        frames.append(
            {
                "properties": {
                    "action": {"const": name},
                    "payload": walker.type_schema(payload_cls),
                },
                "required": ["action", "payload"] if needs_payload else ["action"],
            }
        )
    return {
        "type": "object",
        "title": "ClientActionFrame",
        "description": "One client action; a client sends one per frame.",
        "properties": {
            "v": {"const": PROTOCOL_VERSION},
            "id": {"type": ["string", "null"]},
            "action": {"type": "string", "enum": list(ACTIONS)},
            "payload": {"type": "object"},
        },
        "required": ["v", "action"],
        "oneOf": frames,
    }


@functools.cache
def _contract_schema() -> dict[str, Any]:
    walker = _Walker()
    for object_type in OBJECT_TYPES:
        walker.type_schema(object_type)
    envelope = _envelope(walker)
    frame = _action_frame(walker)
    walker.defs["ServerEnvelope"] = envelope
    walker.defs["ClientActionFrame"] = frame
    return {
        "$schema": DIALECT,
        "title": f"Cutover wire contract, version {PROTOCOL_VERSION}",
        "description": "A server envelope or a client action frame.",
        "anyOf": [_ref("ServerEnvelope"), _ref("ClientActionFrame")],
        "eventTypes": {
            name: {
                "$ref": f"#/$defs/{spec.payload_cls.__name__}",
                "durable": spec.durable,
                "recipients": spec.recipients,
            }
            for name, spec in EVENT_TYPES.items()
        },
        "actions": {name: _ref(cls.__name__) for name, cls in ACTIONS.items()},
        "$defs": dict(sorted(walker.defs.items())),
    }


def json_schema() -> dict[str, Any]:
    """The whole contract as one JSON Schema document (draft 2020-12).

    `$defs` holds every payload and object type plus `ServerEnvelope` and
    `ClientActionFrame`; `eventTypes` and `actions` map names to payload defs.
    The document validates either kind of frame.
    """
    return copy.deepcopy(_contract_schema())


def payload_schema(payload_cls: type) -> dict[str, Any]:
    """A self-contained JSON Schema of one payload class (its own `$defs`)."""
    walker = _Walker()
    root = walker.class_schema(payload_cls)
    schema = {"$schema": DIALECT, **root}
    if walker.defs:
        schema["$defs"] = dict(sorted(walker.defs.items()))
    return schema


def builtin_declarations() -> list[dict[str, Any]]:
    """One declaration per domain event type of the contract (PROTOCOL.md 2.3
    and 2.4; replies and session frames are not event types), in the shape the
    event-type registry loads next to user-declared types:
    `{"name", "version", "durable", "recipients", "schema", "description"}`
    plus `topic` and `ephemeralClass` for ephemeral types. `recipients` is the
    audience kind (`users`, `topic`, `broadcast`, `connection`); the words of
    the protocol's "sent to" column are in `description`."""
    declarations = []
    for name, spec in EVENT_TYPES.items():
        if spec.control:
            continue
        declaration: dict[str, Any] = {
            "name": name,
            "version": PROTOCOL_VERSION,
            "durable": spec.durable,
            "recipients": spec.audience,
            "schema": payload_schema(spec.payload_cls),
            "description": f"Sent to {spec.recipients}.",
        }
        if spec.topic is not None:
            declaration["topic"] = spec.topic
        if spec.ephemeral_class is not None:
            declaration["ephemeralClass"] = spec.ephemeral_class
        declarations.append(declaration)
    return declarations
