"""`cutover rollout advance | back`: one step along the schedule, forward only on
evidence, back at once, the file written in place with its comments."""

from __future__ import annotations

import datetime as _dt
import io

import pytest

from gateway.events import iso
from gateway.rollout import load_rollout
from gateway.store import open_store
from parity.progress import advance, back
from parity.report import write_report

from .conftest import NOW

FILE = """\
# The production rollout. Reviewed like code.

[parity]
audit_sample = 0.1  # a tenth of the polls

[schedule]
steps = [
  { stage = "SHADOW", percent = 100, soak = "1h" },
  { stage = "LIVE", percent = 1, soak = "2h" },    # canary
  { stage = "LIVE", percent = 25, soak = "2h" },
  { stage = "LIVE", percent = 100, soak = "2h" },
  { stage = "RAMPDOWN", percent = 100, soak = "2h" },
  { stage = "COMPLETE", percent = 100 },
]

[domains.chat]
stage = "SHADOW"   # moved by cutover rollout
percent = 100
poll_interval_ms = 30000  # the legacy clients' interval

[domains.notification]
stage = "OFF"
"""


def evidence(n=1000, against=0, *, hours_ago=3, domain="chat", minutes=60):
    at = NOW - _dt.timedelta(hours=hours_ago)
    counts = {"MATCH": n - against, **({"DIVERGED": against} if against else {})}
    return [
        {
            "hour": iso(at.replace(minute=0)),
            "domain": domain,
            "source": "audit",
            "stage": "SHADOW",
            "counts": counts,
            "samples": [],
            "first_at": iso(at - _dt.timedelta(minutes=minutes)),
            "last_at": iso(at + _dt.timedelta(minutes=minutes)),
        }
    ]


@pytest.fixture
def flags(tmp_path):
    path = tmp_path / "production.toml"
    path.write_text(FILE)
    return path


def run(fn, *args, **kwargs):
    out = io.StringIO()
    code = fn(*args, out=out, now=NOW, **kwargs)
    return code, out.getvalue()


def line(flags, domain="chat"):
    return load_rollout(flags).domains[domain]


def test_advance_refuses_without_evidence(flags):
    code, text = run(advance, "chat", flags)
    assert code == 1 and "needs evidence" in text
    assert flags.read_text() == FILE
    code, text = run(advance, "chat", flags, live_rows=[])
    assert code == 1 and "no live evidence" in text
    assert flags.read_text() == FILE


def test_advance_refuses_on_a_fail_and_names_the_way_back(flags):
    code, text = run(advance, "chat", flags, live_rows=evidence(2000, against=50))
    assert code == 1 and "FAIL" in text and "cutover rollout back chat" in text
    assert flags.read_text() == FILE


def test_advance_holds_on_too_little_or_too_young_evidence(flags):
    code, text = run(advance, "chat", flags, live_rows=evidence(300))
    assert code == 2 and "hold" in text
    young = evidence(1000, hours_ago=0, minutes=20)  # began 20 minutes ago; the step soaks 1h
    code, text = run(advance, "chat", flags, live_rows=young)
    assert code == 2 and "soaking" in text
    assert flags.read_text() == FILE


def test_advance_moves_one_step_keeping_the_files_comments(flags):
    code, text = run(advance, "chat", flags, live_rows=evidence(1000))
    assert code == 0, text
    assert "chat: SHADOW 100% -> LIVE 1%" in text
    assert "evidence relied on" in text and "audit N=1000" in text
    written = flags.read_text()
    assert 'stage = "LIVE"   # moved by cutover rollout' in written
    assert "percent = 1\n" in written
    assert f'since = "{iso(NOW)}"' in written
    assert "poll_interval_ms = 30000  # the legacy clients' interval" in written
    assert "# canary" in written and written.startswith("# The production rollout.")
    # Only those three lines changed.
    changed = set(written.splitlines()) ^ set(FILE.splitlines())
    assert len(changed) == 5  # two lines replaced, one added


def test_the_next_step_counts_only_evidence_since_the_step_began(flags):
    assert run(advance, "chat", flags, live_rows=evidence(1000))[0] == 0
    # The evidence that moved it predates the new step: the next step needs its own.
    code, text = run(advance, "chat", flags, live_rows=evidence(1000))
    assert code == 1 and "live evidence only from an earlier step" in text
    assert "no evidence of the current step (LIVE 1%) yet" in text
    assert "roll back" not in text  # nothing wrong was seen
    assert line(flags).percent == 1


def test_advance_reads_reports_and_the_store(flags, tmp_path, make_report):
    reports = tmp_path / "reports"
    write_report(make_report("chat", ended=NOW - _dt.timedelta(hours=2)), reports)
    code, text = run(advance, "chat", flags, reports_dir=reports)
    assert code == 0, text
    assert f"report {reports}/chat.json" in text
    url = f"sqlite:///{tmp_path}/evidence.db"
    store = open_store(url)
    store.add_evidence(evidence(1000, hours_ago=0, minutes=10, domain="notification"))
    store.close()
    # notification is at OFF: SHADOW is the next step, and needs no evidence.
    code, text = run(advance, "notification", flags, store_url=url)
    assert code == 0 and "no evidence needed below LIVE" in text
    assert line(flags, "notification").stage.value == "SHADOW"


def test_a_file_without_a_schedule_or_past_its_end(flags, tmp_path):
    plain = tmp_path / "plain.toml"
    plain.write_text('[domains.chat]\nstage = "LIVE"\n')
    code, text = run(advance, "chat", plain, live_rows=evidence())
    assert code == 1 and "no [schedule]" in text
    done = tmp_path / "done.toml"
    done.write_text(FILE.replace('stage = "SHADOW"   #', 'stage = "COMPLETE"   #'))
    code, text = run(advance, "chat", done, live_rows=evidence())
    assert code == 1 and "the last step" in text
    assert run(advance, "weather", flags, live_rows=evidence())[0] == 1


def test_back_works_at_every_stage(flags):
    for _ in range(5):
        code, text = run(advance, "chat", flags, live_rows=evidence(hours_ago=3))
        # each step began at NOW: move it back in time so the next step's evidence counts
        flags.write_text(flags.read_text().replace(iso(NOW), iso(NOW - _dt.timedelta(hours=9))))
        assert code == 0, text
    assert (line(flags).stage.value, line(flags).percent) == ("COMPLETE", 100)
    seen = []
    while True:
        code, text = run(back, "chat", flags)
        if code:
            assert "no step before it" in text
            break
        assert "one step back" in text
        seen.append((line(flags).stage.value, line(flags).percent))
    assert seen == [
        ("RAMPDOWN", 100),
        ("LIVE", 100),
        ("LIVE", 25),
        ("LIVE", 1),
        ("SHADOW", 100),
        ("OFF", 100),
    ]
    assert "# moved by cutover rollout" in flags.read_text()


def test_back_without_a_schedule_goes_one_stage_back(tmp_path):
    plain = tmp_path / "plain.toml"
    plain.write_text('[domains.chat]\nstage = "LIVE"  # live\npercent = 40\n')
    code, _ = run(back, "chat", plain)
    assert code == 0
    assert plain.read_text().startswith('[domains.chat]\nstage = "SHADOW"  # live\npercent = 100\n')
