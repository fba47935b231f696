"""The gate on live evidence (the store's audit and beacon counts), on reports, and
on both: the same rules, fail-closed, each verdict naming what it rests on."""

from __future__ import annotations

import datetime as _dt
import io

from gateway.events import iso
from gateway.rollout import Stage, parse_rollout
from gateway.store import open_store
from parity.gate import gate, judge_domain, run_gate, run_live_report
from parity.live import summarize
from parity.report import write_report

from .conftest import NOW

FLAGS = '[domains.notification]\nstage = "LIVE"\n[domains.chat]\nstage = "SHADOW"\n'


def rows(n=1000, against=0, *, hours_ago=1, domain="notification", source="audit", stage="SHADOW"):
    at = NOW - _dt.timedelta(hours=hours_ago)
    counts = {"MATCH": n - against}
    if against:
        counts["MISSING_PUSH"] = against
    return [
        {
            "hour": iso(at.replace(minute=0)),
            "domain": domain,
            "source": source,
            "stage": stage,
            "counts": counts,
            "samples": [{"class": "MISSING_PUSH", "key": "notification.unread"}] if against else [],
            "first_at": iso(at - _dt.timedelta(minutes=30)),
            "last_at": iso(at),
        }
    ]


def verdict(result, domain="notification"):
    return next(v for v in result.verdicts if v.domain == domain)


def judge(reports_dir=None, live_rows=None):
    return gate(parse_rollout(FLAGS), reports_dir, now=NOW, live_rows=live_rows)


def test_live_evidence_alone_passes_when_clean_and_big_enough():
    result = judge(live_rows=rows(700) + rows(300, source="beacon", stage="LIVE"))
    v = verdict(result)
    assert result.exit_code == 0 and v.outcome == "PASS", v.line()
    assert "live N=1000" in v.reason
    assert v.evidence and "audit N=700" in v.evidence[0] and "beacon N=300" in v.evidence[0]
    assert "evidence: live evidence N=1000" in v.line()


def test_live_evidence_alone_fails_on_divergence_and_holds_when_too_few():
    failed = verdict(judge(live_rows=rows(2000, against=40)))
    assert failed.outcome == "FAIL" and failed.rollback_to == "SHADOW"
    assert verdict(judge(live_rows=rows(150))).outcome == "INCONCLUSIVE"
    assert "too few" in verdict(judge(live_rows=rows(150))).reason
    assert verdict(judge(live_rows=rows(500))).outcome == "INCONCLUSIVE"  # under the 765


def test_missing_or_stale_live_evidence_fails_closed():
    missing = verdict(judge(live_rows=[]))
    assert missing.outcome == "FAIL" and "no live evidence" in missing.reason
    stale = verdict(judge(live_rows=rows(5000, hours_ago=30)))  # before the 24 h window
    assert stale.outcome == "FAIL" and "stale live evidence" in stale.reason
    other = verdict(judge(live_rows=rows(5000, domain="chat")))
    assert other.outcome == "FAIL"
    below = verdict(judge(live_rows=rows(5000, stage="OFF")))
    assert below.outcome == "FAIL"  # evidence made below SHADOW does not count


def test_reports_alone_keep_their_rules(make_report, tmp_path):
    write_report(make_report(), tmp_path)
    v = verdict(judge(reports_dir=tmp_path))
    assert v.outcome == "PASS" and v.evidence[0].startswith(f"report {tmp_path}/notification.json")


def test_both_must_hold(make_report, tmp_path):
    write_report(make_report(), tmp_path)
    both = verdict(judge(reports_dir=tmp_path, live_rows=rows(1000)))
    assert both.outcome == "PASS" and len(both.evidence) == 2
    assert both.reason.startswith("report: PASS") and "live: PASS" in both.reason


def test_conflicting_evidence_fails_and_says_so(make_report, tmp_path):
    write_report(make_report(), tmp_path)
    result = judge(reports_dir=tmp_path, live_rows=rows(2000, against=40))
    v = verdict(result)
    assert result.exit_code == 1 and v.outcome == "FAIL" and v.rollback_to == "SHADOW"
    assert "conflicting evidence" in v.line()
    assert "report: PASS" in v.reason and "live: FAIL" in v.reason
    # A passing report beside too little live evidence holds.
    held = verdict(judge(reports_dir=tmp_path, live_rows=rows(100)))
    assert held.outcome == "INCONCLUSIVE"


def test_a_step_counts_only_its_own_evidence_and_needs_its_soak():
    live = rows(1000, hours_ago=2)
    base = dict(rollout=parse_rollout(FLAGS), reports_dir=None, live_rows=live, now=NOW)
    ok = judge_domain("notification", Stage.SHADOW, **base, soak=_dt.timedelta(hours=1))
    assert ok.outcome == "PASS"
    young = judge_domain("notification", Stage.SHADOW, **base, soak=_dt.timedelta(hours=12))
    assert young.outcome == "INCONCLUSIVE" and "soaking" in young.reason
    before = judge_domain(
        "notification", Stage.SHADOW, **base, since=NOW - _dt.timedelta(minutes=30)
    )
    assert before.outcome == "FAIL"  # everything predates the step


def test_summaries_leave_out_what_compares_nothing():
    (domain,) = summarize(
        [{**rows(10)[0], "counts": {"MATCH": 10, "UNALIGNED": 5}, "source": "beacon"}]
    ).values()
    assert domain.n == 10 and domain.by_source == {"beacon": 10}


def test_the_cli_reads_live_evidence_from_a_store(tmp_path, make_report):
    url = f"sqlite:///{tmp_path}/evidence.db"
    now = _dt.datetime.now(_dt.UTC)
    store = open_store(url)
    fresh = rows(1000)[0]
    at = iso(now - _dt.timedelta(minutes=5))
    store.add_evidence(
        [{**fresh, "hour": iso(now.replace(minute=0, second=0)), "first_at": at, "last_at": at}]
    )
    store.close()
    flags = tmp_path / "rollout.toml"
    flags.write_text(FLAGS)
    out = io.StringIO()
    assert run_gate(flags, None, "7d", out=out, store_url=url) == 0, out.getvalue()
    assert "notification: PASS at LIVE" in out.getvalue()
    out = io.StringIO()
    assert run_gate(flags, None, "7d", out=out) == 1
    assert "no evidence" in out.getvalue()
    out = io.StringIO()
    assert run_live_report(url, "24h", out=out) == 0
    assert "notification" in out.getvalue() and "PASS" in out.getvalue()
    out = io.StringIO()
    assert run_live_report(f"sqlite:///{tmp_path}/empty.db", "24h", out=out) == 1
