"""The parity beacon endpoint over real HTTP against `cutover serve`: the welcome
announces the rate, bad and foreign beacons are refused (and counted by reason),
a user's flood is cut off, and the figures appear in /metrics and the admin summary."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.e2e.client import gql, ws_connect

STATE = "{ realtimeCursor { epoch seq } realtimeConfig { domains { domain stage } } }"


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if match and match.group(1) == name:
            have = ",".join(sorted((match.group(2) or "").split(","))) if match.group(2) else ""
            if have == wanted:
                return float(match.group(3))
    return 0.0


def beacon(user: str, epoch: str, seq: int, **sample) -> dict:
    return {
        "v": 1,
        "userId": user,
        "cursor": {"epoch": epoch, "seq": seq},
        "samples": [
            {
                "domain": "notification",
                "stage": "SHADOW",
                "outcome": "match",
                "keys": 1,
                "latencyMs": {"push": [12, 30], "poll": [2400]},
                **sample,
            }
        ],
    }


async def test_parity_beacons_are_checked_budgeted_and_counted(make_server, uid):
    server = make_server("--parity-sample-rate", "0.25", "--parity-beacons-per-minute", "10")
    alice, bob = uid("alice"), uid("bob")
    token = server.token(alice)
    async with ws_connect(server, alice) as ws:
        welcome = await ws.next_of("session.welcome")
    assert welcome["payload"]["parity"] == {
        "sampleRate": 0.25,
        "maxPerMinute": 10,
        "endpoint": "/realtime/parity",
    }
    data = await gql(server.url, token, STATE)
    epoch, seq = data["realtimeCursor"]["epoch"], data["realtimeCursor"]["seq"]
    assert {d["stage"] for d in data["realtimeConfig"]["domains"]} == {"SHADOW"}
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        before = (await http.get("/metrics")).text

        async def post(body, headers=auth, **kwargs):
            return await http.post("/realtime/parity", json=body, headers=headers, **kwargs)

        accepted = await post(beacon(alice, epoch, seq))
        mismatch = await post(
            beacon(alice, epoch, seq, outcome="mismatch", mismatched=["notification.unread"])
        )
        refusals = {
            "unauthenticated": await post(beacon(alice, epoch, seq), headers={}),
            "foreign": await post(beacon(bob, epoch, seq)),
            "bad field": await post(beacon(alice, epoch, seq, outcome="looks fine")),
            "not json": await http.post("/realtime/parity", content=b"{", headers=auth),
            "too big": await http.post("/realtime/parity", content=b"x" * 5000, headers=auth),
            "wrong stage": await post(beacon(alice, epoch, seq, stage="LIVE")),
            "future cursor": await post(beacon(alice, epoch, seq + 1000)),
            "other epoch": await post(beacon(alice, "not-the-epoch", seq)),
        }
        flood = [await post(beacon(alice, epoch, seq)) for _ in range(4)]
        after = (await http.get("/metrics")).text
        summary = await http.get(
            "/realtime/parity",
            headers={"Authorization": f"Bearer {server.token('ops', admin=True)}"},
        )
        not_admin = await http.get("/realtime/parity", headers=auth)

    assert accepted.status_code == 202 and accepted.json()["accepted"] == 1
    assert mismatch.status_code == 202
    expected = {
        "unauthenticated": (401, "UNAUTHORIZED", None),
        "foreign": (403, "FORBIDDEN", None),
        "bad field": (400, "BAD_REQUEST", "samples[0].outcome"),
        "not json": (400, "BAD_REQUEST", None),
        "too big": (413, "PAYLOAD_TOO_LARGE", None),
        "wrong stage": (409, "CONFLICT", "samples[0].stage"),
        "future cursor": (409, "CONFLICT", "cursor"),
        "other epoch": (409, "CONFLICT", "cursor"),
    }
    for name, (status, code, path) in expected.items():
        response = refusals[name]
        assert response.status_code == status, (name, response.text)
        error = response.json()["error"]
        assert error["code"] == code, name
        assert error.get("path") == path, name
    # the budget: 10 a minute, burst 5, spent by every well-formed beacon of the user:
    # the two accepted and the three conflicts; the flood is refused
    statuses = [r.status_code for r in flood]
    assert 429 in statuses, statuses
    limited = flood[statuses.index(429)]
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["code"] == "RATE_LIMITED"

    def grew(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert (
        grew(
            "cutover_parity_beacon_samples_total",
            domain="notification",
            stage="SHADOW",
            outcome="match",
        )
        >= 1
    )
    assert (
        grew(
            "cutover_parity_beacon_samples_total",
            domain="notification",
            stage="SHADOW",
            outcome="mismatch",
        )
        == 1
    )
    assert (
        grew("cutover_parity_beacon_latency_seconds_count", domain="notification", path="push") >= 4
    )
    assert (
        grew("cutover_parity_beacon_latency_seconds_count", domain="notification", path="poll") >= 2
    )
    for reason, count in {"forbidden": 1, "bad_request": 2, "conflict": 3}.items():
        assert grew("cutover_parity_beacons_refused_total", reason=reason) == count, reason
    assert grew("cutover_parity_beacons_refused_total", reason="rate_limited") == statuses.count(
        429
    )

    assert summary.status_code == 200
    rows = [r for r in summary.json()["windows"] if r["domain"] == "notification"]
    assert sum(r["mismatch"] for r in rows) == 1
    assert sum(r["match"] for r in rows) == 1 + statuses.count(202)
    assert rows[-1]["mismatchedKeys"] == {"notification.unread": 1}
    assert rows[-1]["latencyMs"]["poll"]["p50"] == 2400
    assert not_admin.status_code == 403


async def test_beacons_are_off_at_a_sample_rate_of_zero(make_server, uid):
    server = make_server("--parity-sample-rate", "0")
    user = uid("zero")
    data = await gql(server.url, server.token(user), STATE)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        response = await http.post(
            "/realtime/parity",
            json=beacon(user, data["realtimeCursor"]["epoch"], data["realtimeCursor"]["seq"]),
            headers={"Authorization": f"Bearer {server.token(user)}"},
        )
    assert response.status_code == 404


@pytest.mark.parametrize("rate", ["1.5", "-0.1"])
def test_a_sample_rate_outside_0_to_1_is_refused(rate):
    from gateway.config import ConfigError, settings_from

    with pytest.raises(ConfigError, match="parity_sample_rate"):
        settings_from({"parity_sample_rate": rate}, environ={})
