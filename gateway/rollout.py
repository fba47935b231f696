"""The rollout file: per domain, how far each user has moved from polling to push.

The file is TOML, reviewed like code:

    [defaults]
    poll_interval_ms = 30000

    [domains.chat]
    stage = "LIVE"            # OFF | SHADOW | LIVE | RAMPDOWN | COMPLETE
    percent = 100             # users at this stage; the rest stay one stage back
    poll_interval_ms = 30000  # what polling clients are told at OFF/SHADOW/LIVE
    rampdown_poll_interval_ms = 300000  # the sampled check at RAMPDOWN

A user's stage is sticky: `bucket(user_id)` is a stable hash of the user id
in [0, 100), shared by every domain, so raising a percentage only adds users
and the same users move together across domains (PROTOCOL.md section 3).

Two optional tables steer the evidence and the automated rollout:

    [parity]
    audit_sample = 0.1        # share of polling requests each node audits (0..1; 0 = off)
    audit_window_ms = 2000    # how long push has to deliver what a poll showed

    [schedule]                # what `cutover rollout advance` steps through
    steps = [
      { stage = "SHADOW", percent = 100, soak = "24h" },
      { stage = "LIVE", percent = 1, soak = "24h" },
      { stage = "LIVE", percent = 100, soak = "48h" },
      { stage = "RAMPDOWN", percent = 100, soak = "72h" },
      { stage = "COMPLETE", percent = 100 },
    ]

and a domain's `since` (written by `cutover rollout`) says when its current
step began; only evidence gathered since then counts towards the next step.

Everything here is pure except `RolloutWatcher`, which reloads the file when
it changes and keeps the last good configuration when an edit is invalid.
"""

from __future__ import annotations

import enum
import hashlib
import inspect
import logging
import os
import re
import tomllib
from collections.abc import Callable
from typing import Any

import attrs
import trio

from gateway.events import parse_iso

__all__ = [
    "DOMAINS",
    "DomainRollout",
    "ParitySettings",
    "RolloutConfig",
    "RolloutError",
    "RolloutWatcher",
    "Stage",
    "Step",
    "bucket",
    "domain_of_event",
    "load_rollout",
    "parse_duration",
    "parse_rollout",
]

log = logging.getLogger("cutover.rollout")

DOMAINS: tuple[str, ...] = (
    "notification",
    "chat",
    "follow",
    "event",
    "organization",
    "activity",
    "presence",
)
DOMAIN_KEYS = ("stage", "percent", "poll_interval_ms", "rampdown_poll_interval_ms", "since")
TOP_LEVEL_KEYS = ("defaults", "domains", "parity", "schedule")
PARITY_KEYS = ("audit_sample", "audit_window_ms")
STEP_KEYS = ("stage", "percent", "soak")


class RolloutError(ValueError):
    """An unusable rollout file; the message names the file and the line."""

    def __init__(self, reason: str, *, path: str | None = None, line: int | None = None) -> None:
        where = path or "<rollout>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {reason}")
        self.reason = reason
        self.path = path
        self.line = line


class Stage(enum.Enum):
    """How far a domain has moved from polling to push, in order."""

    OFF = "OFF"
    SHADOW = "SHADOW"
    LIVE = "LIVE"
    RAMPDOWN = "RAMPDOWN"
    COMPLETE = "COMPLETE"

    @property
    def rank(self) -> int:
        return _STAGE_ORDER.index(self)

    @property
    def previous(self) -> Stage:
        """The stage before this one (OFF stays OFF)."""
        return _STAGE_ORDER[max(self.rank - 1, 0)]

    @property
    def next(self) -> Stage:
        """The stage after this one (COMPLETE stays COMPLETE)."""
        return _STAGE_ORDER[min(self.rank + 1, len(_STAGE_ORDER) - 1)]

    @classmethod
    def parse(cls, text: str) -> Stage:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = " | ".join(stage.value for stage in cls)
            raise ValueError(f"unknown stage {text!r} (expected {names})") from None

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Stage):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Stage):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Stage):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Stage):
            return NotImplemented
        return self.rank >= other.rank


_STAGE_ORDER: tuple[Stage, ...] = tuple(Stage)


def bucket(user_id: str) -> float:
    """A user's sticky position in [0, 100), the same for every domain."""
    digest = hashlib.sha256(user_id.encode("utf-8")).digest()
    # 53 bits keep the float exact, so the result is strictly below 100.
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53) * 100.0


@attrs.frozen
class DomainRollout:
    """One domain's line in the rollout file."""

    stage: Stage = Stage.SHADOW
    percent: float = 100.0
    poll_interval_ms: int = 30_000
    rampdown_poll_interval_ms: int = 300_000
    since: str | None = None  # when the current step began (`cutover rollout` writes it)

    @property
    def position(self) -> tuple[int, float]:
        """Where the domain stands, for ordering against the schedule's steps."""
        return (self.stage.rank, self.percent)


@attrs.frozen
class ParitySettings:
    """The `[parity]` table: the server-side audit of real polling requests."""

    audit_sample: float = 0.0
    audit_window_ms: int = 2_000


@attrs.frozen
class Step:
    """One step of the `[schedule]`: a stage at a percentage, held at least `soak_s`."""

    stage: Stage
    percent: float = 100.0
    soak_s: float = 0.0
    soak: str = "0s"

    @property
    def position(self) -> tuple[int, float]:
        return (self.stage.rank, self.percent)

    def describe(self) -> str:
        return f"{self.stage.value} {self.percent:g}%"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """`30s`, `45m`, `12h`, `7d`, `2w` in seconds; ValueError otherwise."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"bad duration {text!r} (expected e.g. 30m, 12h, 7d)")
    amount, unit = match.groups()
    return float(amount) * _UNITS[unit]


DEFAULT_DOMAIN = DomainRollout()
_DEFAULT_HASH = hashlib.sha256(b"default").hexdigest()


@attrs.frozen
class RolloutConfig:
    """Every domain's rollout, and where it came from."""

    domains: dict[str, DomainRollout]
    source_hash: str = _DEFAULT_HASH
    path: str | None = None
    parity: ParitySettings = ParitySettings()
    schedule: tuple[Step, ...] = ()

    @classmethod
    def default(cls) -> RolloutConfig:
        """Every domain in SHADOW for all users, polling every 30 s."""
        return cls({name: DEFAULT_DOMAIN for name in DOMAINS}, _DEFAULT_HASH, None)

    def rollout(self, domain: str) -> DomainRollout:
        try:
            return self.domains[domain]
        except KeyError:
            raise ValueError(f"unknown rollout domain {domain!r}") from None

    def stage_for(self, user_id: str, domain: str) -> Stage:
        """The user's stage: the domain's stage inside its percentage, one back outside."""
        rollout = self.rollout(domain)
        if bucket(user_id) < rollout.percent:
            return rollout.stage
        return rollout.stage.previous

    def poll_interval_for(self, user_id: str, domain: str) -> int | None:
        """How often the user's client polls the domain; None: it does not poll."""
        stage = self.stage_for(user_id, domain)
        rollout = self.domains[domain]
        if stage is Stage.COMPLETE:
            return None
        if stage is Stage.RAMPDOWN:
            return rollout.rampdown_poll_interval_ms
        return rollout.poll_interval_ms

    def push_enabled(self, user_id: str, domain: str) -> bool:
        """Whether the push path delivers this domain to the user."""
        return self.stage_for(user_id, domain) is not Stage.OFF

    def view_for(self, user_id: str) -> dict[str, dict[str, Any]]:
        """The user's stages as the welcome frame's `domains` shows them."""
        return {
            domain: {
                "stage": self.stage_for(user_id, domain).value,
                "pollIntervalMs": self.poll_interval_for(user_id, domain),
            }
            for domain in DOMAINS
        }

    def summary(self) -> str:
        """One line for logs: `chat=LIVE@100% ...`."""
        return " ".join(
            f"{name}={rollout.stage.value}@{rollout.percent:g}%"
            for name, rollout in self.domains.items()
        )


_EVENT_PREFIXES: tuple[tuple[str, str], ...] = (
    ("notification.", "notification"),
    ("chat.", "chat"),
    ("follow.", "follow"),
    ("event.", "event"),
    ("organization.", "organization"),
    ("activity.", "activity"),
    ("user.presence.", "presence"),
)


def domain_of_event(event_type: str) -> str | None:
    """The rollout domain an event type belongs to; None for session, system and custom types."""
    for prefix, domain in _EVENT_PREFIXES:
        if event_type.startswith(prefix):
            return domain
    return None


# -- parsing -----------------------------------------------------------------

_TOML_POSITION = re.compile(r"\(at line (\d+), column \d+\)")
_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(?:#.*)?$")
_KEY_VALUE = re.compile(
    r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*="""
)


def _split_key(text: str) -> tuple[str, ...]:
    parts = re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", text)
    return tuple(part.strip("\"'") for part in parts)


def _line_of(text: str, keypath: tuple[str, ...]) -> int | None:
    """The 1-based line that defines `keypath` (or its nearest enclosing table)."""
    table: tuple[str, ...] = ()
    best: tuple[int, int] | None = None  # (matched length, line)
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header and not line.lstrip().startswith("[["):
            table = _split_key(header.group(1))
            candidate = table
        else:
            key_value = _KEY_VALUE.match(line)
            if not key_value:
                continue
            candidate = table + _split_key(key_value.group(1))
        if keypath[: len(candidate)] == candidate and (best is None or len(candidate) > best[0]):
            best = (len(candidate), number)
            if len(candidate) == len(keypath):
                break
    return None if best is None else best[1]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Checker:
    """Turns the decoded TOML into a `RolloutConfig`, locating each error in the text."""

    def __init__(self, text: str, path: str | None) -> None:
        self.text = text
        self.path = path

    def fail(self, keypath: tuple[str, ...], reason: str) -> RolloutError:
        return RolloutError(reason, path=self.path, line=_line_of(self.text, keypath))

    def table(self, value: Any, keypath: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(keypath, f"{'.'.join(keypath)} must be a table")
        return value

    def domain(
        self, raw: dict[str, Any], base: DomainRollout, keypath: tuple[str, ...]
    ) -> DomainRollout:
        values: dict[str, Any] = {}
        dotted = ".".join(keypath)
        for key, value in raw.items():
            where = (*keypath, key)
            if key not in DOMAIN_KEYS:
                raise self.fail(
                    where, f"unknown key {dotted}.{key} (expected one of {', '.join(DOMAIN_KEYS)})"
                )
            if key == "stage":
                if not isinstance(value, str):
                    raise self.fail(where, f"{dotted}.stage must be a string, got {value!r}")
                try:
                    values["stage"] = Stage.parse(value)
                except ValueError as exc:
                    raise self.fail(where, f"{dotted}.stage: {exc}") from None
            elif key == "since":
                if not isinstance(value, str):
                    raise self.fail(where, f"{dotted}.since must be a time string, got {value!r}")
                try:
                    parse_iso(value)
                except (TypeError, ValueError):
                    raise self.fail(
                        where, f"{dotted}.since must be an ISO-8601 UTC time, got {value!r}"
                    ) from None
                values["since"] = value
            elif key == "percent":
                if not _is_number(value):
                    raise self.fail(where, f"{dotted}.percent must be a number, got {value!r}")
                if not 0 <= value <= 100:
                    raise self.fail(where, f"{dotted}.percent must be within 0..100, got {value}")
                values["percent"] = float(value)
            else:
                if not isinstance(value, int) or isinstance(value, bool):
                    raise self.fail(where, f"{dotted}.{key} must be an integer, got {value!r}")
                if value <= 0:
                    raise self.fail(where, f"{dotted}.{key} must be positive, got {value}")
                values[key] = value
        return attrs.evolve(base, **values)

    def parity(self, raw: dict[str, Any]) -> ParitySettings:
        values: dict[str, Any] = {}
        for key, value in raw.items():
            where = ("parity", key)
            if key not in PARITY_KEYS:
                raise self.fail(
                    where, f"unknown key parity.{key} (expected one of {', '.join(PARITY_KEYS)})"
                )
            if key == "audit_sample":
                if not _is_number(value) or not 0 <= value <= 1:
                    raise self.fail(
                        where, f"parity.audit_sample must be a number within 0..1, got {value!r}"
                    )
                values[key] = float(value)
            else:
                if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                    raise self.fail(
                        where, f"parity.{key} must be a positive integer, got {value!r}"
                    )
                values[key] = value
        return ParitySettings(**values)

    def step_line(self, index: int) -> int | None:
        """The line of the `index`-th inline table of `schedule.steps`."""
        start = _line_of(self.text, ("schedule", "steps"))
        if start is None:
            return None
        seen = -1
        for number, line in enumerate(self.text.splitlines()[start - 1 :], start=start):
            for char in line.split("#", 1)[0]:
                if char == "{":
                    seen += 1
                    if seen == index:
                        return number
        return start

    def schedule(self, raw: dict[str, Any]) -> tuple[Step, ...]:
        for key in raw:
            if key != "steps":
                raise self.fail(("schedule", key), f"unknown key schedule.{key} (expected steps)")
        steps_raw = raw.get("steps", [])
        if not isinstance(steps_raw, list):
            raise self.fail(("schedule", "steps"), "schedule.steps must be a list of tables")
        steps: list[Step] = []
        for i, item in enumerate(steps_raw):

            def bad(reason: str, i: int = i) -> RolloutError:
                return RolloutError(reason, path=self.path, line=self.step_line(i))

            if not isinstance(item, dict):
                raise bad(f"schedule.steps[{i}] must be a table {{stage, percent, soak}}")
            for key in item:
                if key not in STEP_KEYS:
                    raise bad(
                        f"unknown key schedule.steps[{i}].{key} "
                        f"(expected one of {', '.join(STEP_KEYS)})"
                    )
            if not isinstance(item.get("stage"), str):
                raise bad(f"schedule.steps[{i}].stage must be a stage name")
            try:
                stage = Stage.parse(item["stage"])
            except ValueError as exc:
                raise bad(f"schedule.steps[{i}].stage: {exc}") from None
            percent = item.get("percent", 100)
            if not _is_number(percent) or not 0 < percent <= 100:
                raise bad(f"schedule.steps[{i}].percent must be within 0 (excluded)..100")
            soak = item.get("soak", "0s")
            try:
                soak_s = parse_duration(soak)
            except ValueError as exc:
                raise bad(f"schedule.steps[{i}].soak: {exc}") from None
            step = Step(stage, float(percent), soak_s, soak)
            if steps and step.position <= steps[-1].position:
                raise bad(
                    f"schedule.steps[{i}] ({step.describe()}) must come after "
                    f"{steps[-1].describe()}: steps go forward"
                )
            steps.append(step)
        return tuple(steps)

    def config(self, data: dict[str, Any], source_hash: str) -> RolloutConfig:
        for key in data:
            if key not in TOP_LEVEL_KEYS:
                raise self.fail(
                    (key,),
                    f"unknown key {key!r} (expected [defaults], [domains.<name>], [parity] "
                    "and [schedule])",
                )
        parity = ParitySettings()
        if "parity" in data:
            parity = self.parity(self.table(data["parity"], ("parity",)))
        schedule: tuple[Step, ...] = ()
        if "schedule" in data:
            schedule = self.schedule(self.table(data["schedule"], ("schedule",)))
        base = DEFAULT_DOMAIN
        if "defaults" in data:
            defaults = self.table(data["defaults"], ("defaults",))
            if "since" in defaults:
                raise self.fail(
                    ("defaults", "since"), "defaults.since: a step begins for one domain at a time"
                )
            base = self.domain(defaults, base, ("defaults",))
        domains = {name: base for name in DOMAINS}
        for name, raw in self.table(data.get("domains", {}), ("domains",)).items():
            if name not in DOMAINS:
                raise self.fail(
                    ("domains", name),
                    f"unknown domain {name!r} (expected one of {', '.join(DOMAINS)})",
                )
            keypath = ("domains", name)
            domains[name] = self.domain(self.table(raw, keypath), base, keypath)
        return RolloutConfig(domains, source_hash, self.path, parity, schedule)


def _parse(text: str, path: str | None, source_hash: str) -> RolloutConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        position = _TOML_POSITION.search(message)
        line = int(position.group(1)) if position else None
        reason = _TOML_POSITION.sub("", message).strip()
        raise RolloutError(f"invalid TOML: {reason}", path=path, line=line) from None
    return _Checker(text, path).config(data, source_hash)


def parse_rollout(text: str, path: str | None = None) -> RolloutConfig:
    """The rollout configured by a file's text; RolloutError names the bad line."""
    return _parse(text, path, hashlib.sha256(text.encode("utf-8")).hexdigest())


def _decode(data: bytes, path: str) -> RolloutConfig:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RolloutError(f"not UTF-8 text: {exc}", path=path) from None
    return _parse(text, path, hashlib.sha256(data).hexdigest())


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise RolloutError(
            f"cannot read the rollout file: {exc.strerror or exc}", path=path
        ) from None


def load_rollout(path: str | os.PathLike[str]) -> RolloutConfig:
    """The rollout configured by a file (blocking)."""
    path = os.fspath(path)
    return _decode(_read(path), path)


# -- the watcher ---------------------------------------------------------------


class RolloutWatcher:
    """Serves the current rollout and reloads the file when it changes."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        interval_s: float = 2.0,
        on_change: Callable[[RolloutConfig], Any] | None = None,
    ) -> None:
        self.path = os.fspath(path) if path is not None else None
        self.interval_s = interval_s
        self.on_change = on_change
        self.current: RolloutConfig = RolloutConfig.default()
        self.last_error: RolloutError | None = None
        self.file_limiter = trio.CapacityLimiter(1)
        self._seen_hash: str | None = None

    def push_enabled(self, user_id: str, domain: str) -> bool:
        """Whether `domain` is pushed to `user_id` under the current file."""
        return self.current.push_enabled(user_id, domain)

    def view_for(self, user_id: str) -> dict[str, dict[str, Any]]:
        return self.current.view_for(user_id)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Load the file, report ready, then check it every `interval_s` until cancelled.

        An unreadable or invalid file at start-up raises RolloutError before `started`.
        """
        if self.path is None:
            log.info("no rollout file: every domain in SHADOW for all users")
            task_status.started(self)
            await trio.sleep_forever()
        path = self.path
        data = await trio.to_thread.run_sync(_read, path, limiter=self.file_limiter)
        self.current = _decode(data, path)
        self._seen_hash = self.current.source_hash
        log.info("rollout loaded from %s: %s", path, self.current.summary())
        task_status.started(self)
        while True:
            await trio.sleep(self.interval_s)
            await self.check()

    async def check(self) -> bool:
        """Reload the file if its content changed; True when a new config took effect."""
        if self.path is None:
            return False
        try:
            data = await trio.to_thread.run_sync(_read, self.path, limiter=self.file_limiter)
        except RolloutError as exc:
            self._refuse(exc, None)
            return False
        digest = hashlib.sha256(data).hexdigest()
        if digest == self.current.source_hash:
            if self.last_error is not None:
                log.info("rollout file %s is back to the config in effect", self.path)
            self._seen_hash = digest
            self.last_error = None
            return False
        if digest == self._seen_hash:
            return False
        try:
            config = _decode(data, self.path)
        except RolloutError as exc:
            self._refuse(exc, digest)
            return False
        self._seen_hash = digest
        self.last_error = None
        self.current = config
        log.info("rollout reloaded from %s: %s", self.path, config.summary())
        if self.on_change is not None:
            result = self.on_change(config)
            if inspect.isawaitable(result):
                await result
        return True

    def _refuse(self, error: RolloutError, digest: str | None) -> None:
        """Keep the last good config; log each distinct problem once."""
        if digest is not None:
            self._seen_hash = digest
        if self.last_error is None or str(self.last_error) != str(error):
            log.error("rollout change ignored, keeping the last good config: %s", error)
        self.last_error = error
