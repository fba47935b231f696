"""`cutover demo`: a node on a fresh SQLite file with a small seeded world.

It prints the URL and ready-to-paste tokens for the demo users, then serves
until interrupted. Demo mode is the only mode that starts without a
configured secret: it makes one for this run.
"""

from __future__ import annotations

import datetime as dt
import secrets
import sys
from pathlib import Path

import attrs
import trio

from gateway.auth import mint_token
from gateway.config import Settings
from gateway.domain import Domain, Viewer
from gateway.events import iso, utcnow
from gateway.store import open_store

__all__ = ["DEMO_USERS", "run_demo", "seed"]

DEMO_USERS = {
    "alice": "Alice Archer",
    "bob": "Bob Baker",
    "carol": "Carol Chen",
    "dave": "Dave Diaz",
}
DEMO_STORE = "sqlite:///var/cutover-demo.db"


def seed(domain: Domain) -> dict[str, str]:
    """Fill an empty store with conversations, notifications, follows, an event and an org."""
    users = {uid: Viewer(uid, name=name) for uid, name in DEMO_USERS.items()}
    admin = Viewer("ops", scopes=frozenset({"admin"}), name="Operator")
    alice, bob, carol, dave = (users[uid] for uid in DEMO_USERS)
    for viewer in users.values():
        domain.ensure_user(viewer.user_id, viewer.name)

    pair = domain.create_conversation(alice, ["bob"]).value
    group = domain.create_conversation(carol, ["alice", "bob"]).value
    domain.send_chat_message(alice, pair["id"], "Are we still on for Friday?", "demo-1")
    domain.send_chat_message(bob, pair["id"], "Yes! I'll bring snacks.", "demo-2")
    domain.send_chat_message(carol, group["id"], "Planning thread for the launch party", "demo-3")
    domain.mark_conversation_read(alice, pair["id"])

    request = domain.request_follow(carol, "alice").value
    domain.request_follow(dave, "alice")
    accepted = domain.request_follow(alice, "bob").value
    domain.respond_follow_request(bob, accepted["id"], True)
    domain.create_notification(admin, "alice", "WELCOME", "Welcome to the Cutover demo")

    starts = iso(utcnow() + dt.timedelta(days=7))
    party = domain.create_event(alice, "Launch party", starts).value
    domain.set_rsvp(bob, party["id"], "GOING")
    domain.set_rsvp(carol, party["id"], "INTERESTED")
    domain.set_event_saved(dave, party["id"], True)

    org = domain.create_organization(alice, "Cutover Club").value
    domain.set_member_role(alice, org["id"], "bob", "ADMIN")
    domain.set_member_role(alice, org["id"], "carol", "MEMBER")
    domain.post_announcement(bob, org["id"], "Welcome", "The club is live.")
    domain.post_feed_item(bob, "Shipping push today")
    return {
        "conversation": pair["id"],
        "groupConversation": group["id"],
        "followRequest": request["id"],
        "event": party["id"],
        "organization": org["id"],
    }


def run_demo(settings: Settings) -> int:
    from gateway.server import serve

    if settings.store == attrs.fields(Settings).store.default:
        settings.store = DEMO_STORE
    if not settings.jwt_secret:
        settings.jwt_secret = secrets.token_urlsafe(24)
    path = Path(settings.store.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    store = open_store(settings.store)
    try:
        ids = seed(Domain(store))
    finally:
        store.close()

    host = settings.bind
    out = sys.stdout
    print(f"\nCutover demo serving on http://{host}  (store {settings.store})\n", file=out)
    print(f"  GraphQL:    POST http://{host}/graphql", file=out)
    print(f"  WebSocket:  ws://{host}/ws?token=<token>", file=out)
    print(f"  Contract:   http://{host}/contracts/schema.json", file=out)
    print(f"  Seeded ids: {ids}\n", file=out)
    for uid, name in DEMO_USERS.items():
        token = mint_token(settings.jwt_secret, uid, ttl_s=86400, name=name)
        print(f"  token {uid:<6} {token}", file=out)
    admin_token = mint_token(settings.jwt_secret, "ops", admin=True, ttl_s=86400)
    print(f"  token admin  {admin_token}", file=out)
    print(
        f"\n  Try:  curl -s http://{host}/graphql -H 'Authorization: Bearer <alice token>' "
        "-H 'Content-Type: application/json' "
        '-d \'{"query":"{ unreadNotificationCount chatUnreadCount }"}\'\n',
        file=out,
        flush=True,
    )
    trio.run(serve, settings)
    return 0
