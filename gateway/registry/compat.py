"""Compatibility of two registries: does NEW break clients written against OLD?

Every event type present in both under the same major version is compared
with `check_compat`; a new major version may break (it is served beside the
old one). A type whose name disappears entirely breaks its producers, whose
publishes are now refused. `run_check` is `cutover contracts check OLD NEW`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from gateway.registry._errors import DeclarationInvalid, UnknownEventType
from gateway.registry._registry import Registry, load_registry
from gateway.registry._schema_diff import CONSUMERS, PRODUCERS, Breaking, check_compat

__all__ = [
    "CONSUMERS",
    "PRODUCERS",
    "Breaking",
    "check_compat",
    "check_registries",
    "compare_registries",
    "run_check",
]


def compare_registries(old: Registry, new: Registry) -> list[str]:
    """Each breaking change from `old` to `new`, one readable line each."""
    problems: list[str] = []
    for old_type in old.types():
        label = f"{old_type.name} v{old_type.version}"
        if old_type.name not in new:
            problems.append(
                f"{label}: event type removed (breaks producers, whose publishes are refused)"
            )
            continue
        try:
            new_type = new.get(old_type.name, old_type.version)
        except UnknownEventType:
            continue  # replaced by another major version: allowed to break
        if old_type.durable != new_type.durable:
            problems.append(
                f"{label}: durable changed from {str(old_type.durable).lower()} to "
                f"{str(new_type.durable).lower()} (breaks consumers)"
            )
        if old_type.recipients != new_type.recipients:
            problems.append(
                f"{label}: recipients changed from {old_type.recipients} to "
                f"{new_type.recipients} (breaks consumers)"
            )
        problems.extend(
            f"{label}: {b}"
            for b in check_compat(old_type.schema, new_type.schema, root="$.payload")
        )
    return problems


def check_registries(
    old_dir: Path, new_dir: Path, builtins: Sequence[dict[str, Any]] | None = None
) -> list[str]:
    """Load both registry directories (blocking) and list the breaking changes.

    Raises `DeclarationInvalid` if either side cannot be loaded.
    """
    old = load_registry([Path(old_dir)], builtins)
    new = load_registry([Path(new_dir)], builtins)
    return compare_registries(old, new)


def run_check(
    old: Path,
    new: Path,
    out: TextIO | None = None,
    builtins: Sequence[dict[str, Any]] | None = None,
) -> int:
    """`cutover contracts check OLD NEW`: 0 compatible, 1 breaking, 2 a side cannot load."""
    out = sys.stdout if out is None else out
    try:
        problems = check_registries(old, new, builtins)
    except DeclarationInvalid as exc:
        print(f"cannot load registry: {exc.message}", file=out)
        return 2
    if not problems:
        print(f"compatible: {new} can replace {old} without breaking clients", file=out)
        return 0
    print(f"{len(problems)} breaking change(s) from {old} to {new}:", file=out)
    for line in problems:
        print(f"  - {line}", file=out)
    return 1
