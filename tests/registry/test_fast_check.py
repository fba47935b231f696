"""The compiled first check of payloads: it passes only what jsonschema passes, and
every refusal reads exactly as jsonschema's (same path, same reason)."""

from __future__ import annotations

import copy
import json
import math
import random
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from gateway.publish_api import PublishApi, PublishCredential
from gateway.registry import PayloadInvalid, Registry, build_registry, load_registry
from gateway.registry._fast import compile_fast_check
from tests.registry.conftest import EXAMPLES

FORMATS = Draft202012Validator.FORMAT_CHECKER

# Values where Python's types and JSON's part ways, or near a keyword's edge.
ATOMS: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    1.0,
    0.0,
    -0.5,
    2.5,
    100,
    100.0,
    101,
    2**70,
    -(2**70),
    1e308,
    math.inf,
    -math.inf,
    math.nan,
    "",
    "a",
    "a\n",
    "comment",
    "comment\n",
    "Comment",
    "x" * 40,
    "\U0001f600",
    "\ud800",
    "2026-02-17T10:00:00Z",
    "2026-02-30",
    "2026-02-17",
    "user@example.com",
    "not an email",
    "127.0.0.1",
    "999.0.0.1",
    "[",
    "a$",
    "ab",
    [],
    [1],
    ["a", "b"],
    [1, True],
    {},
    {"a": 1},
    {"id": "x"},
]

# Schemas covering each keyword the compiled check takes, with values at their edges.
SCHEMAS: list[dict[str, Any]] = [
    {"type": "integer", "minimum": 0, "maximum": 100},
    {"type": ["number", "null"], "exclusiveMinimum": 0, "exclusiveMaximum": 100},
    {"type": "boolean"},
    {"enum": [1, "a", None, [1], {"a": 1}]},
    {"enum": [True, 0.0, "comment"]},
    {"const": 1},
    {"const": False},
    {"const": {"a": 1}},
    {"type": "string", "minLength": 1, "maxLength": 2},
    {"type": "string", "pattern": "^a$"},
    {"pattern": "^[a-z]+$"},
    {"pattern": "b"},
    {"type": "string", "format": "date"},
    {"format": "email"},
    {"format": "ipv4"},
    {"format": "regex"},
    {"format": "date-time"},
    {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2},
    {"type": "array", "contains": {"type": "boolean"}},
    {"items": False},
    {"type": "object", "minProperties": 1, "maxProperties": 1},
    {"required": ["id"], "properties": {"id": {"type": "string", "minLength": 1}}},
    {"properties": {"a": {"const": 1}}, "additionalProperties": False},
    {"additionalProperties": {"type": "integer"}},
    {"patternProperties": {"^a$": {"type": "integer"}, "^i": {"type": "string"}}},
    {"propertyNames": {"maxLength": 1}},
    {"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 1}]},
    {"oneOf": [{"type": "number"}, {"type": "integer"}]},
    {"allOf": [{"type": "number"}, {"maximum": 1}]},
    {"not": {"type": ["string", "array"]}},
    {"if": {"type": "string"}, "then": {"minLength": 2}, "else": {"type": "array"}},
    {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "A record",
        "description": "Annotations only.",
        "type": "object",
        "properties": {
            "kind": {"enum": ["comment", "progress"], "default": "comment"},
            "score": {"type": "number", "minimum": 0, "examples": [1]},
        },
        "required": ["kind"],
        "$comment": "nothing to check",
    },
]


def _registry(schemas: list[dict[str, Any]], *, fast: bool) -> Registry:
    # As built-ins: a declared type's schema must be an object's, these are any values'.
    declarations = [
        {
            "name": f"t.s.n{n}",
            "version": 1,
            "durable": True,
            "recipients": "users",
            "schema": schema,
        }
        for n, schema in enumerate(schemas)
    ]
    built = build_registry([], builtins=declarations)
    return Registry(built.types(), built.topics(), fast_checks=fast)


def _outcome(registry: Registry, name: str, payload: Any) -> tuple[str, str, str] | None:
    try:
        registry.validate(name, payload)
    except PayloadInvalid as exc:
        return exc.path or "", exc.reason, exc.message
    return None


def _values(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth >= 2 or roll < 0.6:
        return copy.deepcopy(rng.choice(ATOMS))
    if roll < 0.8:
        return [_values(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["a", "id", "i", "ab", "kind", "score", "b"]
    return {rng.choice(keys): _values(rng, depth + 1) for _ in range(rng.randrange(4))}


def test_every_keyword_schema_here_gets_a_compiled_check():
    for schema in SCHEMAS:
        assert compile_fast_check(schema, FORMATS) is not None, schema


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#/$defs/a", "$defs": {"a": {"type": "string"}}},
        {"multipleOf": 0.1},
        {"uniqueItems": True},
        {"prefixItems": [{"type": "string"}]},
        {"dependentRequired": {"a": ["b"]}},
        {"unevaluatedProperties": False},
        {"contains": {"type": "string"}, "minContains": 2},
        {"properties": {"a": {"x-custom": 1}}},
        {"patternProperties": {"^a": {}}, "additionalProperties": False},
        {"pattern": "^(?!a$)"},
        {"pattern": "(?<=x)a$"},
        {"pattern": "(?>a)$"},
        {"pattern": "a++$"},
        {"allOf": [{"type": "string"}, {"$id": "urn:x"}]},
        # a key's regex would be replaced by the same text compiled as a `pattern`
        {"patternProperties": {"^[a-z]+$": {"type": "string", "pattern": "^[a-z]+$"}}},
    ],
)
def test_keywords_that_could_disagree_leave_the_schema_to_jsonschema(schema):
    Draft202012Validator.check_schema(schema)
    assert compile_fast_check(schema, FORMATS) is None


def test_a_pattern_property_name_is_checked_as_jsonschema_checks_it():
    schema = {
        "type": "object",
        "patternProperties": {"^[a-z]+$": {"type": "string", "pattern": "^[a-z]+$"}},
    }
    payload = {"abc\n": 5}  # `$` matches before a final newline; `\\Z` does not
    assert not Draft202012Validator(schema).is_valid(payload)
    check = compile_fast_check(schema, FORMATS)
    assert check is None or not _accepts(check, payload)


def _accepts(check: Any, payload: Any) -> bool:
    try:
        check(payload)
    except Exception:
        return False
    return True


def test_a_format_whose_checker_refuses_non_strings_gets_no_compiled_check():
    from jsonschema import FormatChecker

    checker = FormatChecker()
    checker.checks("even")(lambda value: isinstance(value, int) and value % 2 == 0)
    assert compile_fast_check({"format": "even"}, checker) is None
    assert compile_fast_check({"format": "ipv4"}, checker) is not None


def test_the_example_types_get_a_compiled_check():
    registry = load_registry([EXAMPLES], builtins=[])
    for event_type in registry.types():
        assert registry.fast_checked(event_type.name), event_type.name


def test_compiled_checks_agree_with_jsonschema_on_every_value():
    fast, reference = _registry(SCHEMAS, fast=True), _registry(SCHEMAS, fast=False)
    rng = random.Random(20260217)
    values = [*ATOMS, *(_values(rng) for _ in range(1500))]
    for n in range(len(SCHEMAS)):
        name = f"t.s.n{n}"
        assert fast.fast_checked(name)
        for value in values:
            assert _outcome(fast, name, value) == _outcome(reference, name, value), (
                SCHEMAS[n],
                value,
            )


def _mutations(rng: random.Random, payload: Any) -> Any:
    """A payload with one value replaced, removed or added somewhere in it."""
    mutated = copy.deepcopy(payload)
    node, path = mutated, []
    while isinstance(node, dict) and node and rng.random() < 0.7:
        key = rng.choice(sorted(node))
        path.append((node, key))
        node = node[key]
    if not path:
        return _values(rng)
    parent, key = path[-1]
    roll = rng.random()
    if roll < 0.6:
        parent[key] = _values(rng)
    elif roll < 0.8:
        del parent[key]
    else:
        parent[rng.choice(["extra", "id", "kind"])] = _values(rng)
    return mutated


GOOD = {
    "goal.activity.created": {
        "goalId": "g1",
        "activity": {
            "id": "a1",
            "kind": "progress",
            "actorId": "u1",
            "text": "t",
            "progress": 50,
            "createdAt": "2026-02-17T10:00:00Z",
        },
    },
    "feed.like.created": {
        "postId": "p",
        "likerId": "u",
        "likeCount": 3,
        "createdAt": "2026-02-17T10:00:00Z",
    },
}


def test_the_example_types_refuse_mutated_payloads_as_jsonschema_does():
    fast = load_registry([EXAMPLES], builtins=[])
    reference = Registry(fast.types(), fast.topics(), fast_checks=False)
    rng = random.Random(7)
    for event_type in fast.types():
        good = GOOD.get(event_type.name)
        if good is None:
            continue
        assert _outcome(fast, event_type.name, good) is None
        for _ in range(1500):
            payload = _mutations(rng, good)
            expected = _outcome(reference, event_type.name, payload)
            assert _outcome(fast, event_type.name, payload) == expected, payload


async def test_publish_refusals_are_word_for_word_those_of_jsonschema():
    fast = load_registry([EXAMPLES], builtins=[])
    reference = Registry(fast.types(), fast.topics(), fast_checks=False)
    credential = PublishCredential(subject="key:test")
    bad = copy.deepcopy(GOOD["goal.activity.created"])
    bad["activity"]["kind"] = "poke"
    bodies = [
        {"type": "goal.activity.created", "payload": bad, "to": {"users": ["bob"]}},
        {
            "events": [
                {
                    "type": "feed.like.created",
                    "payload": GOOD["feed.like.created"],
                    "to": {"users": ["bob"]},
                },
                {
                    "type": "feed.like.created",
                    "payload": {**GOOD["feed.like.created"], "likeCount": True},
                    "to": {"users": ["bob"]},
                },
            ]
        },
        {
            "type": "goal.activity.created",
            "payload": {"goalId": "", "activity": {}},
            "to": {"users": ["bob"]},
        },
    ]
    for body in bodies:
        answers = []
        for registry in (fast, reference):
            api = PublishApi(None, None, lambda r=registry: r, None, [])  # type: ignore[arg-type]
            answers.append(await api.handle(credential, copy.deepcopy(body)))
        assert answers[0] == answers[1]
        assert answers[0][0] == 422
        assert answers[0][1]["error"]["code"] == "PAYLOAD_INVALID"
    assert json.dumps(answers[0])  # the answer is JSON as it stands
