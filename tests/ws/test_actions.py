"""One table of actions: every action of the contract has exactly one handler,
typed with that action's payload class."""

from __future__ import annotations

import typing

from contracts import ACTIONS
from gateway.ws import actions
from gateway.ws.actions import HANDLERS


def test_every_contract_action_has_a_handler_and_nothing_else_does():
    assert set(HANDLERS) == set(ACTIONS)


def test_each_handler_takes_its_actions_payload_class():
    for name, handler in HANDLERS.items():
        from gateway.ws.connection import Connection

        hints = typing.get_type_hints(handler, {**vars(actions), "Connection": Connection})
        payload = [
            hint for key, hint in hints.items() if key not in ("conn", "action_id", "return")
        ]
        assert payload == [ACTIONS[name]], (name, payload)
