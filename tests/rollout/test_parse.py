"""Reading the rollout file: values, defaults, and errors that point at the line."""

from __future__ import annotations

import hashlib
import re
import textwrap

import pytest

from gateway.rollout import (
    DOMAINS,
    DomainRollout,
    RolloutConfig,
    RolloutError,
    Stage,
    domain_of_event,
    load_rollout,
    parse_rollout,
)

EXAMPLE = textwrap.dedent(
    """\
    # Rollout of the push path, reviewed like code.
    [defaults]
    poll_interval_ms = 20000

    [domains.chat]
    stage = "LIVE"            # OFF | SHADOW | LIVE | RAMPDOWN | COMPLETE
    percent = 100
    poll_interval_ms = 30000

    [domains.notification]
    stage = "RAMPDOWN"
    percent = 25.5
    rampdown_poll_interval_ms = 600000

    [domains.presence]
    stage = "off"
    """
)


def test_example_file_is_parsed():
    config = parse_rollout(EXAMPLE, "flags.toml")
    assert config.path == "flags.toml"
    assert config.domains["chat"] == DomainRollout(Stage.LIVE, 100.0, 30_000, 300_000)
    assert config.domains["notification"] == DomainRollout(Stage.RAMPDOWN, 25.5, 20_000, 600_000)
    assert config.domains["presence"].stage is Stage.OFF
    # Domains not in the file get the defaults, with [defaults] applied.
    assert config.domains["follow"] == DomainRollout(Stage.SHADOW, 100.0, 20_000, 300_000)
    assert set(config.domains) == set(DOMAINS)
    assert config.source_hash == hashlib.sha256(EXAMPLE.encode()).hexdigest()


def test_no_file_means_shadow_for_everyone():
    config = RolloutConfig.default()
    assert config.path is None
    assert config.source_hash == hashlib.sha256(b"default").hexdigest()
    for domain in DOMAINS:
        assert config.domains[domain] == DomainRollout(Stage.SHADOW, 100.0, 30_000, 300_000)
        assert config.stage_for("anyone", domain) is Stage.SHADOW
        assert config.poll_interval_for("anyone", domain) == 30_000


def test_empty_file_gives_the_defaults():
    config = parse_rollout("")
    assert config.domains == RolloutConfig.default().domains
    assert config.source_hash != RolloutConfig.default().source_hash


def test_defaults_section_sets_the_stage_of_unlisted_domains():
    config = parse_rollout(
        '[defaults]\nstage = "LIVE"\npercent = 10\n[domains.chat]\nstage = "OFF"\n'
    )
    assert config.domains["follow"] == DomainRollout(Stage.LIVE, 10.0, 30_000, 300_000)
    assert config.domains["chat"] == DomainRollout(Stage.OFF, 10.0, 30_000, 300_000)


def test_inline_and_dotted_tables_are_accepted():
    config = parse_rollout('[domains]\nchat = { stage = "LIVE" }\nfollow.stage = "COMPLETE"\n')
    assert config.domains["chat"].stage is Stage.LIVE
    assert config.domains["follow"].stage is Stage.COMPLETE


def test_load_rollout_hashes_the_file_bytes(tmp_path):
    path = tmp_path / "flags.toml"
    path.write_bytes(EXAMPLE.encode())
    config = load_rollout(path)
    assert config.path == str(path)
    assert config.source_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert config.domains == parse_rollout(EXAMPLE).domains


def test_missing_file_is_a_rollout_error_naming_it(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(RolloutError, match=r"nope\.toml"):
        load_rollout(path)


def test_non_utf8_file_is_refused(tmp_path):
    path = tmp_path / "flags.toml"
    path.write_bytes(b'[domains.chat]\nstage = "\xff"\n')
    with pytest.raises(RolloutError, match="UTF-8"):
        load_rollout(path)


BAD_FILES = [
    # (text, line, fragment of the message)
    ('[domains.chat]\nstage = "LIVE"\npercent = 150\n', 3, "within 0..100"),
    ('[domains.chat]\nstage = "LIVE"\npercent = -1\n', 3, "within 0..100"),
    ('[domains.chat]\nstage = "LIVE"\n\n[domains.follow]\nstage = "HALFWAY"\n', 5, "unknown stage"),
    ('[domains.chat]\nstage = "LIVE"\n\n[domains.email]\nstage = "LIVE"\n', 4, "unknown domain"),
    ('[domains.chat]\nstage = "LIVE"\npercnt = 50\n', 3, "unknown key domains.chat.percnt"),
    ("[domains.chat]\nstage = 2\n", 2, "must be a string"),
    ('[domains.chat]\npercent = "50"\n', 2, "must be a number"),
    ("[domains.chat]\npercent = true\n", 2, "must be a number"),
    ("[domains.chat]\npoll_interval_ms = 1.5\n", 2, "must be an integer"),
    ("[domains.chat]\npoll_interval_ms = 0\n", 2, "must be positive"),
    ("[domains.chat]\nrampdown_poll_interval_ms = false\n", 2, "must be an integer"),
    ("# top\n\n[defaults]\npercent = 101\n", 4, "defaults.percent"),
    ('[defaults]\nstage = "LIVE"\nsurprise = 1\n', 3, "unknown key defaults.surprise"),
    ('version = 2\n[domains.chat]\nstage = "LIVE"\n', 1, "unknown key 'version'"),
    ('[domains]\nchat = "LIVE"\n', 2, "domains.chat must be a table"),
    ('domains = "all"\n', 1, "domains must be a table"),
    ('[domains]\nchat = { stage = "LIVE", percent = 200 }\n', 2, "within 0..100"),
    ('[domains.chat]\nstage = "LIVE"\npercent = \n', 3, "invalid TOML"),
    ("[domains.chat]\nstage = LIVE\n", 2, "invalid TOML"),
    ('[domains.chat]\nstage = "LIVE"\n[domains.chat]\nstage = "OFF"\n', 3, "invalid TOML"),
]


@pytest.mark.parametrize(("text", "line", "fragment"), BAD_FILES)
def test_every_error_names_the_file_and_line(text, line, fragment):
    with pytest.raises(RolloutError) as info:
        parse_rollout(text, "ops/flags.toml")
    error = info.value
    assert isinstance(error, ValueError)
    assert error.line == line
    assert error.path == "ops/flags.toml"
    assert str(error).startswith(f"ops/flags.toml:{line}: ")
    assert fragment in str(error)


def test_error_from_a_file_names_the_file(tmp_path):
    path = tmp_path / "flags.toml"
    path.write_text('[domains.chat]\nstage = "LIVE"\npercent = 400\n')
    with pytest.raises(RolloutError, match="^" + re.escape(f"{path}:3: ")):
        load_rollout(path)


def test_stages_are_ordered_with_a_previous_stage():
    assert Stage.OFF < Stage.SHADOW < Stage.LIVE < Stage.RAMPDOWN < Stage.COMPLETE
    assert max(Stage) is Stage.COMPLETE
    assert Stage.LIVE.previous is Stage.SHADOW
    assert Stage.SHADOW.previous is Stage.OFF
    assert Stage.OFF.previous is Stage.OFF
    assert Stage.COMPLETE.previous is Stage.RAMPDOWN
    assert Stage.LIVE.next is Stage.RAMPDOWN
    assert Stage.parse(" rampdown ") is Stage.RAMPDOWN
    with pytest.raises(ValueError):
        Stage.parse("ON")


@pytest.mark.parametrize(
    ("event_type", "domain"),
    [
        ("notification.created", "notification"),
        ("notification.read", "notification"),
        ("chat.message", "chat"),
        ("chat.conversation.read", "chat"),
        ("follow.request.created", "follow"),
        ("event.rsvp.updated", "event"),
        ("organization.announcement.created", "organization"),
        ("activity.feed.item", "activity"),
        ("user.presence.changed", "presence"),
        ("user.profile.updated", None),
        ("system.reconnect", None),
        ("session.welcome", None),
        ("billing.invoice.paid", None),
        ("chat", None),
        ("chatter.x", None),
        ("", None),
    ],
)
def test_domain_of_event(event_type, domain):
    assert domain_of_event(event_type) == domain
