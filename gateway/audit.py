"""The shadow audit: real polling requests compared with what the push path shows.

For a sampled share of polling requests (`[parity] audit_sample` in the
rollout file) by users at SHADOW or beyond in a domain the request polls,
the executor reads the user's stream cursor in the request's own snapshot
and hands the poll's result and that cursor to `ShadowAudit.offer`. The rest
happens off the request path:

1. `offer` (in the GraphQL worker thread) schedules the sample onto the Trio
   loop without waiting (`TrioToken.run_sync_soon`); the loop puts it in a
   bounded queue, and a full queue skips the sample and counts the skip.
2. A sample waits for the audit window W (`[parity] audit_window_ms`), the
   time the push path has to deliver what the poll showed; then what this
   node's sockets of the user wrote meanwhile is copied, and a worker thread
   behind the `audit` limiter takes it.
3. The worker reduces the user's durable events up to the poll's cursor with
   the reference state model (`parity.reference`; an append-only prefix, so
   the same events the poll's snapshot held) and compares it with what the
   poll returned, key by key (the **stream** check: an event never produced,
   a payload that disagrees with the state).
4. For each socket of the user on this node that was open when the poll was
   made (the **delivery** check): every event up to the cursor must have been
   written within W (else MISSING_PUSH: a frame dropped or late), and as the
   store has it (else the keys it touches are compared as that socket showed
   them: DIVERGED when they differ). Sockets on other nodes are checked by
   their own node's audit of that user's polls.
5. Counts per domain, stage and class, with a few redacted samples of what
   differed, go to the evidence book (`gateway.evidence`), which the store
   keeps per hour for every node, the report and the gate.

A reduced stream is cached per user (a bounded LRU), so each sample reads
only the events since the user's last one. Where retention cut a user's
history, the reduction starts at the oldest retained event and the keys it
cannot determine are not compared (see `parity.reference`).
"""

from __future__ import annotations

import collections
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import trio
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    SelectionSetNode,
    get_operation_ast,
)
from graphql.execution.values import get_argument_values

from gateway.errors import HistoryExpired
from gateway.evidence import EvidenceBook
from gateway.graphql.schema import polling_schema
from gateway.rollout import Stage, domain_of_event
from ops import metrics
from parity.differ import Classification
from parity.model import FeedItem, domain_of
from parity.reference import Finding, Polled, Reference, compare_poll, redact

if TYPE_CHECKING:
    from gateway.ws.transport import Transport

__all__ = [
    "AUDITED_DOMAINS",
    "DeliveryLog",
    "DeliveryTap",
    "ShadowAudit",
    "extract",
    "run_audit",
]

log = logging.getLogger("cutover.audit")

# Presence changes only through ephemeral events: no stream to reduce.
AUDITED_DOMAINS = frozenset({"notification", "chat", "follow", "event", "organization", "activity"})
QUEUE_SIZE = 512
CACHE_USERS = 2_000
TAP_LINES = 256  # durable envelopes a socket keeps for the audit
TAP_AGE_S = 60.0
SAMPLES_PER_POLL = 3
MAX_PAGE = 200  # what the domain caps a page at
HISTORY_TRIES = (1000, 100, 10)  # how far back to start when retention cut the history

# Per user, the values each key showed at earlier cursors: a stream still showing one
# of them missed an update; any other value is a wrong one.
MAX_REMEMBERED_KEYS = 500
REMEMBERED_VALUES = 8
_DURABLE = re.compile(r'^\{"v":1,"id":"[^"]*","type":"([^"]*)","seq":(\d+),')


# -- what a poll showed ---------------------------------------------------------------


def _fields(
    selection_set: SelectionSetNode | None, fragments: Mapping[str, FragmentDefinitionNode]
) -> list[FieldNode]:
    """The fields of a selection set, through fragments; conditional ones left out."""
    out: list[FieldNode] = []
    if selection_set is None:
        return out
    for node in selection_set.selections:
        if node.directives:
            continue  # @skip / @include: whether it ran is not known here
        if isinstance(node, FieldNode):
            out.append(node)
        elif isinstance(node, InlineFragmentNode):
            out += _fields(node.selection_set, fragments)
        elif isinstance(node, FragmentSpreadNode):
            fragment = fragments.get(node.name.value)
            if fragment is not None:
                out += _fields(fragment.selection_set, fragments)
    return out


def _keyed(
    node: FieldNode, fragments: Mapping[str, FragmentDefinitionNode]
) -> dict[str, FieldNode]:
    """A field's subfields by name (the first selection of each)."""
    out: dict[str, FieldNode] = {}
    for field in _fields(node.selection_set, fragments):
        out.setdefault(field.name.value, field)
    return out


def _rk(node: FieldNode) -> str:
    return (node.alias or node.name).value


def extract(
    document: DocumentNode,
    operation_name: str | None,
    variables: Any,
    data: Mapping[str, Any],
) -> Polled:
    """The harness's keys a polling request's result holds (`parity.reference.Polled`);
    `variables` are graphql-core's coerced variable values of the request."""
    polled = Polled()
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return polled
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    query_type = polling_schema().query_type
    assert query_type is not None
    root = query_type.fields
    values = polled.values
    for node in _fields(operation.selection_set, fragments):
        try:
            name = node.name.value
            value = data.get(_rk(node))
            if value is None or name not in root:
                continue
            args = get_argument_values(root[name], node, variables)
            sub = _keyed(node, fragments)
            if name == "unreadNotificationCount":
                values["notification.unread"] = value
            elif name == "notifications" and args.get("after") is None and "unreadCount" in sub:
                values["notification.unread"] = value[_rk(sub["unreadCount"])]
            elif name == "chatUnreadCount":
                values["chat.total"] = value
            elif name in ("conversations", "conversation") and "id" in sub:
                items = value if isinstance(value, list) else [value]
                for conv in items:
                    conv_id = conv[_rk(sub["id"])]
                    if "unreadCount" in sub:
                        values[f"chat.conv:{conv_id}.unread"] = conv[_rk(sub["unreadCount"])]
                    if "lastReadMessageId" in sub:
                        values[f"chat.conv:{conv_id}.lastRead"] = conv[
                            _rk(sub["lastReadMessageId"])
                        ]
                    last = sub.get("lastMessage")
                    ident = _keyed(last, fragments).get("id") if last is not None else None
                    if last is not None and ident is not None:
                        message = conv[_rk(last)]
                        values[f"chat.conv:{conv_id}.lastMessage"] = (
                            None if message is None else message[_rk(ident)]
                        )
                if name == "conversations" and len(items) < min(args.get("first", 50), MAX_PAGE):
                    polled.conversations_complete = True
            elif name == "followRequests" and args.get("status", "PENDING") == "PENDING":
                if "id" in sub:
                    values["follow.pending"] = tuple(sorted(r[_rk(sub["id"])] for r in value))
            elif name == "event" and "id" in sub and "rsvpCounts" in sub:
                counts = _keyed(sub["rsvpCounts"], fragments)
                if "going" in counts and "interested" in counts:
                    event_id = value[_rk(sub["id"])]
                    shown = value[_rk(sub["rsvpCounts"])]
                    values[f"event:{event_id}.counts"] = (
                        int(shown[_rk(counts["going"])]),
                        int(shown[_rk(counts["interested"])]),
                    )
                    if "hostId" in sub:
                        polled.hosts[event_id] = value[_rk(sub["hostId"])]
            elif name == "organization" and "viewerRole" in sub:
                values[f"organization:{args['id']}.role"] = value[_rk(sub["viewerRole"])]
            elif name == "announcements" and "id" in sub and args.get("first", 20) > 0:
                newest = value[0][_rk(sub["id"])] if value else None
                values[f"organization:{args['orgId']}.announcement"] = newest
            elif name == "feed" and {"id", "authorId", "createdAt"} <= set(sub):
                polled.feed = [
                    FeedItem(
                        item[_rk(sub["id"])],
                        item[_rk(sub["authorId"])],
                        item[_rk(sub["createdAt"])],
                    )
                    for item in value
                ]
                polled.feed_full = len(value) >= min(args.get("first", 20), MAX_PAGE)
        except (KeyError, TypeError, IndexError, AttributeError):
            continue  # a shape this reading does not know: the field is not compared
    return polled


# -- what a socket wrote ------------------------------------------------------------------


class DeliveryTap:
    """A socket's transport that remembers the durable envelopes it wrote, and when.

    It sits below the fault layer, so it sees what actually reached the
    socket. Lines are kept for `TAP_AGE_S`, at most `TAP_LINES` of them; an
    idle socket holds no list at all.
    """

    __slots__ = ("_inner", "_log", "closed", "evicted_upto", "lines", "opened", "start", "user_id")

    def __init__(self, inner: Transport, log: DeliveryLog, user_id: str) -> None:
        self._inner = inner
        self._log = log
        self.user_id = user_id
        self.opened = time.monotonic()
        self.closed: float | None = None
        self.start: tuple[str, int] | None = None  # the welcome's (epoch, seq)
        self.lines: collections.deque[tuple[int, float, str]] | None = None
        self.evicted_upto = 0  # the highest seq no longer kept

    async def receive(self) -> str:
        return await self._inner.receive()

    async def send(self, text: str) -> None:
        await self._inner.send(text)
        if self._log.recording:
            self._record(text, time.monotonic())

    async def close(self, code: int, reason: str = "") -> None:
        self.closed = time.monotonic()
        self._log.forget(self)
        await self._inner.close(code, reason)

    def _record(self, text: str, now: float) -> None:
        for line in text.split("\n"):
            match = _DURABLE.match(line)
            if match is not None:
                if self.lines is None:
                    self.lines = collections.deque()
                self.lines.append((int(match.group(2)), now, line))
            elif self.start is None and '"type":"session.welcome"' in line:
                try:
                    welcome = json.loads(line)["payload"]
                    self.start = (str(welcome["epoch"]), int(welcome["seq"]))
                except (ValueError, KeyError, TypeError):
                    pass
        lines = self.lines
        while lines and (len(lines) > TAP_LINES or lines[0][1] < now - TAP_AGE_S):
            self.evicted_upto = max(self.evicted_upto, lines.popleft()[0])

    def copy(self) -> _Written:
        lines = list(self.lines) if self.lines is not None else []
        return _Written(self.start, self.opened, self.closed, self.evicted_upto, lines)


@attrs.frozen
class _Written:
    """What one socket wrote, copied for a worker thread."""

    start: tuple[str, int] | None
    opened: float
    closed: float | None
    evicted_upto: int
    lines: list[tuple[int, float, str]]


class DeliveryLog:
    """The open sockets of each user on this node (Trio thread only)."""

    def __init__(self) -> None:
        self.recording = False
        self._taps: dict[str, set[DeliveryTap]] = {}

    def wrap(self, user_id: str, transport: Transport) -> DeliveryTap:
        tap = DeliveryTap(transport, self, user_id)
        self._taps.setdefault(user_id, set()).add(tap)
        return tap

    def forget(self, tap: DeliveryTap) -> None:
        taps = self._taps.get(tap.user_id)
        if taps is not None:
            taps.discard(tap)
            if not taps:
                del self._taps[tap.user_id]

    def written(self, user_id: str) -> list[_Written]:
        return [tap.copy() for tap in self._taps.get(user_id, ())]


# -- the audit ----------------------------------------------------------------------


@attrs.define
class _Sample:
    user_id: str
    document: DocumentNode
    operation_name: str | None
    variables: Any  # graphql-core's coerced VariableValues
    data: dict[str, Any]
    epoch: str
    seq: int
    at: float  # time.monotonic() when the poll was answered
    window_s: float


class _Skip(Exception):
    """A sample that cannot be audited (the reason is a metrics label)."""


class ShadowAudit:
    """Samples polls, queues them, compares them with the push path off the request path."""

    def __init__(
        self,
        store: Any,
        rollout: Any,
        evidence: EvidenceBook,
        *,
        workers: int = 1,
        queue_size: int = QUEUE_SIZE,
        cache_users: int = CACHE_USERS,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.rollout = rollout  # gateway.rollout.RolloutWatcher (or anything with `current`)
        self.evidence = evidence
        self.delivery = DeliveryLog()
        self.limiter = trio.CapacityLimiter(max(1, workers))
        self.cache_users = cache_users
        self._rng = rng
        self._token: trio.lowlevel.TrioToken | None = None  # set by `run`
        self._queue_send, self._queue = trio.open_memory_channel[_Sample](queue_size)
        self._work_send, self._work = trio.open_memory_channel[tuple[_Sample, list]](
            max(1, workers)
        )
        self._lock = threading.Lock()
        self._cache: collections.OrderedDict[str, Reference] = collections.OrderedDict()
        self._previous: collections.OrderedDict[str, tuple[str, int, dict]] = (
            collections.OrderedDict()
        )
        self.counts: collections.Counter[str] = collections.Counter()

    # -- on the request path (GraphQL worker thread) -----------------------------------

    @property
    def rate(self) -> float:
        return float(self.rollout.current.parity.audit_sample)

    def sample(self, user_id: str, domains: Iterable[str]) -> bool:
        """Whether to audit this poll: the sample's draw, and a polled domain at SHADOW+."""
        rate = self.rate
        if rate <= 0 or self._rng() >= rate:
            return False
        config = self.rollout.current
        return any(
            d in AUDITED_DOMAINS and config.stage_for(user_id, d) >= Stage.SHADOW for d in domains
        )

    def offer(
        self,
        viewer: Any,
        document: DocumentNode,
        operation_name: str | None,
        variables: Any,
        data: dict[str, Any],
        cursor: Mapping[str, Any],
    ) -> None:
        """Hand a sampled poll's result and cursor to the audit; never waits."""
        window = self.rollout.current.parity.audit_window_ms / 1000
        sample = _Sample(
            viewer.user_id,
            document,
            operation_name,
            variables,
            data,
            str(cursor["epoch"]),
            int(cursor["seq"]),
            time.monotonic(),
            window,
        )
        if self._token is None:
            return
        try:
            self._token.run_sync_soon(self._enqueue, sample)
        except trio.RunFinishedError:
            pass

    # -- on the Trio loop ------------------------------------------------------------

    def _enqueue(self, sample: _Sample) -> None:
        try:
            self._queue_send.send_nowait(sample)
        except (trio.WouldBlock, trio.ClosedResourceError):
            self._count("queue_full")

    def wrap(self, user_id: str, transport: Transport) -> Transport:
        """A socket's transport, tapped for the delivery check while the audit is on
        (a socket opened while it is off is never tapped: it costs nothing)."""
        if self.rate <= 0:
            return transport
        return self.delivery.wrap(user_id, transport)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._hold)
            for _ in range(int(self.limiter.total_tokens)):
                nursery.start_soon(self._worker)
            task_status.started()

    async def _hold(self) -> None:
        """Keep each sample until its window has passed, then hand it to a worker."""
        async for sample in self._queue:
            self.delivery.recording = self.rate > 0
            wait = sample.at + sample.window_s - time.monotonic()
            if wait > 0:
                await trio.sleep(wait)
            await self._work_send.send((sample, self.delivery.written(sample.user_id)))

    async def _worker(self) -> None:
        async for sample, written in self._work:
            try:
                await trio.to_thread.run_sync(self.audit, sample, written, limiter=self.limiter)
            except _Skip as skip:
                self._count(str(skip))
            except Exception:
                log.exception("auditing a poll of %s failed", sample.user_id)
                self._count("failed")

    async def watch(self) -> None:
        """Keep the sockets' recording in step with the rollout file."""
        while True:
            self.delivery.recording = self.rate > 0
            await trio.sleep(1)

    def _count(self, outcome: str) -> None:
        self.counts[outcome] += 1
        metrics.PARITY_AUDIT_SAMPLES.labels(outcome).inc()

    # -- in a worker thread ----------------------------------------------------------

    def _events(self, user_id: str, after: int, upto: int) -> list[Any]:
        out: list[Any] = []
        while after < upto:
            batch = self.store.events_after(user_id, after, min(1000, upto - after))
            if not batch:
                break
            out += batch
            after = batch[-1].seq
        return out

    def _reduce(
        self, user_id: str, epoch: str, seq: int, base: Reference | None = None
    ) -> Reference:
        """The user's stream reduced up to `seq` of `epoch` (from `base` when it fits)."""
        if base is not None and base.epoch == epoch and base.seq <= seq:
            ref, events = base, self._events(user_id, base.seq, seq)
        else:
            ref = Reference(user_id, epoch)
            try:
                events = self._events(user_id, 0, seq)
            except HistoryExpired:
                for back in HISTORY_TRIES:
                    if seq - back <= 0:
                        continue
                    try:
                        events = self._events(user_id, seq - back, seq)
                    except HistoryExpired:
                        continue
                    ref = Reference(user_id, epoch, seq=seq - back, complete=False)
                    break
                else:
                    raise _Skip("history_expired") from None
        for event in events:
            if event.epoch != epoch or event.seq != ref.seq + 1:
                raise _Skip("stale_epoch")
            ref.apply(event.seq, event.type, event.payload)
        if ref.seq != seq:
            raise _Skip("stale_epoch")
        return ref

    def _take(self, user_id: str) -> Reference | None:
        with self._lock:
            return self._cache.pop(user_id, None)

    def _keep(self, ref: Reference) -> None:
        with self._lock:
            self._cache[ref.user_id] = ref
            while len(self._cache) > self.cache_users:
                self._cache.popitem(last=False)

    def _previous_of(self, user_id: str, epoch: str, seq: int) -> dict[str, tuple[Any, ...]]:
        """Per key, the values the poll path showed of this user at earlier cursors."""
        with self._lock:
            found = self._previous.get(user_id)
        if found is None or found[0] != epoch or found[1] > seq:
            return {}
        return dict(found[2])

    def _remember(self, user_id: str, epoch: str, seq: int, values: Mapping[str, Any]) -> None:
        with self._lock:
            found = self._previous.pop(user_id, None)
            keys: dict[str, tuple[Any, ...]] = {}
            if found is not None and found[0] == epoch and found[1] <= seq:
                keys = dict(found[2])
            for key, value in values.items():
                seen = [v for v in keys.pop(key, ()) if v != value]
                keys[key] = (*seen[-(REMEMBERED_VALUES - 1) :], value)
            while len(keys) > MAX_REMEMBERED_KEYS:
                keys.pop(next(iter(keys)))
            self._previous[user_id] = (epoch, seq, keys)
            while len(self._previous) > self.cache_users:
                self._previous.popitem(last=False)

    def audit(self, sample: _Sample, written: list[_Written]) -> list[Finding]:
        """Audit one sampled poll (blocking); returns the findings it recorded."""
        polled = extract(sample.document, sample.operation_name, sample.variables, sample.data)
        user, epoch, seq = sample.user_id, sample.epoch, sample.seq
        ref = self._reduce(user, epoch, seq, self._take(user))
        self._hosts(polled, ref)
        previous = self._previous_of(user, epoch, seq)
        findings, _unknown = compare_poll(polled, ref, previous=previous)
        self._keep(ref)
        checks = {f.key: "stream" for f in findings}
        stream = list(findings)
        for socket in written:
            for finding in self._delivery(sample, socket, stream, polled):
                at = next((i for i, f in enumerate(findings) if f.key == finding.key), None)
                if at is None:
                    findings.append(finding)
                elif findings[at].classification is Classification.MATCH:
                    findings[at] = finding
                else:
                    continue
                checks[finding.key] = "delivery"
        self._remember(user, epoch, seq, polled.values)
        self._record(user, findings, checks)
        self._count("audited")
        return findings

    def _hosts(self, polled: Polled, ref: Reference) -> None:
        """The hosts of polled events the stream does not name (a host is immutable)."""
        missing = [
            key[len("event:") : -len(".counts")]
            for key in polled.values
            if key.startswith("event:")
            and key[len("event:") : -len(".counts")] not in ref.event_hosts
            and key[len("event:") : -len(".counts")] not in polled.hosts
        ]
        if not missing:
            return
        with self.store.snapshot() as tx:
            for event_id in missing:
                row = tx.get_gathering(event_id)
                if row is not None:
                    polled.hosts[event_id] = row["host_id"]

    def _delivery(
        self,
        sample: _Sample,
        socket: _Written,
        stream: list[Finding],
        polled: Polled,
    ) -> list[Finding]:
        """What one socket showed of the polled keys, where it differs from the stream."""
        if socket.start is None or socket.start[0] != sample.epoch or socket.opened > sample.at:
            return []
        low = max(socket.start[1], socket.evicted_upto)
        if sample.seq <= low:
            return []
        deadline = sample.at + sample.window_s
        lines: dict[int, tuple[float, str]] = {}
        for seq, at, line in socket.lines:
            if low < seq <= sample.seq:
                lines.setdefault(seq, (at, line))
        late = [
            s for s in range(low + 1, sample.seq + 1) if s not in lines or lines[s][0] > deadline
        ]
        if late and socket.closed is not None and socket.closed <= deadline:
            return []  # the connection ended: its client resumes elsewhere
        stored = {e.seq: e for e in self._events(sample.user_id, low, sample.seq)}
        out: list[Finding] = []
        if late:
            domains = {domain_of_event(stored[s].type) for s in late if s in stored}
            detail = (
                f"a socket had not written seq {late[0]} within {sample.window_s * 1000:.0f} ms"
            )
            for finding in stream:
                if domain_of(finding.key) in domains:
                    out.append(
                        Finding(
                            finding.domain,
                            finding.key,
                            Classification.MISSING_PUSH,
                            finding.poll_value,
                            None,
                            detail,
                        )
                    )
            return out
        altered: dict[int, tuple[str, dict]] = {}
        for s, (_at, line) in lines.items():
            event = stored.get(s)
            if event is None:
                continue
            shown = _parse(line)
            if shown is None or shown[0] == "stream.skipped":
                continue
            if shown != (event.type, event.payload):
                altered[s] = shown
        if not altered:
            return []
        view = self._reduce_shown(sample, altered)
        findings, _unknown = compare_poll(polled, view)  # a wrong value written: DIVERGED
        first = min(altered)
        return [
            attrs.evolve(f, detail=f"a socket wrote seq {first} unlike the store")
            for f in findings
            if f.classification is not Classification.MATCH
        ]

    def _reduce_shown(self, sample: _Sample, altered: Mapping[int, tuple[str, dict]]) -> Reference:
        """The stream reduced with some events as a socket wrote them."""
        ref = self._reduce(sample.user_id, sample.epoch, min(altered) - 1)
        for event in self._events(sample.user_id, ref.seq, sample.seq):
            type_, payload = altered.get(event.seq, (event.type, event.payload))
            ref.apply(event.seq, type_, payload)
        return ref

    def _record(self, user_id: str, findings: list[Finding], checks: Mapping[str, str]) -> None:
        config = self.rollout.current
        by_domain: dict[str, list[Finding]] = collections.defaultdict(list)
        for finding in findings:
            by_domain[finding.domain].append(finding)
        for domain, rows in by_domain.items():
            stage = config.stage_for(user_id, domain)
            if stage < Stage.SHADOW:
                continue
            counts = collections.Counter(f.classification.value for f in rows)
            samples = [
                redact(f, check=checks.get(f.key, "stream"))
                for f in rows
                if f.classification is not Classification.MATCH
            ][:SAMPLES_PER_POLL]
            self.evidence.add("audit", domain, stage.value, counts, samples)
            for name, value in counts.items():
                metrics.PARITY_AUDIT_COMPARISONS.labels(domain, name).inc(value)


def _parse(line: str) -> tuple[str, dict] | None:
    try:
        envelope = json.loads(line)
        return str(envelope["type"]), envelope.get("payload") or {}
    except (ValueError, KeyError, TypeError):
        return None


async def run_audit(runtime: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """The node's evidence book and shadow audit, until cancelled: `started` hands
    `(evidence, audit)` over."""
    evidence = EvidenceBook()
    audit = ShadowAudit(runtime.store, runtime.rollout, evidence)
    async with trio.open_nursery() as nursery:
        await nursery.start(evidence.run, runtime.store, runtime.settings.evidence_flush_s)
        await nursery.start(audit.run)
        nursery.start_soon(audit.watch)
        task_status.started((evidence, audit))
