"""The differ's classifications on crafted observation histories."""

from __future__ import annotations

import pytest

from parity.differ import COMPARATOR_VERSION, Classification, Comparator, Write
from parity.model import Observation, error_observation

C = Classification


def ob(path, key, value, version, t, user="u1", domain=None):
    if domain is None:
        domain = "event" if key.startswith("event:") else key.split(".")[0]
    return Observation(path, user, domain, key, value, version, t)


def classes(result, key=None):
    return [c.classification for c in result.comparisons if key is None or c.key == key]


def compare(observations, *, end=100.0, window=5.0, **kw):
    return Comparator(window, **kw).compare(observations, end=end)


def test_comparator_version_is_pinned():
    assert Comparator(1.0).version == COMPARATOR_VERSION == "cutover-parity/3"


def test_match_at_the_same_version():
    result = compare(
        [
            ob("push", "notification.unread", 1, 3, 9.0),
            ob("poll", "notification.unread", 1, 3, 10.0),
        ]
    )
    assert classes(result) == [C.MATCH]


def test_poll_value_matches_the_push_state_covering_its_cursor():
    result = compare(
        [
            ob("push", "notification.unread", 1, 5, 1.0),
            ob("push", "notification.unread", 2, 6, 2.0),
            ob("poll", "notification.unread", 1, 5, 1.5),
            ob("poll", "notification.unread", 2, 6, 4.0),
        ]
    )
    assert classes(result) == [C.MATCH, C.MATCH]


def test_poll_value_ahead_of_its_cursor_is_not_a_match():
    # A poll stands for exactly its cursor: data holding event 6 read at cursor 5
    # is not what push showed at 5 (only the time window can excuse it).
    result = compare(
        [
            ob("push", "notification.unread", 1, 5, 1.0),
            ob("push", "notification.unread", 2, 6, 2.0),
            ob("poll", "notification.unread", 2, 5, 2.5),
        ]
    )
    assert classes(result) == [C.CONVERGED_LATE]
    late = compare(
        [
            ob("push", "notification.unread", 1, 5, 1.0),
            ob("push", "notification.unread", 2, 6, 20.0),
            ob("poll", "notification.unread", 2, 5, 2.5),
        ]
    )
    assert classes(late) == [C.DIVERGED]


def test_stale_poll_value_at_a_version_push_had_left_diverges():
    result = compare(
        [
            ob("push", "notification.unread", 1, 5, 9.0),
            ob("push", "notification.unread", 2, 6, 12.0),
            ob("poll", "notification.unread", 1, 6, 20.0),
            ob("poll", "notification.unread", 2, 9, 30.0),
            ob("push", "notification.unread", 2, 9, 29.0),
        ]
    )
    assert classes(result) == [C.DIVERGED, C.MATCH]
    diverged = result.comparisons[0]
    assert diverged.left_value == 1 and diverged.right_value == 2


def test_disagreement_resolved_within_the_window_converges_late():
    result = compare(
        [
            ob("push", "notification.unread", 1, 5, 9.0),
            ob("poll", "notification.unread", 2, 5, 10.0),
            ob("push", "notification.unread", 2, 9, 12.0),
            ob("poll", "notification.unread", 2, 9, 20.0),
        ]
    )
    assert classes(result) == [C.CONVERGED_LATE, C.MATCH]


def test_disagreement_beyond_the_window_diverges():
    result = compare(
        [
            ob("push", "notification.unread", 1, 5, 9.0),
            ob("poll", "notification.unread", 2, 5, 10.0),
            ob("push", "notification.unread", 1, 6, 11.0),
            ob("push", "notification.unread", 2, 9, 40.0),
        ]
    )
    assert classes(result) == [C.DIVERGED]


def test_push_that_never_reaches_the_version_is_missing_push():
    result = compare(
        [
            ob("push", "notification.unread", 1, 5, 3.0),
            ob("poll", "notification.unread", 3, 7, 10.0),
        ]
    )
    assert classes(result) == [C.MISSING_PUSH]


def test_push_reaching_the_version_through_another_key_is_not_missing():
    # A chat event moved the stream to seq 7; the notification count is unchanged.
    result = compare(
        [
            ob("push", "notification.unread", 1, 5, 3.0),
            ob("push", "chat.total", 0, 7, 4.0),
            ob("poll", "notification.unread", 1, 7, 10.0),
            ob("poll", "chat.total", 0, 7, 10.0),
        ]
    )
    assert classes(result, "notification.unread") == [C.MATCH]


def test_push_without_the_key_is_missing_push():
    result = compare(
        [
            ob("push", "chat.total", 1, 7, 4.0),
            ob("poll", "chat.total", 1, 7, 10.0),
            ob("poll", "chat.conv:c1.unread", 1, 7, 10.0),
        ]
    )
    assert classes(result, "chat.conv:c1.unread") == [C.MISSING_PUSH]


def test_push_change_the_poll_path_never_reaches_is_missing_poll():
    result = compare(
        [
            ob("push", "notification.unread", 1, 3, 0.5),
            ob("poll", "notification.unread", 1, 3, 1.0),
            ob("push", "notification.unread", 2, 5, 10.0),
        ]
    )
    assert classes(result) == [C.MATCH, C.MISSING_POLL]


def test_candidate_error_near_an_entry_is_error_never_match():
    result = compare(
        [
            ob("push", "notification.unread", 1, 3, 9.0),
            ob("poll", "notification.unread", 1, 3, 10.0),
            error_observation("push", "u1", "notification", "connection lost", observed_at=11.0),
        ]
    )
    assert classes(result) == [C.ERROR]
    assert "connection lost" in result.comparisons[0].detail


def test_each_error_of_either_path_counts_once():
    result = compare(
        [
            ob("push", "notification.unread", 1, 3, 9.0),
            ob("poll", "notification.unread", 1, 3, 10.0),
            error_observation("poll", "u1", "notification", "HTTP 502", observed_at=40.0),
            error_observation("push", "u1", "notification", "resume refused", observed_at=60.0),
        ]
    )
    assert sorted(c.value for c in classes(result)) == ["ERROR", "ERROR", "MATCH"]
    assert result.for_domain("notification").divergent == 2


def test_no_observation_of_the_domain_on_a_path_is_nodata_and_not_counted():
    result = compare(
        [
            ob("poll", "chat.total", 1, 3, 10.0),
            ob("poll", "chat.total", 2, 4, 20.0),
            ob("push", "notification.unread", 0, 4, 5.0),
        ]
    )
    assert classes(result, "chat.total") == [C.NODATA]
    chat = result.for_domain("chat")
    assert chat.n == 0 and chat.counts()["NODATA"] == 1


def test_comparisons_cut_short_by_the_end_of_the_run_are_censored():
    result = compare(
        [
            ob("push", "notification.unread", 1, 5, 3.0),
            ob("poll", "notification.unread", 3, 7, 98.0),
        ],
        end=100.0,
    )
    assert classes(result) == []
    assert result.for_domain("notification").censored == 1


def test_unversioned_keys_align_by_time():
    key = "event:e1.counts"
    result = compare(
        [
            ob("push", key, (1, 0), None, 1.0),
            ob("poll", key, (1, 0), None, 2.0),
            ob("push", key, (2, 0), None, 10.0),
            ob("poll", key, (2, 0), None, 12.0),
            ob("poll", key, (5, 0), None, 40.0),
        ]
    )
    # push never moved past (2, 0): the change to (5, 0) never reached it
    assert classes(result) == [C.MATCH, C.MATCH, C.MISSING_PUSH]
    result = compare(
        [
            ob("push", key, (1, 0), None, 1.0),
            ob("poll", key, (1, 0), None, 2.0),
            ob("push", key, (2, 0), None, 10.0),
            ob("poll", key, (2, 0), None, 12.0),
            ob("push", key, (4, 0), None, 38.0),
            ob("poll", key, (5, 0), None, 40.0),
        ]
    )
    assert classes(result) == [C.MATCH, C.MATCH, C.DIVERGED]


def test_unversioned_poll_showing_an_older_value_converges_late():
    key = "event:e1.counts"
    result = compare(
        [
            ob("push", key, (1, 0), None, 1.0),
            ob("push", key, (2, 0), None, 10.0),
            ob("poll", key, (1, 0), None, 12.0),
        ]
    )
    assert classes(result) == [C.CONVERGED_LATE]


def test_latency_from_the_driver_write():
    comparator = Comparator(5.0)
    result = comparator.compare(
        [
            ob("push", "notification.unread", 0, 1, 0.0),
            ob("poll", "notification.unread", 0, 1, 1.0),
            ob("push", "notification.unread", 1, 2, 12.0),
            ob("poll", "notification.unread", 1, 2, 20.0),
        ],
        end=100.0,
        writes=[Write("u1", "notification", 11.5), Write("u1", "notification", 50.0)],
    )
    domain = result.for_domain("notification")
    assert domain.latency("poll") == [pytest.approx(8.5)]
    assert domain.latency("push") == [pytest.approx(0.5)]
    assert all(s.from_write for s in domain.latencies)


def test_latency_without_writes_is_relative_to_the_faster_path():
    result = compare(
        [
            ob("push", "notification.unread", 0, 1, 0.0),
            ob("poll", "notification.unread", 0, 1, 1.0),
            ob("push", "notification.unread", 1, 2, 12.0),
            ob("poll", "notification.unread", 1, 2, 20.0),
        ]
    )
    domain = result.for_domain("notification")
    assert domain.latency("push") == [0.0]
    assert domain.latency("poll") == [pytest.approx(8.0)]


def test_aa_run_compares_two_pollers_at_the_versions_both_read():
    result = compare(
        [
            ob("poll", "notification.unread", 1, 4, 7.0),
            ob("poll", "notification.unread", 2, 5, 10.0),
            ob("poll_b", "notification.unread", 1, 4, 8.0),
            ob("poll_b", "notification.unread", 2, 6, 13.0),
            ob("push", "notification.unread", 9, 5, 10.0),  # not part of an A/A run
        ],
        right="poll_b",
    )
    assert classes(result) == [C.MATCH]


def test_a_version_only_one_poller_read_is_unaligned_not_diverged():
    # poll_b skipped seq 5 (3 -> 2 -> 3 between its polls): nothing is known there.
    result = compare(
        [
            ob("poll", "notification.unread", 3, 4, 7.0),
            ob("poll", "notification.unread", 2, 5, 8.0),
            ob("poll", "notification.unread", 3, 6, 9.0),
            ob("poll_b", "notification.unread", 3, 4, 7.5),
            ob("poll_b", "notification.unread", 3, 6, 9.5),
        ],
        right="poll_b",
    )
    assert classes(result) == [C.MATCH, C.MATCH]
    assert result.unaligned == {"notification": 1}
    assert result.for_domain("notification").unaligned == 1
    assert result.for_domain("notification").n == 2


def test_two_pollers_disagreeing_at_one_version_diverge():
    result = compare(
        [
            ob("poll", "notification.unread", 2, 5, 8.0),
            ob("poll_b", "notification.unread", 3, 5, 8.1),
            ob("poll", "notification.unread", 2, 9, 30.0),
            ob("poll_b", "notification.unread", 2, 9, 30.1),
        ],
        right="poll_b",
    )
    assert classes(result) == [C.DIVERGED, C.MATCH]


def test_poll_b_missing_a_version_past_the_window_is_missing_push():
    result = compare(
        [
            ob("poll", "notification.unread", 2, 5, 8.0),
            ob("poll_b", "notification.unread", 1, 4, 7.0),
            ob("poll_b", "notification.unread", 2, 5, 30.0),
        ],
        right="poll_b",
    )
    assert classes(result)[0] is C.MISSING_PUSH


def test_users_are_compared_separately():
    result = compare(
        [
            ob("push", "notification.unread", 1, 3, 9.0, user="a"),
            ob("poll", "notification.unread", 1, 3, 10.0, user="a"),
            ob("push", "notification.unread", 4, 3, 9.0, user="b"),
            ob("poll", "notification.unread", 5, 3, 10.0, user="b"),
        ]
    )
    by_user = {c.user_id: c.classification for c in result.comparisons}
    assert by_user == {"a": C.MATCH, "b": C.DIVERGED}
    assert result.for_domain("notification").users == ("a", "b")


def test_bad_window_is_refused():
    with pytest.raises(ValueError):
        Comparator(0)
    with pytest.raises(ValueError):
        Comparator(1.0, left="push", right="push")
