"""The PostgreSQL store beyond the shared contract: many nodes on one database,
snapshots, migrations, and what callers see when the database fails.

Several `PostgresStore` instances on one schema stand for several nodes (and,
in one test, several processes); the contract suite in this folder runs
against PostgreSQL as well.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.config import Settings
from gateway.domain import Domain, Viewer
from gateway.errors import Conflict, StoreUnavailable
from gateway.store import migrate_store, open_store
from gateway.store._postgres_schema import MIGRATIONS, SCHEMA_VERSION
from gateway.store.postgres import PostgresStore, migrate_database, pool_size_for_limiters
from tests.store._postgres import (
    admin,
    drop_schemas,
    schema_url,
    server_url,
    shared_schema_url,
    with_schema,
)

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/test"


@pytest.fixture
def url(tmp_path):
    yield schema_url(tmp_path)
    drop_schemas()


@pytest.fixture
def nodes(request):
    """Opens stores on one schema, as separate nodes would; all closed afterwards.
    The schema is the test's `url` when it takes one, else the suite's shared schema
    (migrated once, empty when the test began)."""
    url = request.getfixturevalue("url") if "url" in request.fixturenames else shared_schema_url()
    opened: list[PostgresStore] = []

    def open_node(**kwargs) -> PostgresStore:
        store = PostgresStore(url, **kwargs)
        opened.append(store)
        return store

    yield open_node
    for store in opened:
        store.close()


def _read_stream(store, user):
    events, after = [], 0
    while page := store.events_after(user, after, limit=500):
        events.extend(page)
        after = page[-1].seq
    return events


def _assert_contiguous(store, user, expected, writers):
    events = _read_stream(store, user)
    assert [e.seq for e in events] == list(range(1, expected + 1))
    assert len({e.epoch for e in events}) == 1
    assert len({e.id for e in events}) == expected
    for writer in writers:  # each writer's events appear in the order it wrote them
        ns = [e.payload["n"] for e in events if e.payload["writer"] == writer]
        assert ns == sorted(ns)


# -- many nodes ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("users", [["same"], ["u0", "u1", "u2"]])
def test_seq_is_contiguous_with_writers_on_several_nodes(nodes, users):
    stores = [nodes(pool_size=4) for _ in range(4)]
    threads, per_thread = 12, 60
    barrier = threading.Barrier(threads)

    def writer(index: int) -> list[tuple[str, int]]:
        store = stores[index % len(stores)]
        barrier.wait()
        seqs = []
        for n in range(per_thread):
            user = users[(index + n) % len(users)]
            with store.transaction() as tx:
                event = tx.append_event(user, "t.x.y", {"writer": index, "n": n})
                # A second user in the same transaction: locks taken in either order.
                other = tx.append_event(f"{user}-copy", "t.x.y", {"writer": index, "n": n})
            seqs.append((user, event.seq))
            seqs.append((f"{user}-copy", other.seq))
        return seqs

    with ThreadPoolExecutor(threads) as pool:
        results = [seq for part in pool.map(writer, range(threads)) for seq in part]
    per_user = Counter(who for who, _ in results)
    for user, count in per_user.items():
        assert sorted(seq for who, seq in results if who == user) == list(range(1, count + 1))
        _assert_contiguous(stores[-1], user, count, range(threads))
    assert sum(per_user.values()) == 2 * threads * per_thread


def _process_writer(url: str, writer: int, count: int, start) -> list[int]:
    store = PostgresStore(url, pool_size=2)
    try:
        start.wait()
        seqs = []
        for n in range(count):
            with store.transaction() as tx:
                seqs.append(tx.append_event("shared", "t.x.y", {"writer": writer, "n": n}).seq)
        return seqs
    finally:
        store.close()


@pytest.mark.slow
def test_seq_is_contiguous_with_writers_in_several_processes(url):
    processes, per_process = 3, 150
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        start = manager.Event()
        with context.Pool(processes) as pool:
            pending = [
                pool.apply_async(_process_writer, (url, writer, per_process, start))
                for writer in range(processes)
            ]
            start.set()
            results = [seq for result in pending for seq in result.get(timeout=120)]
    assert sorted(results) == list(range(1, processes * per_process + 1))
    store = PostgresStore(url)
    try:
        _assert_contiguous(store, "shared", processes * per_process, range(processes))
    finally:
        store.close()


@pytest.mark.slow
def test_mutations_on_several_nodes_see_each_others_changes(nodes):
    """Each event's payload is computed from the state its seq follows.

    Eight people, on four nodes at once, each start conversations with Bob
    and write in them. Every `chat.conversation.updated` Bob receives carries
    his unread total, which must equal the messages before it in his stream.
    A mutation that read the total while another, not yet committed, was
    adding a message would repeat a stale total after that message.
    """
    domains = [Domain(nodes(pool_size=3)) for _ in range(4)]
    bob = Viewer("bob")
    senders, rounds = 8, 12
    barrier = threading.Barrier(senders)

    def chat(index: int) -> None:
        domain, person = domains[index % len(domains)], Viewer(f"friend{index}")
        barrier.wait()
        for n in range(rounds):
            conversation = domain.create_conversation(person, ["bob"]).value["id"]
            domain.send_chat_message(person, conversation, f"{index}-{n}")

    with ThreadPoolExecutor(senders) as pool:
        list(pool.map(chat, range(senders)))
    messages = updates = 0
    for event in _read_stream(domains[0].store, "bob"):
        if event.type == "chat.message":
            messages += 1
        elif event.type == "chat.conversation.updated":
            updates += 1
            assert event.payload["totalUnread"] == messages, f"stale total at seq {event.seq}"
    assert messages == senders * rounds and updates == 2 * senders * rounds
    assert domains[1].chat_unread_count(bob) == messages


def test_a_ticket_is_taken_once_across_nodes(nodes):
    stores = [nodes() for _ in range(4)]
    for n in range(20):
        stores[0].put_ticket(f"h{n}", "alice", 1000.0, "{}")

    def take(index: int) -> list[bool]:
        return [stores[index % 4].take_ticket(f"h{n}", 1.0) is not None for n in range(20)]

    with ThreadPoolExecutor(8) as pool:
        taken = list(pool.map(take, range(8)))
    assert [sum(column) for column in zip(*taken, strict=True)] == [1] * 20


def test_peek_keeps_the_ticket_and_a_duplicate_hash_is_a_conflict(nodes):
    first, second = nodes(), nodes()
    first.put_ticket("h", "alice", 1000.0, '{"sub":"alice"}')
    assert second.peek_ticket("h", 999.0) == ("alice", '{"sub":"alice"}')
    assert second.peek_ticket("h", 1000.0) is None
    with pytest.raises(Conflict):
        second.put_ticket("h", "bob", 2000.0, "{}")
    assert first.take_ticket("h", 999.0) == ("alice", '{"sub":"alice"}')


# -- snapshots and transactions ---------------------------------------------------


def test_a_snapshot_is_one_moment_while_other_nodes_write(nodes):
    reader, writer = nodes(), nodes()
    with writer.transaction() as tx:
        tx.insert_notification(
            {"id": "n0", "user_id": "u", "kind": "K", "text": "t", "created_at": "a"}
        )
        tx.append_event("u", "notification.new", {"n": 0})
    with reader.snapshot() as snap:
        assert snap.count_unread_notifications("u") == 1
        with writer.transaction() as tx:  # another node (and thread) commits meanwhile
            tx.insert_notification(
                {"id": "n1", "user_id": "u", "kind": "K", "text": "t", "created_at": "b"}
            )
            tx.append_event("u", "notification.new", {"n": 1})
        assert snap.count_unread_notifications("u") == 1
        assert snap.stream_position("u").seq == 1
        assert [r["id"] for r in snap.list_notifications("u", 10)] == ["n0"]
    with reader.snapshot() as snap:
        assert snap.count_unread_notifications("u") == 2
        assert snap.stream_position("u").seq == 2


def test_transactions_do_not_nest(nodes):
    store = nodes()
    with store.transaction(), pytest.raises(RuntimeError, match="nest"):
        store.stream_position("u")
    with store.snapshot(), pytest.raises(RuntimeError, match="nest"), store.transaction():
        pass
    assert store.stream_position("u").seq == 0  # the thread is free again


def test_the_pool_is_sized_to_the_store_workloads(nodes):
    assert pool_size_for_limiters() == 12  # the "store" (8) and "graphql" (4) limiters
    store = nodes()
    assert store._pool.max_size == pool_size_for_limiters()


# -- migrations ---------------------------------------------------------------------


def test_migrations_are_recorded_and_applied_once(url, nodes):
    first = nodes()
    with admin() as conn:
        schema = first.schema
        rows = conn.execute(f"SELECT version, name FROM {schema}.schema_migrations").fetchall()
    assert rows == [(m.version, m.name) for m in MIGRATIONS]
    assert migrate_database(url) == ([], [m.version for m in MIGRATIONS])
    with first.transaction() as tx:
        tx.append_event("u", "t.x.y", {})
    nodes()  # another node opening the same schema changes nothing
    assert first.stream_position("u").seq == 1


def test_nodes_starting_together_migrate_once(url):
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: migrate_database(url), range(6)))
    applied = [step.version for done, _ in results for step in done]
    assert sorted(applied) == [m.version for m in MIGRATIONS]
    assert all(versions == [m.version for m in MIGRATIONS] for _, versions in results)


@pytest.mark.slow
def test_cutover_store_migrate(url):
    command = [sys.executable, "-m", "gateway.cli", "store", "migrate", "--store", url]
    first = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    steps = "; ".join(f"applied {m.version} ({m.name})" for m in MIGRATIONS)
    assert f"{steps}; schema version {SCHEMA_VERSION}" in first.stdout
    assert "password" not in first.stdout and "search_path" not in first.stdout
    again = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "up to date" in again.stdout
    refused = subprocess.run(
        [*command[:-1], UNREACHABLE], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1
    assert "PostgreSQL at postgresql://postgres@127.0.0.1:1/test is unreachable" in refused.stderr


def test_a_missing_schema_is_named():
    url = with_schema(server_url(), "no_such_schema")
    with pytest.raises(ValueError, match="no_such_schema"):
        migrate_store(url)


# -- URLs and configuration --------------------------------------------------------


def test_open_store_takes_both_url_schemes(url):
    for scheme_url in (url, url.replace("postgresql://", "postgres://", 1)):
        store = open_store(scheme_url)
        try:
            assert isinstance(store, PostgresStore)
            assert store.stream_position("u").seq == 0
        finally:
            store.close()


def test_settings_accept_a_postgresql_store():
    for store in ("postgresql://cutover@db/cutover", "postgres://db/cutover"):
        Settings(store=store, jwt_secret="s").check()


# -- failures ---------------------------------------------------------------------


def test_an_unreachable_database_is_store_unavailable():
    with pytest.raises(StoreUnavailable) as caught:
        open_store(UNREACHABLE)
    assert caught.value.status == 503 and caught.value.code == "UNAVAILABLE"
    assert "127.0.0.1:1/test is unreachable" in caught.value.message


def _terminate(store: PostgresStore) -> int:
    """End the server side of every connection `store` has, as a restart does."""
    store._pool.wait(timeout=10)  # the pool's first connections are all made
    with admin() as conn:
        pids = [
            pid
            for pid, ended in conn.execute(
                "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (f"cutover-{store.schema}",),
            )
            if ended
        ]
        deadline = time.monotonic() + 10
        while conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)
        ).fetchone()[0]:
            assert time.monotonic() < deadline, "terminated backends did not exit"
            time.sleep(0.01)
    return len(pids)


def test_connections_the_server_closed_are_replaced(nodes):
    store = nodes()
    with store.transaction() as tx:
        tx.append_event("u", "t.x.y", {})
    assert _terminate(store) >= 1  # as a database restart does
    assert store.stream_position("u").seq == 1
    with store.transaction() as tx:
        assert tx.append_event("u", "t.x.y", {}).seq == 2


def test_connections_numbered_past_fd_setsize_are_used(nodes):
    """A node with thousands of sockets open still uses (and checks) its connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1200
    if soft < wanted + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, wanted + 200), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(wanted)]
    try:
        store = nodes(pool_size=2)
        store._pool.wait(timeout=10)
        with store.transaction() as tx:
            assert tx.append_event("u", "t.x.y", {}).seq == 1
        assert max(conn.fileno() for conn in store._pool._pool) > 1024
        _terminate(store)
        assert store.stream_position("u").seq == 1
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_connection_lost_inside_a_transaction_is_store_unavailable(nodes):
    store = nodes()
    with pytest.raises(StoreUnavailable), store.transaction() as tx:
        tx.append_event("u", "t.x.y", {"lost": True})
        _terminate(store)
        tx.append_event("u", "t.x.y", {"lost": True})
    assert store.events_after("u", 0) == []
    with store.transaction() as tx:
        assert tx.append_event("u", "t.x.y", {}).seq == 1


def test_a_writer_that_cannot_get_its_turn_is_store_unavailable(nodes, monkeypatch):
    monkeypatch.setattr("gateway.store.postgres.LOCK_TIMEOUT_MS", 300)
    holder, other_node = nodes(), nodes()

    def try_to_write(store):
        with store.transaction() as tx:
            tx.append_event("u", "t.x.y", {})

    with holder.transaction() as tx, ThreadPoolExecutor(2) as pool:
        tx.append_event("u", "t.x.y", {})
        same_node = pool.submit(try_to_write, holder)  # waits on the node's own queue
        elsewhere = pool.submit(try_to_write, other_node)  # waits on the database's lock
        for attempt in (same_node, elsewhere):
            with pytest.raises(StoreUnavailable, match="busy"):
                attempt.result(timeout=10)
    with other_node.transaction() as tx:
        assert tx.append_event("u", "t.x.y", {}).seq == 2


def test_a_closed_store_refuses_calls(nodes):
    store = nodes()
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.stream_position("u")


def test_a_broken_uniqueness_rule_is_a_conflict_and_rolls_back(nodes):
    store = nodes()
    with pytest.raises(Conflict), store.transaction() as tx:
        tx.insert_gathering(
            {"id": "g", "title": "G", "host_id": "h", "starts_at": "s", "created_at": "c"}
        )
        tx.insert_gathering(
            {"id": "g", "title": "G", "host_id": "h", "starts_at": "s", "created_at": "c"}
        )
    with store.snapshot() as tx:
        assert tx.get_gathering("g") is None
