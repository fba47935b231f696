"""Fixtures shared by the report and gate tests."""

from __future__ import annotations

import datetime as _dt

import pytest

from parity.differ import Comparator
from parity.model import Observation
from parity.report import Traffic, build_report

NOW = _dt.datetime(2024, 6, 1, 12, 0, tzinfo=_dt.UTC)


def clean_history(users: int, changes: int) -> list[Observation]:
    """Push and poll agreeing on every change of every user's notification count."""
    rows = []
    for u in range(users):
        user = f"u{u}"
        for i in range(changes):
            rows.append(
                Observation("push", user, "notification", "notification.unread", i, i, i * 10.0)
            )
            rows.append(
                Observation("poll", user, "notification", "notification.unread", i, i, i * 10.0 + 2)
            )
    return rows


@pytest.fixture
def make_report():
    def make(
        domain="notification",
        *,
        users=10,
        changes=100,
        skew_every=0,
        stage="SHADOW",
        ended=NOW - _dt.timedelta(hours=1),
        kind="parity",
        **kw,
    ):
        rows = clean_history(users, changes)
        if skew_every:
            rows = [
                Observation(o.path, o.user_id, domain, o.key, o.value + 1, o.version, o.observed_at)
                if o.path == "push" and o.version % skew_every == 0
                else o
                for o in rows
            ]
        rows = [
            Observation(o.path, o.user_id, domain, o.key, o.value, o.version, o.observed_at)
            for o in rows
        ]
        diff = Comparator(5.0, right="push").compare(rows, end=changes * 10.0 + 100)
        return build_report(
            diff.for_domain(domain),
            kind=kind,
            stage=stage,
            config_hash=kw.pop("config_hash", "c" * 64),
            started_at=ended - _dt.timedelta(minutes=30),
            ended_at=ended,
            window=5.0,
            traffic={"poll": Traffic(1000, 2_000_000), "push": Traffic(1000, 300_000)},
            **kw,
        )

    return make
