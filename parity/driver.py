"""The scenario driver: seeded users doing the mutations of both paths.

`setup` prepares what the observers watch (conversations among the users,
one hosted event each, one organization each with its next two users as
members) before observation starts; `Driver.drive` then runs a
`random.Random(seed)` scenario until cancelled: messages sent over GraphQL
(`sendChatMessage`) and over the WebSocket (`chat.send` with a
`clientMessageId`), reads over both (`markConversationRead`, `chat.read`),
notifications created with an admin token and marked read, follow requests
and responses, RSVPs on the users' events, role changes and announcements
in the organizations, feed posts, and presence moved between ONLINE and AWAY
on the driver's own sockets.

The sequence of choices is drawn by one task from the seeded generator, so a
seed names a scenario; worker tasks carry the choices out concurrently.
Every mutation records a `parity.differ.Write` for each user whose state it
changes (the origin of the latency measure), and every read a
`parity.invariants.Read` (what lets an unread count fall).
"""

from __future__ import annotations

import datetime as _dt
import itertools
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio

from gateway.client import SESSION_ERRORS, Caller, GraphQL, GraphQLFailed, connect_session
from gateway.events import iso, utcnow
from parity.differ import Write
from parity.invariants import Read

__all__ = ["Driver", "DriverStats", "Scenario", "setup"]

log = logging.getLogger("cutover.parity")

CALL_TIMEOUT = 10.0  # seconds a driver socket's action waits for its reply


@attrs.define
class Scenario:
    """What the driver set up for the observed users."""

    conversations: list[tuple[str, tuple[str, ...]]]  # (id, participants)
    events: dict[str, str]  # event id -> host
    orgs: dict[str, tuple[str, ...]] = attrs.Factory(dict)  # org id -> (owner, members...)

    def events_of(self, user: str) -> tuple[str, ...]:
        return tuple(e for e, host in self.events.items() if host == user)

    def orgs_of(self, user: str) -> tuple[str, ...]:
        return tuple(o for o, members in self.orgs.items() if user in members)

    def neighbours_of(self, user: str) -> tuple[str, ...]:
        """The users sharing a conversation with `user` (who may watch its presence)."""
        return tuple(
            sorted({p for _, ps in self.conversations if user in ps for p in ps if p != user})
        )


@attrs.define
class DriverStats:
    """How many mutations the driver made, and how many failed."""

    done: int = 0
    failed: int = 0
    by_kind: dict[str, int] = attrs.Factory(dict)


async def setup(gql: GraphQL, tokens: dict[str, str], users: Sequence[str]) -> Scenario:
    """Conversations between neighbours (two rings) and one event hosted by each user."""
    conversations: list[tuple[str, tuple[str, ...]]] = []
    pairs = set()
    n = len(users)
    for step in (1, 2):
        for i, user in enumerate(users):
            other = users[(i + step) % n]
            pair = frozenset((user, other))
            if other == user or pair in pairs:
                continue
            pairs.add(pair)
            data = await gql.query(
                "mutation($p: [ID!]!) { createConversation(participantIds: $p) { id } }",
                {"p": [other]},
                token=tokens[user],
            )
            conversations.append((data["createConversation"]["id"], (user, other)))
    events = {}
    starts = iso(utcnow() + _dt.timedelta(days=7))
    for user in users:
        data = await gql.query(
            "mutation($t: String!, $s: DateTime!) { createEvent(title: $t, startsAt: $s) { id } }",
            {"t": f"parity event of {user}", "s": starts},
            token=tokens[user],
        )
        events[data["createEvent"]["id"]] = user
    orgs = {}
    if n >= 3:
        for i, user in enumerate(users):
            data = await gql.query(
                "mutation($n: String!) { createOrganization(name: $n) { id } }",
                {"n": f"parity org of {user}"},
                token=tokens[user],
            )
            org_id = data["createOrganization"]["id"]
            members = [user]
            for step, role in ((1, "MEMBER"), (2, "ADMIN")):
                other = users[(i + step) % n]
                await gql.query(
                    "mutation($o: ID!, $u: ID!, $r: OrgRole) "
                    "{ setMemberRole(orgId: $o, userId: $u, role: $r) { id } }",
                    {"o": org_id, "u": other, "r": role},
                    token=tokens[user],
                )
                members.append(other)
            orgs[org_id] = tuple(members)
    return Scenario(conversations, events, orgs)


class ActionFailed(Exception):
    """An action a driver socket called was answered with an error."""


async def _call(caller: Caller, action: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The payload of the reply to `action`; `ActionFailed` on an error reply."""
    with trio.fail_after(CALL_TIMEOUT):
        reply = await caller.call(action, payload)
    if reply.get("type") == "error":
        raise ActionFailed(f"{action}: {reply.get('payload')}")
    return reply.get("payload") or {}


Step = Callable[[], Any]

# What fails one step of the scenario (counted and logged; the scenario goes on).
STEP_ERRORS: tuple[type[Exception], ...] = (
    GraphQLFailed,
    ActionFailed,
    *SESSION_ERRORS,
    KeyError,
    trio.TooSlowError,
)


class Driver:
    """Runs a seeded scenario of mutations over both paths until cancelled."""

    def __init__(
        self,
        gql: GraphQL,
        ws_url: str | Sequence[str],
        tokens: dict[str, str],
        users: Sequence[str],
        scenario: Scenario,
        *,
        seed: int,
        admin_token: str | None,
        rate: float = 40.0,
        workers: int = 6,
        on_step: Callable[[DriverStats], None] | None = None,
    ) -> None:
        self.gql = gql
        # One URL, or one per node: each user's socket goes to a node of its own.
        self.ws_urls = [ws_url] if isinstance(ws_url, str) else list(ws_url)
        self.tokens = tokens
        self.users = list(users)
        self.scenario = scenario
        self.rng = random.Random(seed)
        self.admin_token = admin_token
        self.rate = rate
        self.workers = workers
        self.on_step = on_step
        self.writes: list[Write] = []
        self.reads: list[Read] = []
        self.stats = DriverStats()
        self.sockets: dict[str, Caller] = {}
        self.requested: set[tuple[str, str]] = set()
        self.pending: list[tuple[str, str, str]] = []  # (request id, from, to)
        self.accepted: set[tuple[str, str]] = set()  # (follower, followed)
        self.presence: dict[str, str] = {}  # user -> what its driver socket says
        self._messages = itertools.count(1)

    # -- recording -----------------------------------------------------------

    def _write(self, domain: str, *users: str) -> None:
        now = trio.current_time()
        self.writes.extend(Write(u, domain, now) for u in users)

    def _read(self, user: str, domain: str, conversation_id: str | None = None) -> None:
        self.reads.append(Read(user, domain, trio.current_time(), conversation_id=conversation_id))

    # -- the scenario --------------------------------------------------------

    def _choose(self) -> tuple[str, Step]:
        """The next step of the scenario, drawn from the seeded generator."""
        rng = self.rng
        kinds = ["gql_send", "ws_send", "gql_read", "ws_read", "rsvp", "follow", "respond"]
        weights = [24, 20, 8, 8, 12, 4, 4]
        if self.admin_token:
            kinds += ["notify", "notify_read"]
            weights += [16, 5]
        kinds += ["feed", "presence"]
        weights += [5, 5]
        if self.scenario.orgs:
            kinds += ["role", "announce"]
            weights += [3, 3]
        kind = rng.choices(kinds, weights)[0]
        conv_id, participants = rng.choice(self.scenario.conversations)
        actor = rng.choice(participants)
        others = tuple(p for p in participants if p != actor)
        if kind == "gql_send":
            return kind, lambda: self._gql_send(conv_id, actor, participants)
        if kind == "ws_send":
            return kind, lambda: self._ws_send(conv_id, actor, participants)
        if kind == "gql_read":
            return kind, lambda: self._gql_read(conv_id, actor)
        if kind == "ws_read":
            return kind, lambda: self._ws_read(conv_id, actor)
        if kind == "rsvp":
            event_id = rng.choice(sorted(self.scenario.events))
            host = self.scenario.events[event_id]
            user = rng.choice([u for u in self.users if u != host] or [host])
            status = rng.choice(["GOING", "INTERESTED", "NOT_GOING"])
            return kind, lambda: self._rsvp(event_id, host, user, status)
        if kind == "follow":
            target = rng.choice(others or (actor,))
            return kind, lambda: self._follow(actor, target)
        if kind == "respond":
            accept = rng.random() < 0.5
            pick = rng.random()
            return kind, lambda: self._respond(pick, accept)
        if kind == "notify":
            user = rng.choice(self.users)
            return kind, lambda: self._notify(user)
        if kind == "feed":
            return kind, lambda: self._post_feed(actor)
        if kind == "presence":
            return kind, lambda: self._presence(actor)
        if kind in ("role", "announce"):
            org_id = rng.choice(sorted(self.scenario.orgs))
            owner, *members = self.scenario.orgs[org_id]
            if kind == "announce":
                return kind, lambda: self._announce(org_id, owner)
            member = rng.choice(members)
            role = rng.choice(["MEMBER", "ADMIN"])
            return kind, lambda: self._set_role(org_id, owner, member, role)
        user = rng.choice(self.users)
        return kind, lambda: self._notify_read(user)

    async def _gql_send(self, conv_id: str, actor: str, participants: Sequence[str]) -> None:
        self._write("chat", *participants)
        await self.gql.query(
            "mutation($c: ID!, $b: String!, $k: String) "
            "{ sendChatMessage(conversationId: $c, body: $b, clientMessageId: $k) { id } }",
            {"c": conv_id, "b": f"message {next(self._messages)}", "k": self._client_id()},
            token=self.tokens[actor],
        )

    async def _ws_send(self, conv_id: str, actor: str, participants: Sequence[str]) -> None:
        self._write("chat", *participants)
        await _call(
            self.sockets[actor],
            "chat.send",
            {
                "conversationId": conv_id,
                "body": f"message {next(self._messages)}",
                "clientMessageId": self._client_id(),
            },
        )

    def _client_id(self) -> str:
        return f"parity-{next(self._messages)}-{self.rng.getrandbits(32):08x}"

    async def _gql_read(self, conv_id: str, actor: str) -> None:
        self._write("chat", actor)
        self._read(actor, "chat", conv_id)
        await self.gql.query(
            "mutation($c: ID!) { markConversationRead(conversationId: $c) { id } }",
            {"c": conv_id},
            token=self.tokens[actor],
        )

    async def _ws_read(self, conv_id: str, actor: str) -> None:
        self._write("chat", actor)
        self._read(actor, "chat", conv_id)
        await _call(self.sockets[actor], "chat.read", {"conversationId": conv_id})

    async def _rsvp(self, event_id: str, host: str, user: str, status: str) -> None:
        self._write("event", host, user)
        await self.gql.query(
            "mutation($e: ID!, $s: RsvpStatus!) { setRsvp(eventId: $e, status: $s) { status } }",
            {"e": event_id, "s": status},
            token=self.tokens[user],
        )

    async def _follow(self, actor: str, target: str) -> None:
        if actor == target or (actor, target) in self.requested:
            return
        self.requested.add((actor, target))
        self._write("follow", target)
        self._write("notification", target)
        data = await self.gql.query(
            "mutation($u: ID!) { requestFollow(userId: $u) { id status } }",
            {"u": target},
            token=self.tokens[actor],
        )
        request = data["requestFollow"]
        if request["status"] == "PENDING":
            self.pending.append((request["id"], actor, target))

    async def _respond(self, pick: float, accept: bool) -> None:
        if not self.pending:
            return
        request_id, requester, target = self.pending.pop(int(pick * len(self.pending)))
        self._write("follow", target)
        if accept:
            self._write("notification", requester)
            self._write("activity", requester)
            self.accepted.add((requester, target))
        await self.gql.query(
            "mutation($i: ID!, $a: Boolean!) { respondFollowRequest(id: $i, accept: $a) { id } }",
            {"i": request_id, "a": accept},
            token=self.tokens[target],
        )

    async def _notify(self, user: str) -> None:
        assert self.admin_token is not None
        self._write("notification", user)
        await self.gql.query(
            "mutation($u: ID!, $t: String!) "
            '{ createNotification(userId: $u, kind: "PARITY", text: $t) { id } }',
            {"u": user, "t": f"parity notification {next(self._messages)}"},
            token=self.admin_token,
        )

    async def _notify_read(self, user: str) -> None:
        self._write("notification", user)
        self._read(user, "notification")
        await self.gql.query(
            "mutation { markNotificationsRead(all: true) }", {}, token=self.tokens[user]
        )

    async def _post_feed(self, actor: str) -> None:
        followers = [f for f, followed in self.accepted if followed == actor]
        if followers:
            self._write("activity", *followers)
        await self.gql.query(
            "mutation($t: String!) { postFeedItem(text: $t) { id } }",
            {"t": f"parity post {next(self._messages)}"},
            token=self.tokens[actor],
        )

    async def _presence(self, actor: str) -> None:
        socket = self.sockets.get(actor)
        if socket is None:
            return
        status = "AWAY" if self.presence.get(actor, "ONLINE") == "ONLINE" else "ONLINE"
        self.presence[actor] = status
        self._write("presence", *self.scenario.neighbours_of(actor))
        await _call(socket, "presence.set", {"status": status})

    async def _set_role(self, org_id: str, owner: str, member: str, role: str) -> None:
        self._write("organization", *self.scenario.orgs[org_id])
        self._write("notification", member)
        await self.gql.query(
            "mutation($o: ID!, $u: ID!, $r: OrgRole) "
            "{ setMemberRole(orgId: $o, userId: $u, role: $r) { id } }",
            {"o": org_id, "u": member, "r": role},
            token=self.tokens[owner],
        )

    async def _announce(self, org_id: str, owner: str) -> None:
        self._write("organization", *self.scenario.orgs[org_id])
        self._write("notification", *self.scenario.orgs[org_id])
        await self.gql.query(
            "mutation($o: ID!, $t: String!, $b: String!) "
            "{ postAnnouncement(orgId: $o, title: $t, body: $b) { id } }",
            {"o": org_id, "t": f"parity news {next(self._messages)}", "b": "as announced"},
            token=self.tokens[owner],
        )

    # -- running -------------------------------------------------------------

    async def _worker(self, steps: trio.MemoryReceiveChannel[tuple[str, Step]]) -> None:
        async with steps:
            async for kind, step in steps:
                try:
                    await step()
                except STEP_ERRORS as exc:
                    self.stats.failed += 1
                    log.info("driver step %s failed: %s", kind, exc)
                else:
                    self.stats.done += 1
                    self.stats.by_kind[kind] = self.stats.by_kind.get(kind, 0) + 1
                if self.on_step is not None:
                    self.on_step(self.stats)

    async def _open_socket(
        self, user: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        url = self.ws_urls[self.users.index(user) % len(self.ws_urls)]
        async with connect_session(url, token=self.tokens[user], history=0) as session:
            caller = Caller(session)
            self.sockets[user] = caller
            task_status.started()
            try:
                await caller.run()
            except SESSION_ERRORS as exc:
                log.warning("driver socket of %s closed: %s", user, exc)
            finally:
                self.sockets.pop(user, None)

    async def drive(self) -> None:
        """Run the scenario until cancelled."""
        async with trio.open_nursery() as nursery:
            for user in self.users:
                try:
                    await nursery.start(self._open_socket, user)
                except SESSION_ERRORS as exc:
                    log.warning("driver socket of %s refused: %s", user, exc)
            send, receive = trio.open_memory_channel[tuple[str, Step]](self.workers)
            async with send:
                for _ in range(self.workers):
                    nursery.start_soon(self._worker, receive.clone())
                receive.close()
                next_at = trio.current_time()
                while True:
                    kind, step = self._choose()
                    if kind in ("ws_send", "ws_read", "presence") and not self.sockets:
                        continue
                    await send.send((kind, step))
                    next_at += 1.0 / self.rate
                    await trio.sleep_until(next_at)
