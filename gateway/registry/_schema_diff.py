"""Which changes between two payload schemas break which clients.

Pure. Two kinds of client read a schema differently:

- consumers read payloads: they break when something they may rely on
  disappears (a property removed, a required property made optional, a
  property's type changed);
- producers publish payloads: they break when the schema stops accepting
  what they send today (a property made required, a new required property,
  a narrowed type or enum, `additionalProperties` closed, a tightened bound).

Widening (a new optional property, an extra enum value, a wider type, a
looser bound) breaks nobody: within a major version the contract is
additive, and clients ignore what they do not know. Keywords whose change
is not analyzed (`anyOf`, `patternProperties`, ...) are reported as breaking
both sides when they differ, so a change is never passed unseen.
"""

from __future__ import annotations

import json
import re
from typing import Any

import attrs

__all__ = ["CONSUMERS", "PRODUCERS", "Breaking", "check_compat"]

CONSUMERS = "consumers"
PRODUCERS = "producers"
_BOTH = (CONSUMERS, PRODUCERS)

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Lower bounds: raising one (or adding one) tightens the schema.
_LOWER = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
# Upper bounds: lowering one (or adding one) tightens the schema.
_UPPER = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
# Added or changed, these accept fewer values.
_TIGHTEN_ON_CHANGE = ("pattern", "format", "multipleOf")
# Not analyzed: any difference is reported as breaking both sides.
_UNANALYZED = (
    "anyOf",
    "oneOf",
    "allOf",
    "not",
    "if",
    "then",
    "else",
    "patternProperties",
    "propertyNames",
    "dependentRequired",
    "dependentSchemas",
    "unevaluatedProperties",
    "unevaluatedItems",
    "prefixItems",
    "contains",
)


@attrs.frozen
class Breaking:
    """One incompatible change: where, what, and which clients it breaks."""

    path: str
    change: str
    detail: str
    breaks: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.path}: {self.detail} (breaks {' and '.join(self.breaks)})"


def check_compat(
    old_schema: dict[str, Any], new_schema: dict[str, Any], *, root: str = "$"
) -> list[Breaking]:
    """Every breaking change from `old_schema` to `new_schema`, by JSON path under `root`."""
    comparer = _Comparer(old_schema, new_schema)
    comparer.compare(old_schema, new_schema, root)
    return comparer.found


def _prop(path: str, name: str) -> str:
    return f"{path}.{name}" if _IDENT.match(name) else f"{path}[{json.dumps(name)}]"


def _types(schema: dict[str, Any]) -> frozenset[str] | None:
    value = schema.get("type")
    if value is None:
        return None
    return frozenset([value] if isinstance(value, str) else value)


def _covered(kind: str, types: frozenset[str]) -> bool:
    return kind in types or (kind == "integer" and "number" in types)


def _fmt_types(types: frozenset[str] | None) -> str:
    return "any" if types is None else "|".join(sorted(types))


def _short(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


class _Comparer:
    """Walks two schemas side by side, collecting `Breaking` findings."""

    def __init__(self, old_root: dict[str, Any], new_root: dict[str, Any]) -> None:
        self.old_root = old_root
        self.new_root = new_root
        self.found: list[Breaking] = []
        self._seen: set[tuple[str | None, str | None, str]] = set()

    def _add(self, path: str, change: str, detail: str, breaks: tuple[str, ...]) -> None:
        self.found.append(Breaking(path, change, detail, breaks))

    def _resolve(self, schema: Any, root: dict[str, Any]) -> tuple[Any, str | None]:
        """Follow a local `$ref` (`#/...`) to its target; other refs stay as they are."""
        ref = schema.get("$ref") if isinstance(schema, dict) else None
        if not isinstance(ref, str) or not ref.startswith("#"):
            return schema, None
        target: Any = root
        for part in ref[1:].split("/")[1:] if ref != "#" else []:
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or part not in target:
                return schema, None
            target = target[part]
        if isinstance(target, dict):
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            return {**target, **siblings}, ref
        return target, ref

    def compare(self, old: Any, new: Any, path: str) -> None:
        old, old_ref = self._resolve(old, self.old_root)
        new, new_ref = self._resolve(new, self.new_root)
        if old_ref is not None or new_ref is not None:
            key = (old_ref, new_ref, path)
            if key in self._seen:
                return
            self._seen.add(key)
        if old == new:
            return
        if old is False or new is True:
            return  # nothing was accepted before, or everything is accepted now
        if new is False:
            self._add(path, "value-forbidden", "no value is accepted any more", (PRODUCERS,))
            return
        if old is True:
            old = {}
        if not isinstance(old, dict) or not isinstance(new, dict):
            return
        if "$ref" in old or "$ref" in new:
            if old.get("$ref") != new.get("$ref"):
                self._add(path, "ref-changed", "external $ref changed", _BOTH)
            return

        for keyword in _UNANALYZED:
            if old.get(keyword) != new.get(keyword):
                self._add(
                    path,
                    "keyword-changed",
                    f"{keyword!r} changed; the change is not analyzed",
                    _BOTH,
                )

        self._compare_types(old, new, path)
        self._compare_values(old, new, path)
        self._compare_bounds(old, new, path)
        self._compare_object(old, new, path)
        self._compare_array(old, new, path)

    def _compare_types(self, old: dict, new: dict, path: str) -> None:
        old_t, new_t = _types(old), _types(new)
        if new_t is None:
            return  # any type is accepted now: widening
        lost = (
            frozenset({"<any>"})
            if old_t is None
            else frozenset(t for t in old_t if not _covered(t, new_t))
        )
        if not lost:
            return
        gained = old_t is not None and any(not _covered(t, old_t) for t in new_t)
        detail = f"type changed from {_fmt_types(old_t)} to {_fmt_types(new_t)}"
        if gained or (old_t is not None and not (old_t & new_t)):
            self._add(path, "type-changed", detail, _BOTH)
        else:
            self._add(path, "type-narrowed", detail, (PRODUCERS,))

    def _compare_values(self, old: dict, new: dict, path: str) -> None:
        if "const" in new and old.get("const", object()) != new["const"]:
            if "const" in old:
                detail = f"const changed from {_short(old['const'])} to {_short(new['const'])}"
                self._add(path, "const-changed", detail, _BOTH)
            else:
                self._add(path, "const-added", f"now fixed to {_short(new['const'])}", (PRODUCERS,))
        if "enum" in new:
            if "enum" not in old:
                self._add(path, "enum-added", "now limited to an enum", (PRODUCERS,))
            else:
                removed = [v for v in old["enum"] if v not in new["enum"]]
                if removed:
                    detail = "enum narrowed: " + ", ".join(_short(v) for v in removed) + " removed"
                    self._add(path, "enum-narrowed", detail, (PRODUCERS,))

    def _compare_bounds(self, old: dict, new: dict, path: str) -> None:
        for keyword in _LOWER:
            if keyword in new and (keyword not in old or new[keyword] > old[keyword]):
                self._add(
                    path, "bound-tightened", f"{keyword} raised to {new[keyword]}", (PRODUCERS,)
                )
        for keyword in _UPPER:
            if keyword in new and (keyword not in old or new[keyword] < old[keyword]):
                self._add(
                    path, "bound-tightened", f"{keyword} lowered to {new[keyword]}", (PRODUCERS,)
                )
        for keyword in _TIGHTEN_ON_CHANGE:
            if keyword in new and old.get(keyword) != new[keyword]:
                self._add(
                    path,
                    "constraint-tightened",
                    f"{keyword} now {_short(new[keyword])}",
                    (PRODUCERS,),
                )
        if new.get("uniqueItems") is True and old.get("uniqueItems") is not True:
            self._add(path, "constraint-tightened", "items must now be unique", (PRODUCERS,))

    def _compare_object(self, old: dict, new: dict, path: str) -> None:
        old_props: dict = old.get("properties", {})
        new_props: dict = new.get("properties", {})
        old_req = set(old.get("required", ()))
        new_req = set(new.get("required", ()))
        old_extra = old.get("additionalProperties", True)
        new_extra = new.get("additionalProperties", True)

        for name, old_sub in old_props.items():
            where = _prop(path, name)
            if name in new_props:
                self.compare(old_sub, new_props[name], where)
                continue
            breaks = (CONSUMERS, PRODUCERS) if new_extra is False else (CONSUMERS,)
            self._add(where, "property-removed", "property removed", breaks)
            if isinstance(new_extra, dict) and new_extra:
                self.compare(old_sub, new_extra, where)

        for name, new_sub in new_props.items():
            if name not in old_props and isinstance(old_extra, dict):
                self.compare(old_extra, new_sub, _prop(path, name))

        for name in sorted(new_req - old_req):
            where = _prop(path, name)
            if name in old_props:
                self._add(where, "became-required", "optional property made required", (PRODUCERS,))
            else:
                self._add(where, "required-added", "new required property", (PRODUCERS,))
        for name in sorted(old_req - new_req):
            if name in new_props or new_extra is not False:
                self._add(
                    _prop(path, name),
                    "became-optional",
                    "required property made optional: it may now be absent",
                    (CONSUMERS,),
                )

        if new_extra is False and old_extra is not False:
            self._add(
                path,
                "additional-properties-closed",
                "additionalProperties tightened to false",
                (PRODUCERS,),
            )
        elif isinstance(new_extra, dict) and old_extra is not False:
            self.compare(old_extra if isinstance(old_extra, dict) else {}, new_extra, f"{path}.*")

    def _compare_array(self, old: dict, new: dict, path: str) -> None:
        if "items" in new:
            self.compare(old.get("items", {}), new["items"], f"{path}[*]")
