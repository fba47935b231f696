"""The compatibility checker: which schema changes break which clients."""

from __future__ import annotations

import copy
import io
import json
import shutil
from pathlib import Path

import pytest

from gateway.registry.compat import (
    CONSUMERS,
    PRODUCERS,
    check_compat,
    check_registries,
    run_check,
)
from tests.registry.conftest import EXAMPLES, write_json

BASE = {
    "type": "object",
    "properties": {
        "goalId": {"type": "string"},
        "note": {"type": "string"},
        "kind": {"enum": ["comment", "progress"]},
        "activity": {
            "type": "object",
            "properties": {"id": {"type": "string"}, "score": {"type": "integer"}},
            "required": ["id"],
        },
        "tags": {
            "type": "array",
            "items": {"type": "object", "properties": {"label": {"type": "string"}}},
        },
    },
    "required": ["goalId"],
}


def changed(edit) -> dict:
    schema = copy.deepcopy(BASE)
    edit(schema)
    return schema


def only(findings):
    assert len(findings) == 1, findings
    return findings[0]


def test_identical_schemas_are_compatible():
    assert check_compat(BASE, copy.deepcopy(BASE)) == []


def test_adding_an_optional_property_passes():
    new = changed(lambda s: s["properties"].__setitem__("extra", {"type": "boolean"}))
    assert check_compat(BASE, new) == []


def test_widening_passes():
    def widen(s):
        s["properties"]["kind"]["enum"].append("status")
        s["properties"]["goalId"]["type"] = ["string", "null"]
        s["properties"]["activity"]["properties"]["score"]["type"] = "number"

    assert check_compat(BASE, changed(widen)) == []


def test_removing_a_property_breaks_consumers():
    new = changed(lambda s: s["properties"].pop("note"))
    finding = only(check_compat(BASE, new))
    assert (finding.path, finding.change, finding.breaks) == (
        "$.note",
        "property-removed",
        (CONSUMERS,),
    )


def test_retyping_a_property_breaks_both():
    new = changed(lambda s: s["properties"]["goalId"].__setitem__("type", "integer"))
    finding = only(check_compat(BASE, new, root="$.payload"))
    assert finding.path == "$.payload.goalId"
    assert finding.change == "type-changed"
    assert set(finding.breaks) == {CONSUMERS, PRODUCERS}
    assert "string to integer" in finding.detail


def test_making_an_optional_property_required_breaks_producers():
    new = changed(lambda s: s["required"].append("note"))
    finding = only(check_compat(BASE, new))
    assert (finding.path, finding.change, finding.breaks) == (
        "$.note",
        "became-required",
        (PRODUCERS,),
    )


def test_adding_a_required_property_breaks_producers():
    def add(s):
        s["properties"]["ownerId"] = {"type": "string"}
        s["required"].append("ownerId")

    finding = only(check_compat(BASE, changed(add)))
    assert (finding.path, finding.change, finding.breaks) == (
        "$.ownerId",
        "required-added",
        (PRODUCERS,),
    )


def test_narrowing_an_enum_breaks_producers():
    new = changed(lambda s: s["properties"]["kind"].__setitem__("enum", ["comment"]))
    finding = only(check_compat(BASE, new))
    assert (finding.path, finding.change, finding.breaks) == (
        "$.kind",
        "enum-narrowed",
        (PRODUCERS,),
    )
    assert '"progress"' in finding.detail


def test_closing_additional_properties_breaks_producers():
    new = changed(lambda s: s.__setitem__("additionalProperties", False))
    finding = only(check_compat(BASE, new))
    assert (finding.path, finding.change) == ("$", "additional-properties-closed")


def test_making_a_required_property_optional_breaks_consumers():
    new = changed(lambda s: s.__setitem__("required", []))
    finding = only(check_compat(BASE, new))
    assert (finding.path, finding.breaks) == ("$.goalId", (CONSUMERS,))


def test_nested_objects_and_array_items_are_named():
    def nested(s):
        s["properties"]["activity"]["properties"].pop("id")
        s["properties"]["tags"]["items"]["properties"]["label"]["type"] = "integer"

    findings = check_compat(BASE, changed(nested), root="$.payload")
    paths = {(f.path, f.change) for f in findings}
    assert ("$.payload.activity.id", "property-removed") in paths
    assert ("$.payload.tags[*].label", "type-changed") in paths


def test_local_refs_are_followed():
    old = {
        "type": "object",
        "$defs": {"who": {"type": "object", "properties": {"id": {"type": "string"}}}},
        "properties": {"actor": {"$ref": "#/$defs/who"}},
    }
    new = copy.deepcopy(old)
    new["$defs"]["who"]["properties"]["id"]["type"] = "integer"
    finding = only(check_compat(old, new))
    assert finding.path == "$.actor.id"


def test_unanalyzed_keywords_are_reported_not_passed():
    new = changed(lambda s: s["properties"].__setitem__("note", {"anyOf": [{"type": "string"}]}))
    assert any(f.change == "keyword-changed" for f in check_compat(BASE, new))


def test_tightened_bounds_break_producers():
    new = changed(lambda s: s["properties"]["goalId"].__setitem__("maxLength", 10))
    finding = only(check_compat(BASE, new))
    assert (finding.change, finding.breaks) == ("bound-tightened", (PRODUCERS,))


@pytest.fixture
def two_copies(tmp_path: Path) -> tuple[Path, Path]:
    old, new = tmp_path / "old", tmp_path / "new"
    shutil.copytree(EXAMPLES, old)
    shutil.copytree(EXAMPLES, new)
    return old, new


def edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_run_check_compatible(two_copies):
    old, new = two_copies
    edit(
        new / "feed.like.created.json",
        lambda d: d["schema"]["properties"].__setitem__("emoji", {"type": "string"}),
    )
    out = io.StringIO()
    assert run_check(old, new, out, builtins=[]) == 0
    assert "compatible" in out.getvalue()


def test_run_check_breaking_lists_each_change(two_copies):
    old, new = two_copies
    edit(new / "feed.like.created.json", lambda d: d["schema"]["properties"].pop("likeCount"))
    (new / "sms.message.received.json").unlink()
    out = io.StringIO()
    assert run_check(old, new, out, builtins=[]) == 1
    text = out.getvalue()
    assert "2 breaking change(s)" in text
    assert "feed.like.created v1: $.payload.likeCount: property removed (breaks consumers)" in text
    assert "sms.message.received v1: event type removed" in text


def test_a_new_major_version_may_break(two_copies):
    old, new = two_copies

    def bump(d):
        d["version"] = 2
        d["schema"]["properties"].pop("likeCount")
        d["schema"]["required"].remove("likeCount")

    edit(new / "feed.like.created.json", bump)
    assert check_registries(old, new, builtins=[]) == []


def test_durability_change_is_breaking(two_copies):
    old, new = two_copies
    edit(
        new / "feed.like.created.json",
        lambda d: d.update(durable=False),
    )
    problems = check_registries(old, new, builtins=[])
    assert problems == [
        "feed.like.created v1: durable changed from true to false (breaks consumers)"
    ]


def test_run_check_unloadable_side(two_copies):
    old, new = two_copies
    bad = write_json(new / "goal.activity.created.json", "{")
    out = io.StringIO()
    assert run_check(old, new, out, builtins=[]) == 2
    assert str(bad) in out.getvalue()
    assert run_check(old, old.parent / "missing", io.StringIO(), builtins=[]) == 2
