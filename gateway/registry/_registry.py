"""The event-type registry: every declared event type and custom topic rule.

`build_registry` is pure: it takes decoded declarations and returns a
`Registry` with each payload validator built once (and, where it agrees with
jsonschema by construction, a compiled first check: `_fast`). `load_registry` reads a
list of directories (blocking: call it from a thread in async code) and
builds one. The contract's own domain events (PROTOCOL.md 2.3, 2.4) are
declared the same way and loaded first, as built-ins; a declared type cannot
shadow one.

Directory layout: `<dir>/*.json` are event types, `<dir>/topics/*.json`
topic rules. Directories are read in the order given and files in name order;
a type declared again under the same major version replaces the earlier
declaration only if the change is additive (see `compat`).
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from gateway.registry._declarations import (
    EventType,
    TopicRule,
    parse_event_type,
    parse_topic_rule,
)
from gateway.registry._errors import DeclarationInvalid, PayloadInvalid, UnknownEventType
from gateway.registry._fast import FastCheck, compile_fast_check
from gateway.registry._schema_diff import check_compat

__all__ = [
    "Registry",
    "build_registry",
    "contract_builtins",
    "load_registry",
    "read_declarations",
]

log = logging.getLogger(__name__)

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
TOPICS_SUBDIR = "topics"

# (source, decoded JSON) of one declaration file.
Declaration = tuple[str, Any]


class Registry:
    """The loaded registry: look up a type, validate a payload, export the schema."""

    def __init__(
        self,
        types: Iterable[EventType],
        topics: Iterable[TopicRule] = (),
        *,
        fast_checks: bool = True,
    ) -> None:
        self._types: dict[str, dict[int, EventType]] = {}
        self._validators: dict[tuple[str, int], Draft202012Validator] = {}
        self._fast: dict[tuple[str, int], FastCheck] = {}
        format_checker = Draft202012Validator.FORMAT_CHECKER
        for event_type in types:
            key = (event_type.name, event_type.version)
            self._types.setdefault(event_type.name, {})[event_type.version] = event_type
            self._validators[key] = Draft202012Validator(
                event_type.schema, format_checker=format_checker
            )
            fast = compile_fast_check(event_type.schema, format_checker) if fast_checks else None
            if fast is not None:
                self._fast[key] = fast
        self._topics = {rule.topic: rule for rule in topics}

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __len__(self) -> int:
        return len(self._validators)

    def types(self) -> list[EventType]:
        """Every declared type and major version, built-ins included, by name then version."""
        return [
            versions[v]
            for name in sorted(self._types)
            for versions in (self._types[name],)
            for v in sorted(versions)
        ]

    def topics(self) -> list[TopicRule]:
        return [self._topics[t] for t in sorted(self._topics)]

    def get(self, name: str, version: int | None = None) -> EventType:
        """The declared type (its newest major version unless `version` is given)."""
        versions = self._types.get(name)
        if not versions:
            raise UnknownEventType(name)
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            raise UnknownEventType(name, version)
        return versions[version]

    def fast_checked(self, name: str, version: int | None = None) -> bool:
        """Whether the type's payloads get the compiled first check (`_fast`)."""
        event_type = self.get(name, version)
        return (event_type.name, event_type.version) in self._fast

    def validate(self, name: str, payload: Any, version: int | None = None) -> None:
        """Raise `PayloadInvalid` (with the failing JSON path) unless `payload`
        (decoded from JSON) matches.

        The compiled check, where the type has one, passes only payloads
        jsonschema passes; anything else is decided by jsonschema, whose
        best match names the refusal.
        """
        event_type = self.get(name, version)
        key = (event_type.name, event_type.version)
        fast = self._fast.get(key)
        if fast is not None:
            try:
                fast(payload)
            except Exception:  # refused, or could not tell: jsonschema decides and explains
                pass
            else:
                return
        validator = self._validators[key]
        error = best_match(validator.iter_errors(payload))
        if error is None:
            return
        path = "$.payload" + error.json_path[1:]
        if error.validator == "required" and isinstance(error.instance, dict):
            missing = [p for p in error.validator_value if p not in error.instance]
            if missing:
                path = _child_path(path, missing[0])
        raise PayloadInvalid(name, path, error.message)

    def topic_rule(self, topic: str) -> TopicRule | None:
        """The rule for a custom topic such as `goal:g1` (by the prefix before `:`)."""
        prefix, sep, _ = topic.partition(":")
        if not sep:
            return None
        return self._topics.get(prefix)

    def json_schema(self) -> dict[str, Any]:
        """The whole registry as one JSON Schema document.

        `$defs` holds each type's payload schema under `<name>.v<version>` as
        its own schema resource (an `$id` of `urn:cutover:event:<name>:v<n>`,
        so its local `$ref`s keep working); `eventTypes` lists each type with
        its version, durability, recipients and a `$ref` to its payload
        schema; `topics` lists the custom topics and how they are authorized.
        """
        defs: dict[str, Any] = {}
        listing: list[dict[str, Any]] = []
        for event_type in self.types():
            schema = copy.deepcopy(event_type.schema)
            schema.setdefault("$id", f"urn:cutover:event:{event_type.name}:v{event_type.version}")
            schema.setdefault("$schema", SCHEMA_DIALECT)
            if event_type.description and "description" not in schema:
                schema["description"] = event_type.description
            defs[event_type.def_name] = schema
            entry: dict[str, Any] = {
                "name": event_type.name,
                "version": event_type.version,
                "durable": event_type.durable,
                "recipients": event_type.recipients,
                "builtin": event_type.builtin,
                "payload": {"$ref": f"#/$defs/{event_type.def_name}"},
            }
            if event_type.topic is not None:
                entry["topic"] = event_type.topic
            if not event_type.durable:
                entry["ephemeralClass"] = event_type.ephemeral_class
            listing.append(entry)
        topics = [
            {"topic": rule.topic, "auth": rule.auth, "cacheSeconds": rule.cache_seconds}
            for rule in self.topics()
        ]
        return {
            "$schema": SCHEMA_DIALECT,
            "$id": "urn:cutover:registry",
            "title": "Cutover event types",
            "$defs": defs,
            "eventTypes": listing,
            "topics": topics,
        }


def _child_path(path: str, name: str) -> str:
    if name.isidentifier():
        return f"{path}.{name}"
    return f"{path}[{json.dumps(name)}]"


def build_registry(
    event_declarations: Iterable[Declaration],
    topic_declarations: Iterable[Declaration] = (),
    builtins: Sequence[dict[str, Any]] = (),
) -> Registry:
    """Check every declaration and return the registry, or raise `DeclarationInvalid`."""
    builtin_types: dict[str, EventType] = {}
    for data in builtins:
        name = data.get("name", "?") if isinstance(data, dict) else "?"
        event_type = parse_event_type(data, f"builtin:{name}", builtin=True)
        if event_type.name in builtin_types:
            raise DeclarationInvalid(event_type.source, "built-in type declared twice")
        builtin_types[event_type.name] = event_type

    declared: dict[tuple[str, int], EventType] = {}
    for source, data in event_declarations:
        event_type = parse_event_type(data, source)
        if event_type.name in builtin_types:
            raise DeclarationInvalid(
                source, f"{event_type.name} is a built-in event type of the contract"
            )
        key = (event_type.name, event_type.version)
        earlier = declared.get(key)
        if earlier is not None:
            _check_redeclaration(earlier, event_type)
        declared[key] = event_type

    topics: dict[str, TopicRule] = {}
    for source, data in topic_declarations:
        rule = parse_topic_rule(data, source)
        earlier_rule = topics.get(rule.topic)
        if earlier_rule is not None:
            raise DeclarationInvalid(
                source, f"topic {rule.topic!r} is already declared in {earlier_rule.source}"
            )
        topics[rule.topic] = rule

    for event_type in declared.values():
        if event_type.topic is not None and event_type.topic not in topics:
            raise DeclarationInvalid(
                event_type.source,
                f"topic {event_type.topic!r} has no declaration under {TOPICS_SUBDIR}/",
            )
    return Registry([*builtin_types.values(), *declared.values()], topics.values())


def _check_redeclaration(earlier: EventType, later: EventType) -> None:
    where = f"{later.name} v{later.version} (first declared in {earlier.source})"
    if (earlier.durable, earlier.recipients) != (later.durable, later.recipients):
        raise DeclarationInvalid(
            later.source,
            f"{where}: durable/recipients changed within a major version; "
            "declare a new version instead",
        )
    breaking = check_compat(earlier.schema, later.schema, root="$.payload")
    if breaking:
        raise DeclarationInvalid(
            later.source,
            f"{where}: incompatible schema within the same major version: "
            + "; ".join(str(b) for b in breaking),
        )


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DeclarationInvalid(str(path), f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DeclarationInvalid(str(path), "not UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DeclarationInvalid(
            str(path), f"not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None


def read_declarations(dirs: Sequence[Path]) -> tuple[list[Declaration], list[Declaration]]:
    """Read every declaration file of `dirs` (blocking): (event types, topic rules)."""
    events: list[Declaration] = []
    topics: list[Declaration] = []
    for directory in map(Path, dirs):
        if not directory.is_dir():
            raise DeclarationInvalid(str(directory), "not a directory")
        for path in sorted(directory.glob("*.json")):
            events.append((str(path), _read_json(path)))
        topic_dir = directory / TOPICS_SUBDIR
        if topic_dir.is_dir():
            for path in sorted(topic_dir.glob("*.json")):
                topics.append((str(path), _read_json(path)))
    return events, topics


def contract_builtins() -> list[dict[str, Any]]:
    """The contract's domain events as declarations (`contracts.builtin_declarations()`)."""
    import contracts

    declarations = getattr(contracts, "builtin_declarations", None)
    if declarations is None:
        log.warning("contracts.builtin_declarations is not available: no built-in event types")
        return []
    return list(declarations())


def load_registry(
    dirs: Sequence[Path], builtins: Sequence[dict[str, Any]] | None = None
) -> Registry:
    """Read and check `dirs` (blocking). `builtins=None` means the contract's own events."""
    if builtins is None:
        builtins = contract_builtins()
    events, topics = read_declarations(dirs)
    return build_registry(events, topics, builtins)
