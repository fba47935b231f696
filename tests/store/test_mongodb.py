"""The MongoDB store beyond the shared contract, without a MongoDB server.

Two doubles, and what each can show:

- mongomock, as the contract suite uses it (`transactions=False`): indexes,
  connection records, payloads, error mapping, refusals;
- `ReplicaSetDouble`: mongomock data behind a client that answers like a
  replica set and hands out scripted sessions, so the transaction wrapper's
  own path runs (`transactions=True`): which options a transaction starts
  with, that every operation inside carries its session, commit, abort,
  retries. It records every query, which also shows that each one has an
  index to use. What a server does with a session (isolation, rollback,
  conflicts) is not shown here; the contract suite shows it when
  `CUTOVER_TEST_MONGODB_URI` names a replica set.
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from types import SimpleNamespace
from typing import Any

import attrs
import mongomock
import pytest
from pymongo.errors import (
    AutoReconnect,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from gateway.config import Settings
from gateway.errors import Conflict, StoreUnavailable
from gateway.store import Store, Tx, open_store
from gateway.store import mongo as mongo_module
from gateway.store._mongo_schema import INDEXES
from gateway.store.mongo import MongoStore, MongoTx, is_transient, map_driver_error

NOW = dt.datetime(2026, 2, 17, tzinfo=dt.UTC)


def _clock() -> dt.datetime:
    return NOW


def _conflict() -> OperationFailure:
    return OperationFailure(
        "WriteConflict", code=112, details={"errorLabels": ["TransientTransactionError"]}
    )


def _unknown_commit() -> PyMongoError:
    return PyMongoError("connection closed", error_labels=["UnknownTransactionCommitResult"])


@attrs.define
class Query:
    collection: str
    operation: str
    args: tuple
    kwargs: dict
    session: Any


class ScriptedSession:
    """A session that logs what the store asks of it; commits fail as scripted."""

    def __init__(self, commit_errors: list[PyMongoError]) -> None:
        self.log: list[Any] = []
        self.in_transaction = False
        self._commit_errors = commit_errors

    def __enter__(self) -> ScriptedSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.log.append("end")

    def start_transaction(self, **options: Any) -> None:
        self.in_transaction = True
        self.log.append(("start", options))

    def commit_transaction(self) -> None:
        self.log.append("commit")
        if self._commit_errors:
            raise self._commit_errors.pop(0)
        self.in_transaction = False

    def abort_transaction(self) -> None:
        self.log.append("abort")
        self.in_transaction = False


class _Collection:
    def __init__(self, client: ReplicaSetDouble, collection: Any) -> None:
        self._client = client
        self._collection = collection

    def __getattr__(self, operation: str) -> Any:
        method = getattr(self._collection, operation)

        def call(*args: Any, session: Any = None, **kwargs: Any) -> Any:
            self._client.queries.append(
                Query(self._collection.name, operation, args, kwargs, session)
            )
            return method(*args, **kwargs)

        return call


class _Database:
    def __init__(self, client: ReplicaSetDouble, database: Any) -> None:
        self._client = client
        self._database = database

    def __getitem__(self, name: str) -> _Collection:
        return _Collection(self._client, self._database[name])

    def list_collection_names(self) -> list[str]:
        return self._database.list_collection_names()

    def create_collection(self, name: str) -> None:
        self._database.create_collection(name)


class ReplicaSetDouble:
    """mongomock data behind a client that answers `hello` like a replica set member."""

    def __init__(self, hello: dict[str, Any] | None = None) -> None:
        self.mock = mongomock.MongoClient()
        self.hello = {"setName": "rs0"} if hello is None else hello
        self.admin = SimpleNamespace(command=lambda name: self.hello)
        self.queries: list[Query] = []
        self.sessions: list[ScriptedSession] = []
        self.commit_errors: list[PyMongoError] = []

    def __getitem__(self, name: str) -> _Database:
        return _Database(self, self.mock[name])

    def start_session(self, **options: Any) -> ScriptedSession:
        session = ScriptedSession(self.commit_errors)
        self.sessions.append(session)
        return session

    def close(self) -> None:
        pass


@pytest.fixture
def mock_store():
    store = MongoStore(mongomock.MongoClient(), clock=_clock, transactions=False)
    yield store
    store.close()


@pytest.fixture
def double() -> ReplicaSetDouble:
    return ReplicaSetDouble()


@pytest.fixture
def rs_store(double):
    store = MongoStore(double, clock=_clock)
    yield store
    store.close()


@pytest.fixture
def no_sleep(monkeypatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(mongo_module, "_sleep", slept.append)
    return slept


# -- opening ---------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_open_store_opens_mongodb_urls_and_maps_an_unreachable_server():
    url = f"mongodb://127.0.0.1:{_closed_port()}/cutover?serverSelectionTimeoutMS=200"
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as refused:
        open_store(url)
    assert time.monotonic() - started < 5
    assert refused.value.status == 503 and refused.value.code == "UNAVAILABLE"
    assert isinstance(refused.value.__cause__, ServerSelectionTimeoutError)
    with pytest.raises(ValueError, match="MongoDB store URL"):
        open_store("mongodb://")


def test_open_store_hands_srv_urls_to_the_mongodb_store(monkeypatch):
    opened: list[str] = []
    monkeypatch.setattr(MongoStore, "from_url", classmethod(lambda cls, url: opened.append(url)))
    open_store("mongodb+srv://cluster0.example.net/app")
    open_store("mongodb://a,b,c/app?replicaSet=rs0")
    assert opened == [
        "mongodb+srv://cluster0.example.net/app",
        "mongodb://a,b,c/app?replicaSet=rs0",
    ]


def test_a_node_may_be_configured_with_a_mongodb_store():
    for url in ("mongodb://a,b,c/app?replicaSet=rs0", "mongodb+srv://cluster0.example.net/app"):
        Settings(store=url, jwt_secret="s").check()


def test_a_standalone_server_is_refused():
    with pytest.raises(ValueError, match="replica set"):
        MongoStore(ReplicaSetDouble(hello={"isWritablePrimary": True}))
    MongoStore(ReplicaSetDouble(hello={"msg": "isdbgrid"})).close()  # mongos: transactions work


def test_indexes_are_made_at_start_and_again_harmlessly(mock_store):
    client = mock_store._client
    MongoStore(client, transactions=False).close()  # a second node starting on the same data
    db = client["cutover"]
    assert set(INDEXES) <= set(db.list_collection_names())
    for collection, models in INDEXES.items():
        made = db[collection].index_information()
        assert {model.document["name"] for model in models} | {"_id_"} == set(made), collection
        for model in models:
            wanted = {k: v for k, v in model.document.items() if k not in ("key", "name")}
            index = made[model.document["name"]]
            assert {k: index.get(k) for k in wanted} == wanted, (collection, index)
    ttl = db["connections"].index_information()["ttl"]
    assert ttl["expireAfterSeconds"] == 0 and list(ttl["key"]) == [("expire_on", 1)]


# -- every query has an index ---------------------------------------------------------

QUERY_OPERATIONS = {
    "find",
    "count_documents",
    "aggregate",
    "update_one",
    "update_many",
    "replace_one",
    "delete_one",
    "delete_many",
    "find_one_and_update",
    "find_one_and_delete",
}


def _serves(index: dict[str, Any], query: dict[str, Any], sort: list | None) -> bool:
    keys = list(index["key"])
    if keys[0] not in query:
        return False
    for field, condition in index.get("partialFilterExpression", {}).items():
        given = query.get(field)
        if not isinstance(given, dict) or any(given.get(k) != v for k, v in condition.items()):
            return False  # the server uses a partial index only when the query implies its filter
    return all(field in keys for field, _ in sort or [])


def _index_for(q: Query) -> str | None:
    if q.operation == "aggregate":
        query, sort = q.args[0][0]["$match"], None
    else:
        query, sort = q.args[0], q.kwargs.get("sort")
    if "_id" in query and all(field == "_id" for field, _ in sort or []):
        return "_id_"
    for model in INDEXES[q.collection]:
        if _serves(model.document, query, sort):
            return model.document["name"]
    return None


def exercise(store: MongoStore) -> None:
    """Every method of the store and its transactions, at least once."""
    with store.transaction() as tx:
        tx.append_event("a", "t.x.y", {"n": 1})
        tx.stream_position("a")
        tx.remember_idempotency("s", "k", "{}", 1.0)
        tx.recall_idempotency("s", "k", 0.0)
        tx.upsert_user("a", "A")
        tx.get_user("a")
        tx.insert_notification(
            {"id": "n", "user_id": "a", "kind": "K", "text": "t", "created_at": "c"}
        )
        tx.list_notifications("a", 5)
        tx.list_notifications("a", 5, 9)
        tx.count_unread_notifications("a")
        tx.mark_notifications_read("a", ["n"], "r")
        tx.mark_notifications_read("a", None, "r")
        tx.insert_conversation({"id": "c", "created_at": "c", "updated_at": "c"}, ["a", "b"])
        tx.get_conversation("c")
        message = tx.insert_message(
            {"id": "m", "conversation_id": "c", "sender_id": "a", "body": "b", "created_at": "c"}
        )
        tx.touch_conversation("c", "d", "m")
        tx.list_participants("c")
        tx.is_participant("c", "a")
        tx.conversations_of("a", 5)
        tx.share_conversation("a", "b")
        tx.get_message("m")
        tx.find_message_by_client_id("a", "k")
        tx.list_messages("c", 5)
        tx.list_messages("c", 5, message["pos"])
        tx.last_message("c")
        tx.count_messages_after("c", 0, "b")
        tx.put_read_state("c", "a", "m", message["pos"], "r")
        tx.get_read_state("c", "a")
        tx.list_read_states("c")
        tx.insert_delivery("m", "b", "d")
        tx.list_deliveries(["m"])
        tx.remove_participant("c", "b")
        row = {"id": "f", "from_user_id": "a", "to_user_id": "b", "status": "PENDING"}
        tx.insert_follow_request({**row, "created_at": "c", "updated_at": "c"})
        tx.get_follow_request("f")
        tx.find_follow_request("a", "b")
        tx.update_follow_request("f", "ACCEPTED", "d")
        for status in (None, "ACCEPTED"):
            tx.follow_requests_to("b", status)
            tx.follow_requests_from("a", status)
        tx.insert_gathering(
            {"id": "g", "title": "G", "host_id": "a", "starts_at": "s", "created_at": "c"}
        )
        tx.get_gathering("g")
        tx.put_rsvp({"event_id": "g", "user_id": "a", "status": "GOING", "updated_at": "u"})
        tx.put_rsvp({"event_id": "g", "user_id": "a", "status": "GOING", "updated_at": "v"})
        tx.get_rsvp("g", "a")
        tx.count_rsvps("g")
        tx.rsvp_user_ids("g", "GOING", 5)
        tx.rsvps_of("a")
        tx.insert_check_in("g", "a", "t")
        tx.count_check_ins("g")
        tx.set_saved("g", "a", True, "t")
        tx.is_saved("g", "a")
        tx.saved_event_ids("a")
        tx.set_saved("g", "a", False, "t")
        tx.insert_organization({"id": "o", "name": "O", "created_at": "c"})
        tx.get_organization("o")
        tx.put_membership("o", "a", "OWNER", "t")
        tx.put_membership("o", "a", "ADMIN", "u")
        tx.get_membership("o", "a")
        tx.list_memberships("o")
        tx.delete_membership("o", "a")
        tx.insert_announcement(
            {
                "id": "an",
                "org_id": "o",
                "author_id": "a",
                "title": "T",
                "body": "B",
                "created_at": "c",
            }
        )
        tx.list_announcements("o", 5)
        tx.insert_feed_item({"id": "fi", "author_id": "a", "text": "t", "created_at": "c"})
        tx.list_feed_items(["a", "b"], 5)
        tx.put_presence("a", "ONLINE", "t")
        tx.get_presences(["a", "b"])
    with store.snapshot() as tx:
        tx.stream_position("a")
    store.stream_position("a")
    store.stream_position("new")
    store.stream_heads(["a", "new", "none"])
    store.events_after("a", 0)
    store.prune(NOW + dt.timedelta(days=30), max_count=0)
    store.reset_stream("a")
    store.put_ticket("h", "a", 10.0, "{}")
    store.peek_ticket("h", 1.0)
    store.take_ticket("h", 1.0)
    store.put_connection("conn", "a", "node-1", time.time() + 60)
    store.connections_of("a", time.time())
    store.drop_connection("conn")
    store.run_transaction(lambda tx: tx.get_user("a"))
    evidence = {"hour": "h", "domain": "chat", "source": "audit", "stage": "LIVE"}
    store.add_evidence([{**evidence, "counts": {"MATCH": 1}, "first_at": "t", "last_at": "t"}])
    store.evidence_since("h")


def test_every_query_has_an_index_to_use(rs_store, double, monkeypatch):
    called: set[str] = set()
    interface = {MongoTx: Tx.__abstractmethods__, MongoStore: Store.__abstractmethods__}
    for cls, names in interface.items():
        for name in names:
            original = getattr(cls, name)

            def recording(*args, _name=name, _original=original, **kwargs):
                called.add(_name)
                return _original(*args, **kwargs)

            monkeypatch.setattr(cls, name, recording)
    exercise(rs_store)
    assert (Tx.__abstractmethods__ | Store.__abstractmethods__) - called == {"close"}

    queries = [q for q in double.queries if q.operation in QUERY_OPERATIONS]
    assert {q.collection for q in queries} == set(INDEXES)
    unserved = [(q.collection, q.operation, q.args[0]) for q in queries if _index_for(q) is None]
    assert unserved == []


# -- the transaction wrapper on its own path ---------------------------------------------


class Boom(Exception):
    pass


def test_a_transaction_reads_a_snapshot_writes_by_majority_and_commits(rs_store, double):
    before = len(double.queries)
    with rs_store.transaction() as tx:
        event = tx.append_event("alice", "t.x.y", {"n": 1})
        tx.upsert_user("alice", "Alice")
    session = double.sessions[-1]
    (start, options), *rest = session.log
    assert start == "start" and rest == ["commit", "end"]
    assert options["read_concern"].level == "snapshot"
    assert options["write_concern"].document == {"w": "majority"}
    assert options["read_preference"].mode == 0  # primary
    inside = double.queries[before:]
    assert inside and all(q.session is session for q in inside)
    assert event.seq == 1


def test_an_exception_aborts_and_a_snapshot_never_commits(rs_store, double):
    with pytest.raises(Boom), rs_store.transaction() as tx:
        tx.append_event("alice", "t.x.y", {})
        raise Boom
    assert double.sessions[-1].log[1:] == ["abort", "end"]
    with rs_store.snapshot() as tx:
        tx.get_user("alice")
    assert double.sessions[-1].log[1:] == ["abort", "end"]
    with pytest.raises(RuntimeError, match="read-only"), rs_store.snapshot() as tx:
        tx.upsert_user("alice", None)


def test_a_commit_with_an_unknown_outcome_is_committed_again(rs_store, double, no_sleep):
    double.commit_errors.extend([_unknown_commit(), _unknown_commit()])
    with rs_store.transaction() as tx:
        tx.append_event("alice", "t.x.y", {})
    assert double.sessions[-1].log[1:] == ["commit", "commit", "commit", "end"]
    assert len(no_sleep) == 2 and no_sleep[1] > no_sleep[0] / 2


def test_a_conflict_ends_the_block_with_a_transient_store_unavailable(rs_store, double):
    double.commit_errors.append(_conflict())
    with pytest.raises(StoreUnavailable) as ended, rs_store.transaction() as tx:
        tx.append_event("alice", "t.x.y", {})
    assert is_transient(ended.value) and ended.value.status == 503
    assert double.sessions[-1].log[1:] == ["commit", "abort", "end"]


def test_run_transaction_runs_again_after_a_conflict_with_growing_waits(rs_store, double, no_sleep):
    double.commit_errors.extend([_conflict(), _conflict(), _conflict()])
    runs: list[int] = []

    def append(tx: MongoTx) -> int:
        runs.append(1)
        return tx.append_event("alice", "t.x.y", {}).seq

    rs_store.run_transaction(append)
    assert len(runs) == 4 and len(double.sessions) == 4
    assert len(no_sleep) == 3
    assert all(
        mongo_module.FIRST_BACKOFF_S / 2 <= s <= mongo_module.MAX_BACKOFF_S for s in no_sleep
    )
    assert no_sleep[2] > no_sleep[0]  # the windows double: [d/2, d], [d, 2d], [2d, 4d]


def test_run_transaction_gives_up_after_its_budget_and_never_repeats_a_refusal(
    rs_store, double, no_sleep
):
    double.commit_errors.extend([_conflict()] * 5)
    with pytest.raises(StoreUnavailable):
        rs_store.run_transaction(lambda tx: tx.append_event("a", "t.x.y", {}), budget_s=0)
    assert no_sleep == []
    runs: list[int] = []

    def duplicate(tx: MongoTx) -> None:
        runs.append(1)
        tx.put_presence("a", "ONLINE", "t")
        raise Conflict("not a conflict between writers")

    double.commit_errors.clear()
    with pytest.raises(Conflict):
        rs_store.run_transaction(duplicate)
    assert runs == [1]


def test_writers_of_one_process_take_turns_and_readers_do_not_wait(rs_store):
    inside = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def first() -> None:
        with rs_store.transaction():
            order.append("first in")
            inside.set()
            release.wait(10)
            order.append("first out")

    def second() -> None:
        with rs_store.transaction():
            order.append("second in")

    a = threading.Thread(target=first)
    a.start()
    assert inside.wait(10)
    b = threading.Thread(target=second)
    b.start()
    with rs_store.snapshot() as tx:  # a reader goes ahead while a writer holds its turn
        tx.get_user("x")
    b.join(0.2)
    assert order == ["first in"]
    release.set()
    a.join(10)
    b.join(10)
    assert order == ["first in", "first out", "second in"]


# -- mongomock: behaviour both doubles share -----------------------------------------------


def test_transactions_do_not_nest_and_a_closed_store_refuses(mock_store):
    with (
        mock_store.transaction(),
        pytest.raises(RuntimeError, match="nest"),
        mock_store.snapshot(),
    ):
        pass
    with mock_store.transaction() as tx:  # the refusal left nothing behind
        tx.upsert_user("a", None)
    mock_store.close()
    with pytest.raises(RuntimeError, match="closed"):
        mock_store.stream_position("a")


def test_payloads_round_trip_exactly(mock_store):
    payload = {"big": 2**70, "a.b": 1, "$x": [1.5, None, "é"], "nested": {"k": {}}}
    with mock_store.transaction() as tx:
        tx.append_event("alice", "t.x.y", payload)
    (event,) = mock_store.events_after("alice", 0)
    assert event.payload == payload and type(event.payload["$x"][0]) is float


def test_driver_errors_become_gateway_errors():
    assert isinstance(map_driver_error(DuplicateKeyError("E11000")), Conflict)
    for unavailable in (
        AutoReconnect("primary stepped down"),
        ServerSelectionTimeoutError("no primary"),
        _conflict(),
        _unknown_commit(),
    ):
        assert isinstance(map_driver_error(unavailable), StoreUnavailable), unavailable
    refused = map_driver_error(OperationFailure("not authorized on cutover", code=13))
    assert isinstance(refused, StoreUnavailable) and refused.status == 503
    assert "cutover" not in refused.message  # the driver's text stays in the cause
    assert is_transient(_conflict()) and not is_transient(AutoReconnect("x"))


def test_client_message_ids_are_unique_per_sender_and_optional(mock_store):
    def send(message_id: str, sender: str, client_id: str | None = None) -> None:
        with mock_store.transaction() as tx:
            row = {"id": message_id, "conversation_id": "c", "sender_id": sender, "body": "b"}
            tx.insert_message({**row, "created_at": "t", "client_message_id": client_id})

    send("m1", "alice")
    send("m2", "alice")  # without a client id: any number
    send("m3", "alice", "k")
    send("m4", "bob", "k")  # the same client id from someone else
    with pytest.raises(Conflict):
        send("m5", "alice", "k")
    with mock_store.snapshot() as tx:
        assert [m["id"] for m in tx.list_messages("c", 10)] == ["m4", "m3", "m2", "m1"]
        assert tx.find_message_by_client_id("alice", "k")["id"] == "m3"


def test_a_duplicate_ticket_is_a_conflict(mock_store):
    mock_store.put_ticket("h", "alice", 10.0, "{}")
    with pytest.raises(Conflict) as refused:
        mock_store.put_ticket("h", "bob", 10.0, "{}")
    assert isinstance(refused.value.__cause__, DuplicateKeyError)
    assert mock_store.peek_ticket("h", 1.0) == ("alice", "{}")


def test_connection_records_expire_by_their_ttl_index(mock_store):
    now = time.time()
    mock_store.put_connection("c1", "alice", "node-1", now + 60)
    mock_store.put_connection("c2", "alice", "node-2", now + 30)
    mock_store.put_connection("c2", "alice", "node-2", now + 90)  # a heartbeat refreshes it
    mock_store.put_connection("c3", "bob", "node-1", now + 60)
    records = mock_store.connections_of("alice", now)
    assert [(r["id"], r["node_id"]) for r in records] == [("c1", "node-1"), ("c2", "node-2")]
    assert records[1]["expires_at"] == pytest.approx(now + 90, abs=0.001)
    assert [r["id"] for r in mock_store.connections_of("alice", now + 75)] == ["c2"]
    assert mock_store.drop_connection("c1") and not mock_store.drop_connection("c1")
    # Expired: mongomock applies the TTL index when the collection is read, as the
    # server's TTL monitor would within a minute.
    mock_store.put_connection("gone", "carol", "node-1", now - 1)
    collection = mock_store._client["cutover"]["connections"]
    assert collection.count_documents({"_id": "gone"}) == 0
