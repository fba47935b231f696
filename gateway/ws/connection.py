"""One WebSocket connection of the push path, over an abstract transport.

A connection is one nursery owning its tasks (DESIGN.md, "Per-connection
structure"), two of them, so an idle connection holds little:

- the reader, in the task that serves the socket (the nursery's body): size
  check, rate limit, decode, dispatch; it also keeps the connection's timers
  (idle timeout, token expiry, the typing auto-stop), waiting for the next
  frame only until the earliest of them is due;
- the writer, the nursery's one child: one transport send per batch of the
  send buffer, and the `UserStream`'s work (gap fills, refills, resume
  replays, a due tail), whose paced events make room by sending a batch
  itself.

Any task ending the connection raises `CloseConnection`; cleanup (unregister,
presence, typing stops, the close frame) runs in `finally` under a shielded,
bounded timeout.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import trio

from contracts import ClientAction, CloseCode, ProtocolError, decode_action, encode_envelope
from gateway.errors import CutoverError
from gateway.events import Cursor, Outcome, iso, new_id, utcnow
from gateway.ports import (
    RolloutView,
    Runner,
    SessionDomain,
    StreamStore,
    TokenVerifier,
    TopicAuthorizer,
    ViewerFactory,
)
from gateway.ws.actions import HANDLERS
from gateway.ws.hub import Hub
from gateway.ws.ratelimit import AbuseDetector, TokenBucket
from gateway.ws.sendbuffer import SendBuffer, SlowConsumer
from gateway.ws.stream import UserStream
from gateway.ws.transport import Transport, TransportClosed
from ops import metrics as _metrics

if TYPE_CHECKING:
    from gateway.auth import Principal
    from gateway.config import Settings
    from gateway.domain.viewer import Viewer

__all__ = ["CloseConnection", "Connection", "WsSettings"]

log = logging.getLogger(__name__)


INTERNAL_ERROR = 1011  # WebSocket "internal error": an unexpected failure of the session


@attrs.define
class WsSettings:
    """The push path's per-connection limits and timers.

    A view of `gateway.config.Settings`: every field has a setting of the same
    name (and so a flag and a `CUTOVER_*` variable); `from_settings` copies them.
    """

    heartbeat_interval_ms: int = 30_000
    idle_timeout_ms: int = 75_000
    max_frame_bytes: int = 65_536
    actions_per_second: int = 20
    actions_burst: int = 40
    send_buffer_items: int = 1024
    send_buffer_bytes: int = 1 << 20
    typing_timeout_s: float = 6.0
    max_subscriptions: int = 256
    max_typing: int = 32
    max_protocol_violations: int = 10
    abuse_max_refusals: int = 100
    abuse_window_s: float = 10.0
    tail_interval_s: float = 5.0
    slow_consumer_timeout_s: float = 5.0
    stream_inbox_size: int = 256
    max_batch_bytes: int = 256 * 1024
    cleanup_timeout_s: float = 5.0
    flush_timeout_s: float = 2.0
    # What the welcome tells browsers about parity beacons (gateway.beacons.announcement).
    parity: dict | None = attrs.field(default=None, metadata={"derived": True})

    @classmethod
    def from_settings(
        cls, settings: Settings, *, parity: dict[str, Any] | None = None
    ) -> WsSettings:
        """The fields of the node's settings, plus the derived `parity` announcement."""
        values = {
            field.name: getattr(settings, field.name)
            for field in attrs.fields(cls)
            if not field.metadata.get("derived")
        }
        return cls(**values, parity=parity)


class CloseConnection(Exception):
    """End the connection with a close code (after flushing what is queued)."""

    def __init__(self, code: int, reason: str = "", *, flush: bool = True) -> None:
        super().__init__(f"{code} {reason}")
        self.code = int(code)
        self.reason = reason
        self.flush = flush


class Connection:
    """One authenticated WebSocket session of one user."""

    # Slots: an instance dict of this many attributes is about 1.5 KiB per connection.
    __slots__ = (
        "_abuse",
        "_bucket",
        "_cancel_scope",
        "_expires_at_trio",
        "_last_activity",
        "_overflowed",
        "_requested_close",
        "_runner",
        "_topic_authorizer",
        "_viewer_factory",
        "_violations",
        "authenticator",
        "buffer",
        "close_code",
        "close_reason",
        "closed",
        "domain",
        "hub",
        "id",
        "node_id",
        "presence",
        "principal",
        "resume_from",
        "rollout",
        "settings",
        "store",
        "stream",
        "topics",
        "transport",
        "typing",
        "user_id",
    )

    def __init__(
        self,
        transport: Transport,
        principal: Principal,
        *,
        hub: Hub,
        store: StreamStore,
        domain: SessionDomain,
        authenticator: TokenVerifier | None = None,
        rollout: RolloutView | None = None,
        settings: WsSettings | None = None,
        node_id: str = "local",
        runner: Runner | None = None,
        viewer_factory: ViewerFactory | None = None,
        topic_authorizer: TopicAuthorizer | None = None,
        resume_from: Cursor | None = None,
    ) -> None:
        self.id = new_id("conn")
        # A resume asked for in the handshake (`/ws?epoch=E&lastSeq=N`): replayed
        # before any live event, so the client never sees one out of order.
        self.resume_from = resume_from
        self.transport = transport
        self.principal = principal
        self.user_id: str = principal.user_id
        self.hub = hub
        self.store = store
        self.domain = domain
        self.authenticator = authenticator
        self.rollout = rollout
        self.settings = settings or WsSettings()
        self.node_id = node_id
        self._runner = runner
        self._viewer_factory = viewer_factory
        self._topic_authorizer = topic_authorizer
        self.presence = "ONLINE"
        self.topics: set[str] = set()
        self.buffer = SendBuffer(
            max_items=self.settings.send_buffer_items,
            max_bytes=self.settings.send_buffer_bytes,
        )
        self.stream = UserStream(
            user_id=self.user_id,
            store=store,
            buffer=self.buffer,
            cursor=Cursor("", 0),
            rollout=rollout,
            runner=runner,
            inbox_size=self.settings.stream_inbox_size,
            tail_interval_s=None if hub.tails else self.settings.tail_interval_s,
            stall_timeout_s=self.settings.slow_consumer_timeout_s,
            wake=self.buffer.wake,
        )
        clock = trio.current_time
        self._bucket = TokenBucket(
            self.settings.actions_per_second, self.settings.actions_burst, clock=clock
        )
        self._abuse = AbuseDetector(
            max_refusals=self.settings.abuse_max_refusals,
            window_s=self.settings.abuse_window_s,
            clock=clock,
        )
        self._violations = 0
        self._last_activity = 0.0
        self._expires_at_trio = math.inf
        self._overflowed = False
        # conversation id -> when its typing `started` ends without a renewal
        self.typing: dict[str, float] = {}
        self._cancel_scope: trio.CancelScope | None = None
        self._requested_close: CloseConnection | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed = trio.Event()

    # -- the session ---------------------------------------------------------

    async def serve(self) -> None:
        """Run the session until it ends; always leaves the hub and closes the transport."""
        close = CloseConnection(CloseCode.NORMAL, "", flush=True)
        registered = False
        try:
            self._last_activity = trio.current_time()
            self.set_expiry(self.principal.expires_at)
            stream = self.stream
            # Register before reading the position: every event committed after
            # the position is then either offered live or found by tailing.
            self.hub.register(self)
            registered = True
            position: Cursor = await self.run(self.store.stream_position, self.user_id)
            stream.epoch = position.epoch
            stream.last_sent = max(stream.last_sent, position.seq)
            self.buffer.put_durable(self._welcome(position))
            if self.resume_from is not None:
                await stream.request_resume(self.resume_from.epoch, self.resume_from.seq, None)
            await self.hub.presence_changed(self.user_id)
            close = await self._run_tasks(stream)
        except CloseConnection as exc:
            close = exc
        except TransportClosed as exc:
            close = _transport_closed(exc)
        except SlowConsumer:
            close = CloseConnection(CloseCode.SLOW_CONSUMER, "slow consumer", flush=False)
        except Exception:
            log.exception("connection %s of %s failed", self.id, self.user_id)
            close = CloseConnection(INTERNAL_ERROR, "internal error", flush=False)
        finally:
            with trio.CancelScope(shield=True) as cleanup:
                cleanup.deadline = trio.current_time() + self.settings.cleanup_timeout_s
                await self._cleanup(close, registered)

    async def _run_tasks(self, stream: UserStream) -> CloseConnection:
        ended: list[CloseConnection] = []
        # A live event that would overflow the send buffer ends the session at
        # once, from the hub's fan-out (the writer may be blocked in a send).
        stream.on_overflow = self._overflow
        try:
            async with trio.open_nursery() as nursery:
                self._cancel_scope = nursery.cancel_scope
                if self._requested_close is not None or self._overflowed:
                    nursery.cancel_scope.cancel()
                nursery.start_soon(self._writer)
                await self._reader()
        except* SlowConsumer:
            self._overflowed = True
        except* CloseConnection as group:
            ended.append(_first_close(group))
        except* TransportClosed as group:
            ended.append(_transport_closed(_first(group, TransportClosed)))
        finally:
            stream.on_overflow = None
            self._cancel_scope = None
        if self._overflowed:
            _metrics.SEND_BUFFER_OVERFLOWS.inc()
            return CloseConnection(CloseCode.SLOW_CONSUMER, "slow consumer", flush=False)
        if ended:
            return ended[0]
        if self._requested_close is not None:
            return self._requested_close
        return CloseConnection(CloseCode.NORMAL, "")

    def _overflow(self, _exc: SlowConsumer) -> None:
        self._overflowed = True
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    def close_soon(self, code: int, reason: str, final_text: str | None = None) -> None:
        """Queue `final_text`, then close with `code` (the hub's graceful shutdown)."""
        if self._requested_close is not None:
            return
        if final_text is not None:
            self.buffer.put_final(final_text)
        self._requested_close = CloseConnection(code, reason, flush=True)
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    async def _cleanup(self, close: CloseConnection, registered: bool) -> None:
        self.buffer.close()
        if close.flush:
            # The writer has stopped; a batch it had taken was written whole (the
            # transport never leaves a frame half-sent), so only what is still
            # queued goes, the final frame (`system.reconnect`, an error) last.
            pending = self.buffer.take_all()
            if pending:
                with trio.move_on_after(self.settings.flush_timeout_s):
                    try:
                        await self.transport.send("\n".join(pending))
                    except TransportClosed:
                        pass
        try:
            await self.transport.close(close.code, close.reason)
        except TransportClosed:
            pass
        except Exception:
            log.exception("closing connection %s failed", self.id)
        self.close_code = close.code
        self.close_reason = close.reason
        _metrics.DISCONNECTS.labels(str(close.code)).inc()
        if registered:
            self.hub.unregister(self)
            for conversation_id in list(self.typing):
                await self.stop_typing(conversation_id)
            try:
                await self.hub.presence_changed(self.user_id)
            except Exception:
                log.exception("presence update for %s failed", self.user_id)
        self.typing.clear()
        self.closed.set()

    def _welcome(self, position: Cursor) -> str:
        settings = self.settings
        domains = self.rollout.view_for(self.user_id) if self.rollout is not None else {}
        payload = {
            "connectionId": self.id,
            "userId": self.user_id,
            "nodeId": self.node_id,
            "epoch": position.epoch,
            "seq": position.seq,
            "heartbeatIntervalMs": settings.heartbeat_interval_ms,
            "idleTimeoutMs": settings.idle_timeout_ms,
            "protocol": {"min": 1, "max": 1},
            "domains": domains,
            "limits": {
                "maxFrameBytes": settings.max_frame_bytes,
                "actionsPerSecond": settings.actions_per_second,
                "actionsBurst": settings.actions_burst,
            },
        }
        if settings.parity is not None:
            payload["parity"] = settings.parity
        return self._envelope("session.welcome", payload, None)

    # -- tasks ---------------------------------------------------------------

    async def _writer(self) -> None:
        """Send the send buffer's batches, and do the stream's work when it has some."""
        buffer = self.buffer
        stream = self.stream
        stream.start()
        while True:
            if stream.pending:
                await stream.work(self._send_batch)
            elif len(buffer):
                await self._send_batch()
            elif buffer.closed:
                return
            elif stream.tail_at == math.inf:
                await buffer.wait()
            else:
                with trio.move_on_at(stream.tail_at):
                    await buffer.wait()

    async def _send_batch(self) -> None:
        """Send one batch of what is pending (at most `max_batch_bytes`) as one frame."""
        batch = self.buffer.take_batch(self.settings.max_batch_bytes)
        if not batch:
            return
        text = "\n".join(batch)
        del batch  # what was sent is not kept while the writer waits for more
        await self.transport.send(text)

    async def _reader(self) -> None:
        """Read and handle frames; between frames, keep the connection's timers:
        close an idle connection (1001) and an expired session (4001), and send a
        stop for every typing `started` not renewed within the typing timeout.
        The deadline is computed again after every frame, so a handler that
        changes a timer (a refresh, a typing action) needs no wake-up."""
        transport = self.transport
        idle_s = self.settings.idle_timeout_ms / 1000
        while True:
            deadline = min(
                self._last_activity + idle_s,
                self._expires_at_trio,
                min(self.typing.values(), default=math.inf),
            )
            # A timer that fell due while a frame was handled fires before the
            # next frame is read (a buffered frame returns without waiting).
            if trio.current_time() < deadline:
                text: str | None = None
                # A receive cancelled by the timer loses nothing: the bytes stay
                # in the socket or wsproto's buffer for the next one.
                with trio.move_on_at(deadline):
                    text = await transport.receive()
                if text is not None:
                    self._last_activity = trio.current_time()
                    await self._handle_frame(text)
                    continue
            now = trio.current_time()
            if now >= self._expires_at_trio:
                self.buffer.put_final(
                    self._error_envelope(
                        {"code": "TOKEN_EXPIRED", "message": "the session's token has expired"},
                        None,
                    )
                )
                raise CloseConnection(CloseCode.TOKEN_EXPIRED, "token expired")
            if now >= self._last_activity + idle_s:
                raise CloseConnection(CloseCode.GOING_AWAY, "idle timeout")
            for conversation_id, at in list(self.typing.items()):
                if at <= now:
                    await self.stop_typing(conversation_id)

    async def stop_typing(self, conversation_id: str) -> None:
        """Publish a typing stop for a conversation this connection was typing in."""
        self.typing.pop(conversation_id, None)
        try:
            outcome = await self.run(self.domain.typing, self.viewer(), conversation_id, "stopped")
            await self.hub.publish(outcome)
        except CutoverError as exc:
            log.info("typing stop in %s refused: %s", conversation_id, exc.message)

    # -- frames --------------------------------------------------------------

    async def _handle_frame(self, text: str) -> None:
        limit = self.settings.max_frame_bytes
        if len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit):
            raise CloseConnection(CloseCode.MESSAGE_TOO_BIG, "frame too big")
        wait_s = self._bucket.take()
        try:
            action = decode_action(text)
        except ProtocolError as exc:
            await self._protocol_violation(exc)
            return
        if wait_s > 0:
            if self._abuse.refused():
                self._count_action(action.action, "abuse")
                raise CloseConnection(CloseCode.SLOW_CONSUMER, "rate limit abuse")
            self._count_action(action.action, "rate_limited")
            self.reply_error(
                {
                    "code": "RATE_LIMITED",
                    "message": "too many actions",
                    "retryAfterMs": max(1, math.ceil(wait_s * 1000)),
                },
                action.id,
            )
            return
        await self._dispatch(action)

    async def _protocol_violation(self, exc: ProtocolError) -> None:
        self.reply_error(exc.to_payload(), exc.action_id)
        self._count_action("invalid", exc.code)
        if exc.code == "UNSUPPORTED_VERSION":
            raise CloseConnection(CloseCode.PROTOCOL_VIOLATION, "unsupported version")
        self._violations += 1
        if self._violations >= self.settings.max_protocol_violations:
            raise CloseConnection(CloseCode.PROTOCOL_VIOLATION, "repeated protocol violations")

    async def _dispatch(self, action: ClientAction) -> None:
        handler = HANDLERS[action.action]  # decode_action admits only the contract's actions
        try:
            await handler(self, action.id, action.payload)
        except (SlowConsumer, CloseConnection, TransportClosed):
            raise
        except CutoverError as exc:
            self._count_action(action.action, exc.code)
            self.reply_error(exc.to_payload(), action.id)
        except Exception:
            log.exception("action %s of %s failed", action.action, self.user_id)
            self._count_action(action.action, "INTERNAL")
            self.reply_error({"code": "INTERNAL", "message": "internal error"}, action.id)
        else:
            self._count_action(action.action, "ok")

    async def may_subscribe(self, topic: str) -> bool:
        """App-declared topics by the registry's rules, the contract's by the domain."""
        if self._topic_authorizer is not None:
            p = self.principal
            verdict = await self._topic_authorizer.allowed(p.user_id, p.tenant, topic)
            if verdict is not None:
                return bool(verdict)
        return bool(await self.run(self.domain.can_subscribe, self.viewer(), topic))

    # -- what handlers use ----------------------------------------------------

    def viewer(self) -> Viewer:
        if self._viewer_factory is not None:
            return self._viewer_factory(self.principal)
        from gateway.domain import Viewer

        p = self.principal
        return Viewer(user_id=p.user_id, scopes=p.scopes, tenant=p.tenant, name=p.name)

    async def publish(self, outcome: Outcome[object]) -> None:
        if outcome.events or outcome.ephemeral:
            await self.hub.publish(outcome)

    def set_expiry(self, expires_at: float) -> None:
        remaining = float(expires_at) - time.time() if expires_at else math.inf
        self._expires_at_trio = trio.current_time() + remaining

    def _envelope(self, type_: str, payload: dict, reply_to: str | None) -> str:
        return encode_envelope(
            type_, payload, id=new_id("evt"), sent_at=iso(utcnow()), reply_to=reply_to
        )

    def _error_envelope(self, payload: dict, reply_to: str | None) -> str:
        return self._envelope("error", payload, reply_to)

    def reply(self, type_: str, payload: dict, reply_to: str | None) -> None:
        self.buffer.put_durable(self._envelope(type_, payload, reply_to))

    def ack(self, payload: dict, reply_to: str | None) -> None:
        if reply_to is not None:
            self.reply("ack", payload, reply_to)

    def reply_error(self, payload: dict, reply_to: str | None) -> None:
        self.buffer.put_durable(self._error_envelope(payload, reply_to))

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run a blocking store or domain call off the event loop."""
        if self._runner is not None:
            return await self._runner(fn, *args)
        from gateway.store import run_store

        return await run_store(fn, *args)

    @staticmethod
    def _count_action(action: str, outcome: str) -> None:
        _metrics.ACTIONS.labels(action, outcome).inc()


_E = TypeVar("_E", bound=BaseException)
T = TypeVar("T")


def _first(group: BaseExceptionGroup, kind: type[_E]) -> _E:
    for exc in group.exceptions:
        if isinstance(exc, kind):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            return _first(exc, kind)
    raise AssertionError(f"no {kind.__name__} in the group")


def _first_close(group: BaseExceptionGroup) -> CloseConnection:
    return _first(group, CloseConnection)


def _transport_closed(exc: TransportClosed) -> CloseConnection:
    """How a connection ends when its transport does: with the code the transport
    asks for (a protocol violation or an oversized frame), or as the peer left."""
    if exc.close_code is not None:
        return CloseConnection(exc.close_code, str(exc)[:120], flush=False)
    return CloseConnection(CloseCode.GOING_AWAY, "peer gone", flush=False)
