"""What one declaration file says: an event type or a custom topic's rule.

Pure: each parser takes the decoded JSON of one file and the name of its
source (a path, or `builtin:<name>`) and returns a value or raises
`DeclarationInvalid` naming that source and the problem.

Event type file (one per type):

    {"name": "goal.activity.created", "version": 1, "durable": true,
     "recipients": "users", "schema": {...}, "description": "..."}

Topic file (under `topics/`), for topics `goal:<id>`:

    {"topic": "goal", "auth": "public" | "tenant" | "callback",
     "callbackUrl": "https://app.internal/authz", "cacheSeconds": 30}
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit

import attrs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from gateway.registry._errors import DeclarationInvalid

__all__ = [
    "BUILTIN_TOPIC_PREFIXES",
    "EventType",
    "TopicRule",
    "parse_event_type",
    "parse_topic_rule",
]

# `domain.entity.verb`: at least three lowercase dot-separated parts.
_NAME = re.compile(r"^[a-z][a-z0-9]*(\.[a-z][a-z0-9_]*){2,}$")
# The contract's own frames predate the rule (`chat.message`, `ack`).
_BUILTIN_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
# How the contract's tables say "subscribers of conversation:<id>".
_SUBSCRIBERS_OF = re.compile(r"\bsubscribers of ([a-z][a-z0-9_-]*):")
_TOPIC = re.compile(r"^[a-z][a-z0-9_-]*$")

# Topic prefixes whose authorization the contract itself defines (PROTOCOL.md 2.5).
BUILTIN_TOPIC_PREFIXES = frozenset({"conversation", "presence", "event"})

Recipients = Literal["users", "topic", "broadcast", "connection"]
TopicAuth = Literal["public", "tenant", "callback"]
EphemeralClassName = Literal["latest", "drop", "notice"]

_USER_RECIPIENTS = ("users", "topic")
_BUILTIN_RECIPIENTS = ("users", "topic", "broadcast", "connection")
_EPHEMERAL_CLASSES = ("latest", "drop", "notice")
_EVENT_KEYS = frozenset(
    {
        "name",
        "version",
        "durable",
        "recipients",
        "schema",
        "description",
        "topic",
        "ephemeralClass",
        "$comment",
    }
)
_TOPIC_KEYS = frozenset({"topic", "auth", "callbackUrl", "cacheSeconds", "description", "$comment"})


@attrs.frozen
class EventType:
    """A declared event type: its name, major version, delivery and payload schema.

    `durable` events are stored in each recipient's stream (`recipients` is
    `users`); ephemeral ones go to a topic's subscribers or to connected users.
    `version` is the major version: within it, changes are additive only.
    """

    name: str
    version: int
    durable: bool
    recipients: Recipients
    schema: dict[str, Any] = attrs.field(eq=False, repr=False)
    description: str = ""
    source: str = ""
    builtin: bool = False
    topic: str | None = None
    ephemeral_class: EphemeralClassName = "notice"

    @property
    def def_name(self) -> str:
        """Its key under `$defs` in the exported schema: `goal.activity.created.v1`."""
        return f"{self.name}.v{self.version}"


@attrs.frozen
class TopicRule:
    """Who may subscribe to the custom topics `<topic>:<id>`.

    `public`: anyone signed in. `tenant`: the topic id has the form
    `<tenant>/<id>` and the subscriber's tenant must be `<tenant>`.
    `callback`: the app answers at `callback_url`; answers are cached per
    (user, topic) for `cache_seconds`.
    """

    topic: str
    auth: TopicAuth
    callback_url: str | None = None
    cache_seconds: float = 30.0
    description: str = ""
    source: str = ""


def _require(data: dict[str, Any], key: str, source: str) -> Any:
    if key not in data:
        raise DeclarationInvalid(source, f"missing required field {key!r}")
    return data[key]


def parse_event_type(data: object, source: str, *, builtin: bool = False) -> EventType:
    """Check one event-type declaration and return it as an `EventType`."""
    if not isinstance(data, dict):
        raise DeclarationInvalid(source, "a declaration must be a JSON object")
    if not builtin:
        unknown = sorted(set(data) - _EVENT_KEYS)
        if unknown:
            raise DeclarationInvalid(source, f"unknown field(s): {', '.join(unknown)}")

    name = _require(data, "name", source)
    pattern = _BUILTIN_NAME if builtin else _NAME
    if not isinstance(name, str) or not pattern.match(name):
        raise DeclarationInvalid(
            source,
            f"name {name!r} must be domain.entity.verb: "
            "at least three lowercase dot-separated parts",
        )

    version = _require(data, "version", source)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DeclarationInvalid(source, f"version must be a positive integer, got {version!r}")

    durable = _require(data, "durable", source)
    if not isinstance(durable, bool):
        raise DeclarationInvalid(source, f"durable must be true or false, got {durable!r}")

    recipients = _require(data, "recipients", source)
    topic = data.get("topic")
    description = data.get("description", "")
    if builtin and recipients not in _BUILTIN_RECIPIENTS:
        recipients, topic, description = _builtin_audience(recipients, durable, source)
    allowed = _BUILTIN_RECIPIENTS if builtin else _USER_RECIPIENTS
    if recipients not in allowed:
        raise DeclarationInvalid(
            source, f"recipients must be one of {', '.join(allowed)}, got {recipients!r}"
        )
    if durable and recipients != "users":
        raise DeclarationInvalid(
            source,
            f"a durable type is stored in each recipient's stream, so recipients must be "
            f"'users', not {recipients!r}",
        )

    if topic is not None:
        if recipients != "topic":
            raise DeclarationInvalid(source, "'topic' is only meaningful with recipients 'topic'")
        if not isinstance(topic, str) or not _TOPIC.match(topic):
            raise DeclarationInvalid(source, f"topic {topic!r} must be a lowercase prefix")

    ephemeral_class = data.get("ephemeralClass", "notice")
    if ephemeral_class not in _EPHEMERAL_CLASSES:
        raise DeclarationInvalid(
            source, f"ephemeralClass must be one of {', '.join(_EPHEMERAL_CLASSES)}"
        )
    if durable and "ephemeralClass" in data:
        raise DeclarationInvalid(source, "ephemeralClass applies to ephemeral types only")

    if not isinstance(description, str):
        raise DeclarationInvalid(source, "description must be a string")

    schema = _require(data, "schema", source)
    _check_schema(schema, source, object_required=not builtin)

    return EventType(
        name=name,
        version=version,
        durable=durable,
        recipients=recipients,
        schema=schema,
        description=description,
        source=source,
        builtin=builtin,
        topic=topic,
        ephemeral_class=ephemeral_class,
    )


def _builtin_audience(audience: object, durable: bool, source: str) -> tuple[str, str | None, str]:
    """Map the contract's "sent to" prose (PROTOCOL.md 2.3-2.5) to a recipients kind.

    Durable events go to users' streams; "subscribers of <prefix>:..." is a
    topic; "every connected user" a broadcast; a named connection is one
    connection; anything else names users. The prose is kept as the description.
    """
    if not isinstance(audience, str):
        raise DeclarationInvalid(source, f"recipients must be a string, got {audience!r}")
    description = f"sent to {audience}"
    if durable:
        return "users", None, description
    subscribers = _SUBSCRIBERS_OF.search(audience)
    if subscribers:
        return "topic", subscribers.group(1), description
    if "every connected user" in audience:
        return "broadcast", None, description
    if "connection" in audience:
        return "connection", None, description
    return "users", None, description


def _check_schema(schema: object, source: str, *, object_required: bool) -> None:
    if not isinstance(schema, dict):
        raise DeclarationInvalid(source, "schema must be a JSON Schema object")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise DeclarationInvalid(
            source, f"invalid JSON Schema at {exc.json_path}: {exc.message}"
        ) from None
    if object_required and schema.get("type") != "object":
        raise DeclarationInvalid(
            source, 'a payload is a JSON object: the schema must say "type": "object"'
        )


def parse_topic_rule(data: object, source: str) -> TopicRule:
    """Check one topic declaration and return it as a `TopicRule`."""
    if not isinstance(data, dict):
        raise DeclarationInvalid(source, "a topic declaration must be a JSON object")
    unknown = sorted(set(data) - _TOPIC_KEYS)
    if unknown:
        raise DeclarationInvalid(source, f"unknown field(s): {', '.join(unknown)}")

    topic = _require(data, "topic", source)
    if not isinstance(topic, str) or not _TOPIC.match(topic):
        raise DeclarationInvalid(
            source, f"topic {topic!r} must be a lowercase prefix such as 'goal' (for goal:<id>)"
        )
    if topic in BUILTIN_TOPIC_PREFIXES:
        raise DeclarationInvalid(source, f"topic {topic!r} is defined by the contract itself")

    auth = _require(data, "auth", source)
    if auth not in ("public", "tenant", "callback"):
        raise DeclarationInvalid(
            source, f"auth must be one of public, tenant, callback, got {auth!r}"
        )

    url = data.get("callbackUrl")
    if auth == "callback":
        if not isinstance(url, str):
            raise DeclarationInvalid(source, "auth 'callback' needs a callbackUrl")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise DeclarationInvalid(source, f"callbackUrl {url!r} must be an http(s) URL")
    elif url is not None:
        raise DeclarationInvalid(source, "callbackUrl is only meaningful with auth 'callback'")

    cache_seconds = data.get("cacheSeconds", 30)
    if (
        not isinstance(cache_seconds, int | float)
        or isinstance(cache_seconds, bool)
        or cache_seconds < 0
    ):
        raise DeclarationInvalid(source, "cacheSeconds must be a number >= 0")

    description = data.get("description", "")
    if not isinstance(description, str):
        raise DeclarationInvalid(source, "description must be a string")

    return TopicRule(
        topic=topic,
        auth=auth,
        callback_url=url,
        cache_seconds=float(cache_seconds),
        description=description,
        source=source,
    )
