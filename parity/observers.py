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

The parsing (`state_from_graphql`) and event application (`apply_event`)
are pure; the classes around them do the I/O.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import attrs
import httpx
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from contracts import ProtocolError, encode_action, split_frame
from gateway.rollout import Stage
from parity.invariants import Read, Received, Violation
from parity.model import (
    MANAGER_ROLES,
    ConversationState,
    FeedItem,
    Observation,
    OrgState,
    UserState,
    error_observation,
    newest_since,
    observe,
)
from parity.report import Traffic

__all__ = [
    "GraphQL",
    "GraphQLClient",
    "GraphQLError",
    "Poller",
    "PushObserver",
    "Recorder",
    "RoundRobin",
    "apply_event",
    "apply_presence",
    "followed_since_from",
    "state_from_graphql",
    "state_query",
]

log = logging.getLogger("cutover.parity")

_ids = itertools.count(1)


class GraphQLError(Exception):
    """A GraphQL request that failed: transport error, HTTP status or `errors`."""


class GraphQL:
    """POST /graphql over one shared `httpx.AsyncClient`."""

    def __init__(self, client: httpx.AsyncClient, base_url: str) -> None:
        self.client = client
        self.url = base_url.rstrip("/") + "/graphql"

    async def request(
        self, token: str, query: str, variables: Mapping[str, Any] | None = None
    ) -> tuple[dict[str, Any], int]:
        """`data` and the response's size in bytes; any failure raises `GraphQLError`."""
        try:
            response = await self.client.post(
                self.url,
                json={"query": query, "variables": dict(variables or {})},
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.HTTPError as exc:
            raise GraphQLError(f"{type(exc).__name__}: {exc}") from exc
        size = len(response.content)
        try:
            body = response.json()
        except ValueError as exc:
            raise GraphQLError(f"HTTP {response.status_code}: not JSON") from exc
        if response.status_code != 200 or body.get("errors") or body.get("data") is None:
            errors = body.get("errors") or body.get("error") or response.status_code
            raise GraphQLError(f"HTTP {response.status_code}: {errors}")
        return body["data"], size


class GraphQLClient(Protocol):
    """What the harness asks of a GraphQL endpoint (`GraphQL`, `RoundRobin`)."""

    async def request(
        self, token: str, query: str, variables: Mapping[str, Any] | None = None
    ) -> tuple[dict[str, Any], int]: ...


class RoundRobin:
    """`GraphQL` over several nodes: each request goes to the next node in turn."""

    def __init__(self, nodes: Sequence[GraphQL]) -> None:
        if not nodes:
            raise ValueError("no nodes")
        self.nodes = list(nodes)
        self._next = itertools.cycle(self.nodes)

    async def request(
        self, token: str, query: str, variables: Mapping[str, Any] | None = None
    ) -> tuple[dict[str, Any], int]:
        return await next(self._next).request(token, query, variables)


# -- the state a path shows ----------------------------------------------------


def state_query(
    domains: Iterable[str],
    events: Sequence[str],
    orgs: Sequence[str] = (),
    presence_of: Sequence[str] = (),
) -> tuple[str, dict[str, Any]]:
    """The GraphQL query (and variables) that reads the cursor and every state field."""
    domains = set(domains)
    fields = ["realtimeCursor { epoch seq }"]
    params: list[str] = []
    variables: dict[str, Any] = {}
    if "notification" in domains:
        fields.append("unreadNotificationCount")
    if "chat" in domains:
        fields.append("chatUnreadCount")
        fields.append(
            "conversations(first: 200) { id unreadCount lastReadMessageId lastMessage { id } }"
        )
    if "follow" in domains:
        fields.append("followRequests { id }")
    if "event" in domains:
        for i, event_id in enumerate(events):
            params.append(f"$e{i}: ID!")
            variables[f"e{i}"] = event_id
            fields.append(f"e{i}: event(id: $e{i}) {{ id rsvpCounts {{ going interested }} }}")
    if "organization" in domains:
        for i, org_id in enumerate(orgs):
            params.append(f"$o{i}: ID!")
            variables[f"o{i}"] = org_id
            fields.append(
                f"o{i}: organization(id: $o{i}) {{ viewerRole members {{ userId role }} }}"
            )
            fields.append(f"a{i}: announcements(orgId: $o{i}, first: 1) {{ id }}")
    if "activity" in domains:
        fields.append(f"feed(first: {FEED_PAGE}) {{ id authorId createdAt }}")
        fields.append("sentFollowRequests { toUserId status updatedAt }")
    if "presence" in domains and presence_of:
        params.append("$pu: [ID!]!")
        variables["pu"] = list(presence_of)
        fields.append("presence(userIds: $pu) { userId status }")
    head = f"query ParityState({', '.join(params)})" if params else "query ParityState"
    return head + " { " + " ".join(fields) + " }", variables


FEED_PAGE = 50


def _org_state(view: Mapping[str, Any] | None, latest: Any) -> OrgState | None:
    if view is None:
        return None
    role = view.get("viewerRole")
    members = view.get("members") or []
    known = "members" in view and view["members"] is not None and role in MANAGER_ROLES
    return OrgState(
        role=role,
        members=tuple(sorted((m["userId"], m["role"]) for m in members)) if known else None,
        announcement=(latest[0]["id"] if latest else None) if isinstance(latest, list) else None,
    )


def followed_since_from(sent: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Author -> when the viewer's follow was accepted, from `sentFollowRequests`."""
    return {
        r["toUserId"]: r["updatedAt"]
        for r in sent
        if r.get("status") == "ACCEPTED" and r.get("updatedAt")
    }


def state_from_graphql(
    user_id: str,
    data: Mapping[str, Any],
    domains: Iterable[str],
    events: Sequence[str],
    orgs: Sequence[str] = (),
    presence_of: Sequence[str] = (),
) -> tuple[UserState, str, int]:
    """The user's state, the cursor's epoch and its seq, from a `state_query` response.

    The domains added after the first four (organization, activity, presence)
    read only what the response holds, so a response without them (an older
    snapshot) leaves them empty.
    """
    domains = set(domains)
    cursor = data["realtimeCursor"]
    state = UserState(user_id)
    changes: dict[str, Any] = {}
    if "notification" in domains:
        changes["notification_unread"] = int(data["unreadNotificationCount"])
    if "chat" in domains:
        changes["chat_total"] = int(data["chatUnreadCount"])
        changes["conversations"] = {
            c["id"]: ConversationState(
                unread=int(c["unreadCount"]),
                last_message_id=(c.get("lastMessage") or {}).get("id"),
                last_read_id=c.get("lastReadMessageId"),
            )
            for c in data["conversations"]
        }
    if "follow" in domains:
        changes["follow_pending"] = frozenset(r["id"] for r in data["followRequests"])
    if "event" in domains:
        counts = {}
        for i, event_id in enumerate(events):
            event = data.get(f"e{i}")
            if event is not None:
                rsvp = event["rsvpCounts"]
                counts[event_id] = (int(rsvp["going"]), int(rsvp["interested"]))
        changes["event_counts"] = counts
    if "organization" in domains:
        held = {}
        for i, org_id in enumerate(orgs):
            org = _org_state(data.get(f"o{i}"), data.get(f"a{i}"))
            if org is not None:
                held[org_id] = org
        changes["orgs"] = held
    if "activity" in domains and "feed" in data and "sentFollowRequests" in data:
        since = followed_since_from(data["sentFollowRequests"])
        items = [FeedItem(i["id"], i["authorId"], i["createdAt"]) for i in data["feed"]]
        changes["followed_since"] = since
        changes["feed_latest"] = newest_since(items, since, user_id)
    if "presence" in domains and isinstance(data.get("presence"), list):
        wanted = set(presence_of)
        changes["presence"] = {
            p["userId"]: p["status"] for p in data["presence"] if p["userId"] in wanted
        }
    return state.evolve(**changes), str(cursor["epoch"]), int(cursor["seq"])


def apply_event(
    state: UserState, type_: str, payload: Mapping[str, Any], *, watched_events: Iterable[str]
) -> tuple[UserState, Read | None]:
    """The user's state after one durable event (absolute values), and the read it
    reports, if the event is the user's own read (its `at` and `version` are left to
    the caller)."""
    me = state.user_id
    if type_ in ("notification.new", "notification.read"):
        if state.notification_unread is None:
            return state, None
        read = Read(me, "notification", 0.0) if type_ == "notification.read" else None
        return state.evolve(notification_unread=int(payload["unreadCount"])), read
    if type_ == "chat.message":
        message = payload["message"]
        conv = state.conversations.get(message["conversationId"])
        if conv is None:
            return state, None
        conversations = dict(state.conversations)
        conversations[message["conversationId"]] = attrs.evolve(conv, last_message_id=message["id"])
        return state.evolve(conversations=conversations), None
    if type_ == "chat.conversation.updated":
        if state.chat_total is None:
            return state, None
        c = payload["conversation"]
        conversations = dict(state.conversations)
        conversations[c["id"]] = ConversationState(
            unread=int(c["unreadCount"]),
            last_message_id=(c.get("lastMessage") or {}).get("id"),
            last_read_id=c.get("lastReadMessageId"),
        )
        return state.evolve(
            conversations=conversations, chat_total=int(payload["totalUnread"])
        ), None
    if type_ == "chat.read":
        if payload.get("userId") == me:
            return state, Read(me, "chat", 0.0, conversation_id=payload.get("conversationId"))
        return state, None
    if type_ in ("follow.request.created", "follow.request.updated"):
        request = payload["request"]
        if request.get("fromUserId") == me and state.followed_since is not None:
            since = dict(state.followed_since)
            author = request.get("toUserId")
            if request.get("status") == "ACCEPTED" and author not in since:
                since[author] = request.get("updatedAt")
                state = state.evolve(followed_since=since)
        if state.follow_pending is None or request.get("toUserId") != me:
            return state, None
        pending = set(state.follow_pending)
        if request.get("status") == "PENDING":
            pending.add(request["id"])
        else:
            pending.discard(request["id"])
        return state.evolve(follow_pending=pending), None
    if type_ == "organization.member.updated":
        org_id = str(payload.get("orgId"))
        org = state.orgs.get(org_id)
        if org is None:
            return state, None
        user, role = str(payload.get("userId")), payload.get("role")
        if user == me:
            members = org.members
            if role not in MANAGER_ROLES:
                members = None  # no longer told of every change
            elif org.role not in MANAGER_ROLES:
                members = None  # promoted: the members so far are not pushed (refetch)
            if members is not None:
                members = _with_member(members, me, role)
            org = OrgState(role=role, members=members, announcement=org.announcement)
        elif org.members is not None:
            org = attrs.evolve(org, members=_with_member(org.members, user, role))
        return state.evolve(orgs={**state.orgs, org_id: org}), None
    if type_ == "organization.announcement":
        announcement = payload.get("announcement") or {}
        org = state.orgs.get(str(announcement.get("orgId")))
        if org is None or org.role is None:
            return state, None
        org = attrs.evolve(org, announcement=announcement.get("id"))
        return state.evolve(orgs={**state.orgs, announcement["orgId"]: org}), None
    if type_ == "activity.feed.item":
        item = payload.get("item") or {}
        if state.followed_since is None or item.get("authorId") not in state.followed_since:
            return state, None
        latest = dict(state.feed_latest)
        current = latest.get(item["authorId"])
        if current is None or item["createdAt"] >= current.created_at:
            latest[item["authorId"]] = FeedItem(item["id"], item["authorId"], item["createdAt"])
        return state.evolve(feed_latest=latest), None
    if type_ == "event.rsvp.updated":
        event_id = payload["rsvp"]["eventId"]
        if event_id not in set(watched_events) or event_id not in state.event_counts:
            return state, None
        counts = dict(state.event_counts)
        counts[event_id] = (int(payload["counts"]["going"]), int(payload["counts"]["interested"]))
        return state.evolve(event_counts=counts), None
    return state, None


def _with_member(
    members: tuple[tuple[str, str], ...], user: str, role: str | None
) -> tuple[tuple[str, str], ...]:
    kept = [(u, r) for u, r in members if u != user]
    if role is not None:
        kept.append((user, role))
    return tuple(sorted(kept))


def apply_presence(state: UserState, payload: Mapping[str, Any]) -> UserState:
    """The state after a `user.presence.updated` (ephemeral) of a watched user."""
    user = payload.get("userId")
    if user not in state.presence:
        return state
    return state.evolve(presence={**state.presence, user: payload.get("status")})


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


@attrs.define
class UserSetup:
    """One observed user: who, with which token, watching what, at which stages."""

    user_id: str
    token: str
    domains: tuple[str, ...]  # the domains observed for this user
    push_domains: tuple[str, ...]  # those whose push is on (stage >= SHADOW)
    events: tuple[str, ...] = ()  # the events whose RSVP counts are watched
    orgs: tuple[str, ...] = ()  # the organizations (of which the user is a member) watched
    presence_of: tuple[str, ...] = ()  # the users whose presence is watched

    def query(self, domains: Iterable[str]) -> tuple[str, dict[str, Any]]:
        return state_query(domains, self.events, self.orgs, self.presence_of)

    def parse(self, data: Mapping[str, Any], domains: Iterable[str]) -> tuple[UserState, str, int]:
        return state_from_graphql(
            self.user_id, data, domains, self.events, self.orgs, self.presence_of
        )


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
            data, size = await self.gql.request(user.token, query, variables)
            state, _epoch, seq = user.parse(data, user.domains)
        except (GraphQLError, KeyError, TypeError, ValueError) as exc:
            now = trio.current_time()
            self.recorder.add(
                error_observation(self.path, user.user_id, d, str(exc), observed_at=now)
                for d in user.domains
            )
            return
        self.recorder.bytes[self.path] += size
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


_CONNECTION_ERRORS = (ConnectionClosed, HandshakeError, OSError, GraphQLError, ProtocolError)


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

    async def _snapshot(self) -> None:
        """Refetch the state over GraphQL at a cursor (initially and on reset)."""
        user = self.user
        query, variables = user.query(user.push_domains)
        self.recorder.requests["push"] += 1
        data, size = await self.gql.request(user.token, query, variables)
        self.recorder.bytes["push"] += size
        self.state, self.epoch, self.last_seq = user.parse(data, user.push_domains)
        self._emit(self.last_seq)

    async def _refetch(self, domain: str) -> None:
        """Refetch one domain's state, as a client does when the contract pushes it no
        history: presence after (re)subscribing, an organization's members once promoted."""
        assert self.state is not None
        user = self.user
        query, variables = user.query([domain])
        self.recorder.requests["push"] += 1
        data, size = await self.gql.request(user.token, query, variables)
        self.recorder.bytes["push"] += size
        fresh, _epoch, _seq = user.parse(data, [domain])
        if domain == "presence":
            self.state = self.state.evolve(presence=fresh.presence)
        elif domain == "organization":
            orgs = dict(self.state.orgs)
            for org_id, org in fresh.orgs.items():
                if org_id in orgs and orgs[org_id].members is None:
                    orgs[org_id] = attrs.evolve(orgs[org_id], members=org.members)
            self.state = self.state.evolve(orgs=orgs)
        self._emit_domains([domain], self.last_seq)

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
        headers = [(b"Authorization", f"Bearer {self.user.token}".encode())]
        async with open_websocket_url(
            self.ws_url, extra_headers=headers, message_queue_size=64, max_message_size=1 << 20
        ) as ws:
            self.connections += 1
            self._connection = f"{self.user.user_id}#{self.connections}"
            welcome = None
            while welcome is None:
                for envelope in self._envelopes(await ws.get_message()):
                    if envelope.get("type") == "session.welcome":
                        welcome = envelope["payload"]
            if self.state is None:
                await self._snapshot()
            resume_id = f"resume-{next(_ids)}"
            self._awaiting = resume_id
            self._mark = self.last_seq
            await ws.send_message(
                encode_action(
                    "session.resume",
                    {"epoch": self.epoch, "lastSeq": self.last_seq},
                    id=resume_id,
                )
            )
            watches_presence = "presence" in self.user.push_domains and self.user.presence_of
            if watches_presence:
                for other in self.user.presence_of:
                    await ws.send_message(
                        encode_action(
                            "subscribe", {"topic": f"presence:{other}"}, id=f"sub-{next(_ids)}"
                        )
                    )
            if self.away:
                await ws.send_message(
                    encode_action("presence.set", {"status": "AWAY"}, id=f"away-{next(_ids)}")
                )
            if watches_presence:
                await self._refetch("presence")
            self.ready.set()
            heartbeat = max(1.0, float(welcome.get("heartbeatIntervalMs", 30_000)) / 1000 / 2)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._heartbeat, ws, heartbeat)
                while True:
                    message = await ws.get_message()
                    for envelope in self._envelopes(message):
                        await self._handle(envelope)

    def _envelopes(self, message: str | bytes) -> list[dict[str, Any]]:
        text = message.decode("utf-8") if isinstance(message, bytes) else message
        self.recorder.requests["push"] += 1
        self.recorder.bytes["push"] += len(text.encode("utf-8"))
        return split_frame(text)

    async def _heartbeat(self, ws: Any, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            await ws.send_message(encode_action("ping", id=f"ping-{next(_ids)}"))

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
        if seq <= self.last_seq:
            if self._awaiting is None:  # a repeat on a live connection
                self.recorder.received[self.user.user_id].append(
                    Received(seq, now, connection=self._connection)
                )
            return
        if seq > self.last_seq + 1:
            if self._awaiting is not None:
                return  # live traffic from before the resume; the replay brings it
            self.recorder.received[self.user.user_id].append(
                Received(seq, now, connection=self._connection)
            )
            raise _Reconnect  # resume from the last contiguous seq, as a client would
        self.recorder.received[self.user.user_id].append(
            Received(seq, now, resumed_from=self._mark, connection=self._connection)
        )
        self._mark = None
        self.last_seq = seq
        if type_ != "stream.skipped":
            self.state, read = apply_event(
                self.state, str(type_), payload, watched_events=self.user.events
            )
            if read is not None:
                self.recorder.reads.append(attrs.evolve(read, at=now, version=seq))
        self._emit(seq)
        if type_ == "organization.member.updated" and any(
            org.role in MANAGER_ROLES and org.members is None for org in self.state.orgs.values()
        ):
            await self._refetch("organization")


def observed_domains(
    domains: Sequence[str], stages: Mapping[str, str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The domains to poll and the subset whose push is on, from a user's stages."""
    polled = tuple(domains)
    pushed = tuple(d for d in domains if Stage.parse(stages.get(d, "SHADOW")) >= Stage.SHADOW)
    return polled, pushed
