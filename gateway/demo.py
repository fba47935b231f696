"""`cutover demo`: a node on a fresh SQLite file with a small seeded world.

It prints the URL of the demo page, ready-to-paste tokens for the demo users
and how to mint more, then serves until interrupted. Demo mode is the only
mode that starts without a configured secret: it makes one and keeps it in
`var/cutover-demo.secret`, so `cutover token USER --demo` signs tokens the
node accepts (and tokens outlive a restart of the demo).

The demo serves the demo page (`/demo`), compares every poll of the SDK with
push (parity sample rate 1) and, unless `--flags` says otherwise, runs the
rollout in `var/cutover-demo-rollout.toml`: chat, notifications, events and
presence LIVE, follow requests in SHADOW, polling every 10 s. Edit that file
while the demo runs to move a domain; the node reloads it.
"""

from __future__ import annotations

import datetime as dt
import secrets
import sys
from pathlib import Path

import attrs
import trio

from gateway.auth import mint_token
from gateway.config import ConfigError, Settings
from gateway.domain import Domain, Viewer
from gateway.events import iso, utcnow
from gateway.store import open_store

__all__ = ["DEMO_USERS", "banner", "demo_secret", "prepare", "run_demo", "seed"]

DEMO_USERS = {
    "alice": "Alice Archer",
    "bob": "Bob Baker",
    "carol": "Carol Chen",
    "dave": "Dave Diaz",
}
DEMO_STORE = "sqlite:///var/cutover-demo.db"
DEMO_SECRET_FILE = Path("var/cutover-demo.secret")
DEMO_ROLLOUT_FILE = Path("var/cutover-demo-rollout.toml")
DEMO_ROLLOUT = """\
# The demo's rollout (cutover demo wrote it; edit it while the demo runs).
[defaults]
poll_interval_ms = 10000

[domains.chat]
stage = "LIVE"

[domains.notification]
stage = "LIVE"

[domains.event]
stage = "LIVE"

[domains.presence]
stage = "LIVE"

[domains.follow]
stage = "SHADOW"

[domains.organization]
stage = "SHADOW"

[domains.activity]
stage = "SHADOW"
"""


def demo_secret(*, create: bool = False) -> str:
    """The demo's JWT secret (`var/cutover-demo.secret`); made when `create` and missing."""
    if DEMO_SECRET_FILE.is_file():
        secret = DEMO_SECRET_FILE.read_text().strip()
        if secret:
            return secret
    if not create:
        raise ConfigError(
            f"no demo secret in {DEMO_SECRET_FILE} (run `cutover demo` in this directory first)"
        )
    secret = secrets.token_urlsafe(24)
    DEMO_SECRET_FILE.parent.mkdir(parents=True, exist_ok=True)
    DEMO_SECRET_FILE.touch(mode=0o600)
    DEMO_SECRET_FILE.write_text(secret + "\n")
    return secret


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
    domain.set_rsvp(alice, party["id"], "GOING")
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


def prepare(settings: Settings) -> None:
    """The demo's defaults for whatever the command line left unset."""
    defaults = attrs.fields(Settings)
    if settings.store == defaults.store.default:
        settings.store = DEMO_STORE
    if not settings.jwt_secret:
        settings.jwt_secret = demo_secret(create=True)
    if settings.flags is None:
        DEMO_ROLLOUT_FILE.parent.mkdir(parents=True, exist_ok=True)
        if not DEMO_ROLLOUT_FILE.exists():
            DEMO_ROLLOUT_FILE.write_text(DEMO_ROLLOUT)
        settings.flags = str(DEMO_ROLLOUT_FILE)
    if settings.parity_sample_rate == defaults.parity_sample_rate.default:
        settings.parity_sample_rate = 1.0
    settings.demo_page = True


def banner(settings: Settings, ids: dict[str, str]) -> str:
    """What `cutover demo` prints: where to look, how to get in, how to mint more tokens."""
    host = settings.bind
    lines = [
        f"\nCutover demo serving on http://{host}  (store {settings.store})\n",
        f"  Demo page:  http://{host}/demo?user=alice   (open bob in another window)",
        f"  GraphQL:    POST http://{host}/graphql  (Authorization: Bearer <token>)",
        f"  Tickets:    POST http://{host}/realtime/tickets, then ws://{host}/ws?ticket=<ticket>",
        f"  Browser SDK: http://{host}/client/cutover.js",
        f"  Contract:   http://{host}/contracts/schema.json",
        f"  Rollout:    {settings.flags} (edit it to move a domain)",
        f"  Seeded ids: {ids}\n",
    ]
    assert settings.jwt_secret is not None  # prepare() set one
    for uid, name in DEMO_USERS.items():
        token = mint_token(settings.jwt_secret, uid, ttl_s=86400, name=name)
        lines.append(f"  token {uid:<6} {token}")
    admin_token = mint_token(settings.jwt_secret, "ops", admin=True, ttl_s=86400)
    lines.append(f"  token admin  {admin_token}")
    lines.append(
        f"\n  More tokens: cutover token USER --demo   (the secret is in {DEMO_SECRET_FILE})"
    )
    lines.append(
        f"  Try:  ALICE=$(cutover token alice --demo); curl -s http://{host}/graphql "
        "-H \"Authorization: Bearer $ALICE\" -H 'Content-Type: application/json' "
        '-d \'{"query":"{ unreadNotificationCount chatUnreadCount }"}\'\n'
    )
    return "\n".join(lines)


def run_demo(settings: Settings) -> int:
    from gateway.server import serve

    prepare(settings)
    path = Path(settings.store.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    store = open_store(settings.store)
    try:
        ids = seed(Domain(store))
    finally:
        store.close()

    print(banner(settings, ids), file=sys.stdout, flush=True)
    trio.run(serve, settings)
    return 0
