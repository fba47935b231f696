"""The reducer is specified once: the golden sequences in contracts/fixtures/reducer/.

Each file holds a GraphQL snapshot (the shape both the parity harness's
poller and the browser SDK read), then envelopes, each with the stream
position and the compared keys (`parity.model.flatten` of every observed
domain) the state must have after it. This test replays them through the
harness's own state model, exactly as its push observer does (snapshot with
`state_from_graphql`, durable events in `seq` order with `apply_event`, a
`seq` already applied dropped, `stream.skipped` advancing the position only);
the SDK's tests (clients/js/test/reducer.test.js) replay the same files
through its reducer, so the two cannot drift apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import contracts
from contracts import EVENT_TYPES
from parity.model import DOMAINS, flatten
from parity.state import apply_event, state_from_graphql

GOLDEN = Path(contracts.__file__).parent / "fixtures" / "reducer"
NAMES = sorted(path.stem for path in GOLDEN.glob("*.json"))


def _load(name: str) -> dict:
    return json.loads((GOLDEN / f"{name}.json").read_text("utf-8"))


def _keys(state) -> dict:
    """Every compared key of the state, with tuples as the JSON lists of the files."""
    out = {}
    for domain in DOMAINS:
        for key, value in flatten(state, domain).items():
            out[key] = list(value) if isinstance(value, tuple) else value
    return out


def test_there_are_golden_sequences_for_every_compared_domain():
    types = {
        step["envelope"]["type"].split(".", 1)[0] for name in NAMES for step in _load(name)["steps"]
    }
    assert {"notification", "chat", "follow", "event"} <= types
    assert len(NAMES) >= 5


@pytest.mark.parametrize("name", NAMES)
def test_golden_envelopes_follow_the_contract(name):
    for i, step in enumerate(_load(name)["steps"]):
        envelope = step["envelope"]
        spec = EVENT_TYPES[envelope["type"]]
        assert ("seq" in envelope) == spec.durable, (name, i)
        contracts.validate_event(envelope["type"], envelope["payload"])


@pytest.mark.parametrize("name", NAMES)
def test_the_harness_model_reduces_each_golden_sequence(name):
    golden = _load(name)
    user, watched = golden["userId"], golden["watchEvents"]
    state, _epoch, seq = state_from_graphql(user, golden["snapshot"], DOMAINS, watched)
    assert {"seq": seq, "keys": _keys(state)} == golden["expect"], "after the snapshot"
    for i, step in enumerate(golden["steps"]):
        envelope = step["envelope"]
        at = envelope.get("seq")
        if isinstance(at, int) and at > seq:
            assert at == seq + 1, f"step {i}: the golden stream has a gap"
            seq = at
            if envelope["type"] != "stream.skipped":
                state, _read = apply_event(
                    state, envelope["type"], envelope["payload"], watched_events=watched
                )
        assert {"seq": seq, "keys": _keys(state)} == step["expect"], (
            f"{name} step {i} ({envelope['type']})"
        )
