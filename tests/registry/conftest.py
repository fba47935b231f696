"""Shared helpers of the registry tests: writing declaration directories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "registry"

# Hand-made built-ins in the shape of `contracts.builtin_declarations()`.
BUILTINS: list[dict[str, Any]] = [
    {
        "name": "chat.message",
        "version": 1,
        "durable": True,
        "recipients": "users",
        "schema": {
            "type": "object",
            "properties": {"message": {"type": "object"}},
            "required": ["message"],
        },
    },
    {
        "name": "chat.typing.started",
        "version": 1,
        "durable": False,
        "recipients": "topic",
        "schema": {
            "type": "object",
            "properties": {"conversationId": {"type": "string"}, "userId": {"type": "string"}},
            "required": ["conversationId", "userId"],
        },
    },
    {
        "name": "system.notice",
        "version": 1,
        "durable": False,
        "recipients": "broadcast",
        "schema": {"type": "object"},
    },
]


def event_decl(name: str = "goal.activity.created", **overrides: Any) -> dict[str, Any]:
    decl: dict[str, Any] = {
        "name": name,
        "version": 1,
        "durable": True,
        "recipients": "users",
        "schema": {
            "type": "object",
            "properties": {"goalId": {"type": "string"}},
            "required": ["goalId"],
        },
    }
    decl.update(overrides)
    return decl


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture
def registry_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "registry"
    directory.mkdir()
    return directory
