"""The WebSocket push path's core, free of socket code (PROTOCOL.md section 2).

`Connection` runs one session over a `Transport`; `Hub` is the node-local
registry and fan-out; `UserStream` keeps each connection's durable events in
`seq` order; `SendBuffer` applies backpressure; `Backplane` carries events
between nodes. The Quart adapter beside these modules binds them to sockets.
"""

from gateway.ws.backplane import Backplane, LocalBackplane
from gateway.ws.connection import CloseConnection, Connection, WsSettings
from gateway.ws.hub import Hub, HubMember
from gateway.ws.ratelimit import AbuseDetector, TokenBucket
from gateway.ws.sendbuffer import SendBuffer, SendBufferStats, SlowConsumer
from gateway.ws.stream import UserStream
from gateway.ws.transport import MemoryClient, MemoryTransport, Transport, TransportClosed

__all__ = [
    "AbuseDetector",
    "Backplane",
    "CloseConnection",
    "Connection",
    "Hub",
    "HubMember",
    "LocalBackplane",
    "MemoryClient",
    "MemoryTransport",
    "SendBuffer",
    "SendBufferStats",
    "SlowConsumer",
    "TokenBucket",
    "Transport",
    "TransportClosed",
    "UserStream",
    "WsSettings",
]
