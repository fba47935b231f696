"""`gateway.client.scrape_metrics` and `metric_total`: what `cutover ops status` and the
audit benchmark read from a node's `/metrics`."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from gateway.client import metric_total, scrape_metrics


def node(body: bytes, status: int = 200) -> httpx.AsyncClient:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/metrics"
        return httpx.Response(status, content=body)

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


async def test_samples_are_summed_by_name_and_labels():
    registry = CollectorRegistry()
    samples = Counter("cutover_audit_samples", "by outcome", ["outcome"], registry=registry)
    samples.labels("audited").inc(3)
    samples.labels("queue_full").inc(2)
    Gauge("cutover_connections_active", "open", registry=registry).set(7)
    async with node(generate_latest(registry)) as http:
        scraped = await scrape_metrics(http, "http://node/")
    assert metric_total(scraped, "cutover_audit_samples_total") == 5
    assert metric_total(scraped, "cutover_audit_samples_total", outcome="audited") == 3
    assert metric_total(scraped, "cutover_audit_samples_total", outcome="failed") == 0
    assert metric_total(scraped, "cutover_connections_active") == 7
    assert metric_total(scraped, "cutover_absent_total") == 0
    created = [name for name, _, _ in scraped if name.endswith("_created")]
    assert created == ["cutover_audit_samples_created"] * 2  # never in a `_total`


async def test_a_node_that_does_not_serve_metrics_is_an_error():
    async with node(b"not found", status=404) as http:
        with pytest.raises(httpx.HTTPStatusError):
            await scrape_metrics(http, "http://node")
