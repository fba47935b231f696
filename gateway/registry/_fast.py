"""A compiled first check of payloads (fastjsonschema), where it agrees with jsonschema.

jsonschema's `Draft202012Validator` stays the authority on every payload:
`Registry.validate` runs the compiled check first and returns at once when it
passes; when it refuses (or fails in any way) jsonschema checks the payload
again and its `best_match` makes the refusal, so refusals read exactly as
before. What makes this safe is that a compiled check never passes a payload
jsonschema would refuse, so a schema gets one only when every keyword in it
means the same in both (fastjsonschema compiled as draft-07, jsonschema
2020-12), with the values allowed below; any other schema is checked by
jsonschema alone:

- keywords: `type`, `enum`, `const`, `minimum`, `maximum`,
  `exclusiveMinimum`, `exclusiveMaximum`, `minLength`, `maxLength`,
  `minItems`, `maxItems`, `minProperties`, `maxProperties`, `required`,
  `properties`, `patternProperties`, `additionalProperties`,
  `propertyNames`, `items` (a schema, not a list), `contains`, `allOf`,
  `anyOf`, `oneOf`, `not`, `if`/`then`/`else`, `format`, `pattern`, and the
  annotations (`title`, `description`, `default` (never applied),
  `examples`, `$comment`, `deprecated`, `readOnly`, `writeOnly`; `$schema`
  at the root). Not: `$ref` and its kin, `multipleOf` (fastjsonschema
  divides floats exactly, jsonschema in floating point), `uniqueItems`,
  `dependentRequired`/`dependentSchemas`, `prefixItems`, `unevaluated*`,
  `min`/`maxContains`, any other keyword;
- `pattern`: fastjsonschema rewrites each `$` as `\\Z`, which matches at
  fewer places (not before a final newline), so it may only narrow what a
  pattern matches: a pattern with `$` has no lookbehind or negative
  lookahead, atomic group, possessive quantifier or conditional, where a
  narrower assertion could widen the match;
- `additionalProperties` not beside `patternProperties` (jsonschema joins
  the patterns into one regular expression there);
- `format`: each name is checked by jsonschema's own format checker (the
  one the registry's validators use), which fastjsonschema calls for
  strings only, so a format whose checker refuses some non-string value has
  no compiled check.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable
from typing import Any

import fastjsonschema
from jsonschema import FormatChecker

__all__ = ["FastCheck", "compile_fast_check"]

FastCheck = Callable[[Any], Any]
"""Returns when the payload is valid, raises when it is not (or cannot tell)."""

_DRAFT_07 = "http://json-schema.org/draft-07/schema#"

_SCHEMA = frozenset(
    {"additionalProperties", "contains", "else", "if", "items", "not", "propertyNames", "then"}
)
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf"})
_SCHEMA_MAPS = frozenset({"properties", "patternProperties"})
_VALUES = frozenset(
    {
        "type",
        "enum",
        "const",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "required",
        "format",
        "pattern",
    }
)
_ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "$comment",
        "deprecated",
        "readOnly",
        "writeOnly",
    }
)
# Values no JSON Schema format checker should refuse unless it checks non-strings.
_NON_STRINGS: tuple[Any, ...] = (0, -1, 1.5, True, False, None, [], [1], {}, {"a": 1})


def compile_fast_check(schema: Any, format_checker: FormatChecker) -> FastCheck | None:
    """The compiled check of a payload schema, or None when it could disagree with jsonschema."""
    formats: set[str] = set()
    if not _shared(schema, formats, root=True):
        return None
    patterns: set[str] = set()
    names: set[str] = set()
    _regex_texts(schema, patterns, names)
    if patterns & names:
        # fastjsonschema keeps its regexes by source text: a `pattern` of the same
        # text (compiled with `$` as `\Z`) would replace a property-name regex.
        return None
    checks: dict[str, Callable[[str], bool]] = {}
    for name in formats:
        conforms = functools.partial(_conforms, format_checker, name)
        if not all(conforms(value) for value in _NON_STRINGS):
            return None
        checks[name] = conforms
    definition = copy.deepcopy(schema)
    if isinstance(definition, dict):
        definition["$schema"] = _DRAFT_07
    try:
        return fastjsonschema.compile(definition, formats=checks, use_default=False)
    except Exception:  # a schema fastjsonschema cannot compile is checked by jsonschema alone
        return None


def _regex_texts(node: Any, patterns: set[str], names: set[str]) -> None:
    """Every `pattern` and every `patternProperties` key anywhere in `node`."""
    if isinstance(node, list):
        for each in node:
            _regex_texts(each, patterns, names)
    elif isinstance(node, dict):
        for keyword, value in node.items():
            if keyword == "pattern" and isinstance(value, str):
                patterns.add(value)
            elif keyword == "patternProperties" and isinstance(value, dict):
                names.update(key for key in value if isinstance(key, str))
            _regex_texts(value, patterns, names)


# Where a narrower `$` could widen what a pattern matches: negative lookarounds
# and lookbehinds, atomic groups, conditionals, possessive quantifiers.
_WIDENING = re.compile(r"\(\?<|\(\?!|\(\?>|\(\?\(|[*+?}]\+")


def _narrowing_only(pattern: Any) -> bool:
    """Whether fastjsonschema's `$` -> `\\Z` can only narrow what `pattern` matches."""
    return isinstance(pattern, str) and ("$" not in pattern or not _WIDENING.search(pattern))


def _conforms(checker: FormatChecker, name: str, value: Any) -> bool:
    return checker.conforms(value, name)


def _shared(schema: Any, formats: set[str], *, root: bool = False) -> bool:
    """Whether every keyword of `schema` (and its subschemas) means the same in both."""
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, dict):
        return False
    for keyword, value in schema.items():
        if keyword == "$schema" and root:
            continue
        if keyword in _ANNOTATIONS:
            continue
        if keyword in _SCHEMA:
            if keyword == "items" and not isinstance(value, (dict, bool)):
                return False
            if not _shared(value, formats):
                return False
        elif keyword in _SCHEMA_LISTS:
            if not isinstance(value, list) or not all(_shared(each, formats) for each in value):
                return False
        elif keyword in _SCHEMA_MAPS:
            if not isinstance(value, dict) or not all(
                _shared(each, formats) for each in value.values()
            ):
                return False

        elif keyword in _VALUES:
            if keyword == "pattern" and not _narrowing_only(value):
                return False
            if keyword == "format":
                if not isinstance(value, str):
                    return False
                formats.add(value)
        else:
            return False
    return not ("additionalProperties" in schema and "patternProperties" in schema)
