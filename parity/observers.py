"""The two observers of a parity run: the GraphQL poller and the WebSocket push observer.

Both keep, per user, the same `parity.model.UserState` and report it as
observations into a shared `Recorder`:

- `Poller` (path `poll`, or `poll_b` in an A/A run): one GraphQL request per
  interval selecting `realtimeCursor` and every state field of the observed
  domains; the observation's version is the cursor's `seq` read in the same
  request, from the same store snapshot as the data (so the data is exactly
  the state at that seq).
- `PushObserver` (path `push`): connects with a Bearer token, reads the
  welcome, takes a GraphQL snapshot with `realtimeCursor`, resumes from that
  cursor and applies the replayed and live durable events (PROTOCOL.md 2.3,
  absolute values) to its state; each applied event is one observation at
  version `seq`. It resumes after disconnects and seq gaps as a real client
  would, refetches its snapshot on `session.reset`, and records every event
  it received for the seq-continuity invariant.

Both speak through `gateway.client`; what they read and how it changes the
state is pure and lives in `parity.state`. The classes here do only the I/O
and the recording.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import trio

from gateway.client import SESSION_ERRORS, GraphQL, GraphQLFailed, Session, connect_session
from parity.invariants import Read, Received, Violation
from parity.model import Observation, UserState, error_observation, observe
from parity.report import Traffic
from parity.state import (
    Seq,
    UserSetup,
    apply_event,
    apply_presence,
    members_unknown,
    merge_refetch,
    place,
)

__all__ = ["Poller", "PushObserver", "Recorder"]

log = logging.getLogger("cutover.parity")


# -- what the observers saw ----------------------------------------------------


@attrs.define
class Recorder:
    """Everything the observers and the driver saw during one run."""

    observations: list[Observation] = attrs.Factory(list)
    reads: list[Read] = attrs.Factory(list)
    received: dict[str, list[Received]] = attrs.Factory(lambda: defaultdict(list))
    violations: list[Violation] = attrs.Factory(list)
    requests: dict[str, int] = attrs.Factory(lambda: defaultdict(int))
    bytes: dict[str, int] = attrs.Factory(lambda: defaultdict(int))
    reconnects: dict[str, int] = attrs.Factory(lambda: defaultdict(int))

    def traffic(self, path: str) -> Traffic:
        return Traffic(requests=self.requests[path], bytes=self.bytes[path])

    def add(self, observations: Iterable[Observation]) -> None:
        self.observations.extend(observations)


class Poller:
    """The legacy client: polls the state of one user every `interval` seconds."""

    def __init__(
        self,
        gql: GraphQL,
        user: UserSetup,
        recorder: Recorder,
        *,
        interval: float,
        path: str = "poll",
        offset: float = 0.0,
    ) -> None:
        self.gql = gql
        self.user = user
        self.recorder = recorder
        self.interval = interval
        self.path = path
        self.offset = offset

    async def poll_once(self) -> None:
        user = self.user
        query, variables = user.query(user.domains)
        self.recorder.requests[self.path] += 1
        try:
            answer = await self.gql.request(query, variables, token=user.token)
            state, _epoch, seq = user.parse(answer.data, user.domains)
        except (GraphQLFailed, KeyError, TypeError, ValueError) as exc:
            now = trio.current_time()
            self.recorder.add(
                error_observation(self.path, user.user_id, d, str(exc), observed_at=now)
                for d in user.domains
            )
            return
        self.recorder.bytes[self.path] += answer.size
        self.recorder.add(
            observe(
                self.path, state, domains=user.domains, version=seq, observed_at=trio.current_time()
            )
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep(self.offset)
        next_at = trio.current_time()
        while True:
            await self.poll_once()
            next_at += self.interval
            now = trio.current_time()
            if next_at < now:  # fell behind: skip the missed ticks
                next_at += math.ceil((now - next_at) / self.interval) * self.interval
            await trio.sleep_until(next_at)


class _Reconnect(Exception):
    """The connection must be replaced (a seq gap on a live connection)."""


_CONNECTION_ERRORS: tuple[type[Exception], ...] = (*SESSION_ERRORS, GraphQLFailed)


class PushObserver:
    """The push client: snapshot, resume, apply durable events; one user."""

    def __init__(
        self,
        gql: GraphQL,
        ws_url: str,
        user: UserSetup,
        recorder: Recorder,
        *,
        retry_delay: float = 0.2,
        away: bool = False,
    ) -> None:
        self.gql = gql
        self.ws_url = ws_url
        self.user = user
        self.recorder = recorder
        self.retry_delay = retry_delay
        # Say AWAY on connecting (a hidden tab), so the observer's own socket does
        # not hold the user ONLINE while the driver moves its presence.
        self.away = away
        self.state: UserState | None = None
        self.epoch: str | None = None
        self.last_seq: int | None = None
        self.connections = 0
        self._awaiting: str | None = None  # the resume action awaiting its reply
        self._mark: int | None = None  # resume cursor to put on the next received event
        self._connection = ""
        self.ready = trio.Event()

    def _emit(self, version: int) -> None:
        assert self.state is not None
        self.recorder.add(
            observe(
                "push",
                self.state,
                domains=self.user.push_domains,
                version=version,
                observed_at=trio.current_time(),
            )
        )

    def _emit_domains(self, domains: Sequence[str], version: int | None) -> None:
        assert self.state is not None
        self.recorder.add(
            observe(
                "push",
                self.state,
                domains=[d for d in domains if d in self.user.push_domains],
                version=version,
                observed_at=trio.current_time(),
            )
        )

    async def _read(self, domains: Sequence[str]) -> tuple[UserState, str, int]:
        """The state of `domains` over GraphQL, at a cursor (counted as push traffic)."""
        user = self.user
        query, variables = user.query(domains)
        self.recorder.requests["push"] += 1
        answer = await self.gql.request(query, variables, token=user.token)
        self.recorder.bytes["push"] += answer.size
        return user.parse(answer.data, domains)

    async def _snapshot(self) -> None:
        """Refetch the state over GraphQL at a cursor (initially and on reset)."""
        self.state, self.epoch, self.last_seq = await self._read(self.user.push_domains)
        self._emit(self.last_seq)

    async def _refetch(self, domain: str) -> None:
        """Refetch one domain's state, as a client does when the contract pushes it no
        history: presence after (re)subscribing, an organization's members once promoted."""
        assert self.state is not None
        fresh, _epoch, _seq = await self._read([domain])
        self.state = merge_refetch(self.state, fresh, domain)
        self._emit_domains([domain], self.last_seq)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            failure: BaseException | None = None
            try:
                await self._connect_once()
            except* _Reconnect:
                pass
            except* _CONNECTION_ERRORS as group:
                failure = group.exceptions[0]
            self.recorder.reconnects[self.user.user_id] += 1
            if failure is not None:
                if not self.push_ever_connected:
                    now = trio.current_time()
                    self.recorder.add(
                        error_observation(
                            "push", self.user.user_id, d, str(failure), observed_at=now
                        )
                        for d in self.user.push_domains
                    )
                log.info("push observer of %s reconnects: %r", self.user.user_id, failure)
                await trio.sleep(self.retry_delay)

    @property
    def push_ever_connected(self) -> bool:
        return self.connections > 0

    async def _connect_once(self) -> None:
        async with connect_session(self.ws_url, token=self.user.token, history=0) as session:
            self.connections += 1
            self._connection = f"{self.user.user_id}#{self.connections}"
            try:
                await self._follow(session)
            finally:
                self.recorder.requests["push"] += session.frames
                self.recorder.bytes["push"] += session.received_bytes

    async def _follow(self, session: Session) -> None:
        """Welcome, snapshot (the first time), resume, then apply until the end."""
        welcome = (await session.next_of("session.welcome"))["payload"]
        if self.state is None:
            await self._snapshot()
        self._mark = self.last_seq
        self._awaiting = await session.send(
            "session.resume", {"epoch": self.epoch, "lastSeq": self.last_seq}
        )
        watches_presence = "presence" in self.user.push_domains and self.user.presence_of
        if watches_presence:
            for other in self.user.presence_of:
                await session.send("subscribe", {"topic": f"presence:{other}"})
        if self.away:
            await session.send("presence.set", {"status": "AWAY"})
        if watches_presence:
            await self._refetch("presence")
        self.ready.set()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.keep_alive, welcome)
            while True:
                await self._handle(await session.next())

    async def _handle(self, envelope: dict[str, Any]) -> None:
        type_ = envelope.get("type")
        payload = envelope.get("payload") or {}
        if type_ == "session.resumed" and envelope.get("replyTo") == self._awaiting:
            self._awaiting = None
            assert self.last_seq is not None
            if self.last_seq < int(payload.get("toSeq", self.last_seq)):
                self.recorder.violations.append(
                    Violation(
                        "seq-gap",
                        "push",
                        self.user.user_id,
                        "stream",
                        trio.current_time(),
                        f"the resume replayed up to seq {payload['toSeq']} but events after "
                        f"{self.last_seq} never arrived on {self._connection}",
                    )
                )
                raise _Reconnect
            return
        if type_ == "session.reset":
            self._awaiting = None
            await self._snapshot()
            self._mark = self.last_seq
            return
        seq = envelope.get("seq")
        if type_ == "user.presence.updated" and self.state is not None:
            self.state = apply_presence(self.state, payload)
            self._emit_domains(["presence"], None)
            return
        if not isinstance(seq, int) or self.last_seq is None or self.state is None:
            return  # ephemeral, replies, pongs
        now = trio.current_time()
        received = self.recorder.received[self.user.user_id]
        where = place(seq, self.last_seq, resuming=self._awaiting is not None)
        if where is Seq.REPEAT:
            if self._awaiting is None:  # a repeat on a live connection
                received.append(Received(seq, now, connection=self._connection))
            return
        if where is Seq.EARLY:
            return  # live traffic from before the resume; the replay brings it
        if where is Seq.GAP:
            received.append(Received(seq, now, connection=self._connection))
            raise _Reconnect  # resume from the last contiguous seq, as a client would
        received.append(Received(seq, now, resumed_from=self._mark, connection=self._connection))
        self._mark = None
        self.last_seq = seq
        if type_ != "stream.skipped":
            self.state, read = apply_event(
                self.state, str(type_), payload, watched_events=self.user.events
            )
            if read is not None:
                self.recorder.reads.append(attrs.evolve(read, at=now, version=seq))
        self._emit(seq)
        if type_ == "organization.member.updated" and members_unknown(self.state):
            await self._refetch("organization")
