"""Real traffic for the shadow audit: the harness's driver making changes over both
paths (with its own sockets open, as the app's push clients), and legacy clients
polling the way an app does. No harness observer runs: what the audit judges is
only what these clients asked for and what the nodes sent them."""

from __future__ import annotations

import random

import attrs
import httpx
import trio

from gateway.auth import mint_token
from gateway.client import GraphQL, GraphQLFailed, websocket_url
from parity.driver import Driver, DriverStats, setup

# What a legacy app polls: badges, the conversation list, requests, an event it
# shows, the feed; another screen polls an organization.
HOME = """query Home($e: ID!) {
  unreadNotificationCount
  chatUnreadCount
  conversations(first: 20) { id unreadCount lastReadMessageId lastMessage { id } }
  followRequests { id }
  event(id: $e) { id rsvpCounts { going interested } }
  feed(first: 20) { id authorId createdAt }
}"""
ORG = """query Org($o: ID!) {
  organization(id: $o) { viewerRole }
  news: announcements(orgId: $o, first: 3) { id title }
}"""


@attrs.define
class Traffic:
    polls: int = 0
    failed_polls: int = 0
    driver: DriverStats = attrs.Factory(DriverStats)


async def drive_and_poll(
    urls: list[str],
    secret: str,
    *,
    seconds: float,
    users: int = 6,
    seed: int = 7,
    poll_interval: float = 0.25,
    prefix: str = "audit",
) -> Traffic:
    """Changes over both paths and legacy polls for `seconds`, spread over the nodes."""
    names = [f"{prefix}-{seed}-u{i}" for i in range(users)]
    tokens = {u: mint_token(secret, u, ttl_s=3600) for u in names}
    admin = mint_token(secret, f"{prefix}-{seed}-admin", admin=True)
    traffic = Traffic()
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:
        nodes = [GraphQL(client, url) for url in urls]
        everywhere = GraphQL(client, urls)
        scenario = await setup(everywhere, tokens, names)
        ws_urls = [websocket_url(u) for u in urls]
        driver = Driver(
            everywhere, ws_urls, tokens, names, scenario, seed=seed, admin_token=admin, rate=12.0
        )
        traffic.driver = driver.stats

        async def legacy_client(i: int, user: str) -> None:
            rng = random.Random(seed * 1000 + i)
            gql = nodes[i % len(nodes)]
            event = scenario.events_of(user)[0]
            orgs = scenario.orgs_of(user)
            await trio.sleep(rng.random() * poll_interval)
            while True:
                try:
                    await gql.query(HOME, {"e": event}, token=tokens[user])
                    if orgs and rng.random() < 0.5:
                        await gql.query(ORG, {"o": rng.choice(orgs)}, token=tokens[user])
                    traffic.polls += 1
                except GraphQLFailed:
                    traffic.failed_polls += 1
                await trio.sleep(poll_interval)

        with trio.move_on_after(seconds):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(driver.drive)
                for i, user in enumerate(names):
                    nursery.start_soon(legacy_client, i, user)
    return traffic
