"""Access to the contract's golden fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import contracts

FIXTURES = Path(contracts.__file__).parent / "fixtures"


def fixture_names(kind: str) -> list[str]:
    return sorted(path.stem for path in (FIXTURES / kind).glob("*.json"))


def load_fixture(kind: str, name: str) -> dict:
    return json.loads((FIXTURES / kind / f"{name}.json").read_text("utf-8"))


def fixture_text(kind: str, name: str) -> str:
    return (FIXTURES / kind / f"{name}.json").read_text("utf-8")
