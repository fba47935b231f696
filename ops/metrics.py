"""Prometheus metrics of one node, served at `GET /metrics`.

One registry per process (`REGISTRY`), so tests and several apps in one
process do not collide with the default global registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = [
    "ACTIONS",
    "CONNECTIONS_ACTIVE",
    "CONNECTS",
    "DISCONNECTS",
    "EVENTS_DELIVERED",
    "EVENTS_PUBLISHED",
    "PARITY_AUDIT_COMPARISONS",
    "PARITY_AUDIT_SAMPLES",
    "PARITY_BEACONS_REFUSED",
    "PARITY_BEACON_LATENCY",
    "PARITY_BEACON_SAMPLES",
    "POLL_REQUESTS",
    "PUBLISH_TO_DELIVER",
    "REGISTRY",
    "RESUMES",
    "SEND_BUFFER_OVERFLOWS",
    "STALE_CONNECTIONS_CLEANED",
    "render",
]

REGISTRY = CollectorRegistry(auto_describe=True)

CONNECTIONS_ACTIVE = Gauge(
    "cutover_connections_active", "WebSocket connections open on this node", registry=REGISTRY
)
CONNECTS = Counter(
    "cutover_connects", "WebSocket connections accepted", ["auth"], registry=REGISTRY
)
DISCONNECTS = Counter(
    "cutover_disconnects",
    "WebSocket connections closed, by close code",
    ["code"],
    registry=REGISTRY,
)
RESUMES = Counter(
    "cutover_resumes", "session.resume requests by outcome", ["outcome"], registry=REGISTRY
)
EVENTS_PUBLISHED = Counter(
    "cutover_events_published",
    "Events handed to the backplane, by type",
    ["type"],
    registry=REGISTRY,
)
EVENTS_DELIVERED = Counter(
    "cutover_events_delivered",
    "Envelopes queued to local connections, by class",
    ["cls"],
    registry=REGISTRY,
)
PUBLISH_TO_DELIVER = Histogram(
    "cutover_publish_to_deliver_seconds",
    "From the commit of a durable event to its hand-over to the local connections of its user",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
SEND_BUFFER_OVERFLOWS = Counter(
    "cutover_send_buffer_overflows", "Connections cut off as slow consumers", registry=REGISTRY
)
STALE_CONNECTIONS_CLEANED = Counter(
    "cutover_stale_connections_cleaned",
    "Connection records removed by the stale-connection sweep",
    registry=REGISTRY,
)
ACTIONS = Counter(
    "cutover_actions",
    "Client actions by name and outcome",
    ["action", "outcome"],
    registry=REGISTRY,
)
POLL_REQUESTS = Counter(
    "cutover_poll_requests",
    "GraphQL polling requests by domain of the fields asked for",
    ["domain"],
    registry=REGISTRY,
)

# Parity beacons: browsers comparing their push-reduced state with a poll at the
# same cursor (gateway.beacons).
PARITY_BEACON_SAMPLES = Counter(
    "cutover_parity_beacon_samples",
    "Parity beacon samples accepted, by domain, stage and outcome (match, mismatch, unaligned)",
    ["domain", "stage", "outcome"],
    registry=REGISTRY,
)
PARITY_BEACONS_REFUSED = Counter(
    "cutover_parity_beacons_refused",
    "Parity beacons refused, by reason (bad_request, forbidden, conflict, rate_limited, ...)",
    ["reason"],
    registry=REGISTRY,
)
PARITY_AUDIT_SAMPLES = Counter(
    "cutover_parity_audit_samples",
    "Polling requests the shadow audit sampled, by outcome (audited, queue_full, stale_epoch, "
    "history_expired, failed)",
    ["outcome"],
    registry=REGISTRY,
)
PARITY_AUDIT_COMPARISONS = Counter(
    "cutover_parity_audit_comparisons",
    "Keys the shadow audit compared, by domain and classification (MATCH, DIVERGED, ...)",
    ["domain", "classification"],
    registry=REGISTRY,
)
PARITY_BEACON_LATENCY = Histogram(
    "cutover_parity_beacon_latency_seconds",
    "Update-visible latency reported by browsers, from a change's commit to when each path showed it",
    ["domain", "path"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)


def render() -> bytes:
    """The text exposition format of every metric of this process."""
    return generate_latest(REGISTRY)
