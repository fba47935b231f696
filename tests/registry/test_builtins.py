"""The contract's own events in the registry, and the exported registry schema.

The built-ins come from `contracts.builtin_declarations()`; the contract's
golden event fixtures must validate against them through the registry. The
example registry's export is compared with a golden file
(`golden/examples.schema.json`; regenerate it deliberately when the examples
change, and review the diff as a contract change).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

import contracts
from gateway.registry import DeclarationInvalid, PayloadInvalid, contract_builtins, load_registry
from tests.registry.conftest import EXAMPLES, event_decl, write_json

FIXTURES = Path(contracts.__file__).resolve().parent / "fixtures" / "events"
GOLDEN = Path(__file__).resolve().parent / "golden" / "examples.schema.json"


@pytest.fixture(scope="module")
def registry():
    return load_registry([EXAMPLES])


def test_every_builtin_is_declared(registry):
    builtins = contract_builtins()
    assert builtins, "contracts.builtin_declarations() returned nothing"
    for declaration in builtins:
        event_type = registry.get(declaration["name"])
        assert event_type.builtin
        assert event_type.durable == declaration["durable"]
        if event_type.durable:
            assert event_type.recipients == "users"


def test_builtin_audiences_are_classified(registry):
    assert registry.get("chat.typing.started").topic == "conversation"
    assert registry.get("user.presence.updated").topic == "presence"
    assert registry.get("system.notice").recipients == "broadcast"


def golden_events(registry) -> list[dict]:
    frames = [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))]
    return [f for f in frames if f["type"] in registry]


def test_golden_event_fixtures_validate(registry):
    frames = golden_events(registry)
    assert len(frames) >= 10
    for frame in frames:
        registry.validate(frame["type"], frame["payload"])


def test_a_damaged_golden_fixture_is_refused_with_its_path(registry):
    frame = next(f for f in golden_events(registry) if f["type"] == "chat.message")
    damaged = copy.deepcopy(frame["payload"])
    damaged["message"]["senderId"] = 42
    with pytest.raises(PayloadInvalid) as info:
        registry.validate("chat.message", damaged)
    assert info.value.path == "$.payload.message.senderId"


def test_an_app_cannot_shadow_a_contract_event(registry_dir: Path):
    write_json(registry_dir / "chat.message.json", event_decl("chat.message.created"))
    write_json(
        registry_dir / "x.json", {**event_decl("notification.new.x"), "name": "chat.typing.stopped"}
    )
    with pytest.raises(DeclarationInvalid) as info:
        load_registry([registry_dir])
    assert info.value.source == str(registry_dir / "x.json")
    assert "built-in" in info.value.reason


def test_example_export_matches_golden():
    exported = load_registry([EXAMPLES], builtins=[]).json_schema()
    assert exported == json.loads(GOLDEN.read_text())
