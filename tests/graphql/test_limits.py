"""The cost limits of one GraphQL request, without HTTP: the validation rules, the
estimate, the parse cache's bound, the time limit, and each user's fair share."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from graphql import TypeInfo, get_introspection_query, parse, validate
from graphql.validation import ValidationContext

from gateway.domain import Domain, Viewer
from gateway.errors import RateLimited
from gateway.graphql import DocumentCache, FairShare, PollingExecutor, QueryLimits, RequestContext
from gateway.graphql.limits import (
    MAX_PAGE,
    SCHEMA_COST,
    UNPAGED_LIST_SIZE,
    MaxAliasesRule,
    MaxCostRule,
    MaxDepthRule,
    MaxRepeatsRule,
    estimate_cost,
    operation_depth,
)
from gateway.graphql.schema import polling_schema
from gateway.store import open_store
from ops.bench._common import POLL_QUERY
from parity.state import state_query

SCHEMA = polling_schema()


def _refusals(query: str, rule, limit: int) -> list[dict]:
    errors = validate(SCHEMA, parse(query), [rule.bound(limit)])
    return [error.formatted for error in errors]


def _context(query: str) -> tuple[ValidationContext, list]:
    document = parse(query)
    context = ValidationContext(SCHEMA, document, TypeInfo(SCHEMA), lambda _error: None)
    operations = [d for d in document.definitions if d.kind == "operation_definition"]
    return context, operations


def cost(query: str) -> int:
    context, operations = _context(query)
    return max(estimate_cost(SCHEMA, context, operation) for operation in operations)


def depth(query: str) -> int:
    context, operations = _context(query)
    return max(operation_depth(context, operation) for operation in operations)


# -- what clients send stays well inside the limits ----------------------------------

EVERYDAY = {
    "parity state, 12 events": state_query(
        ["notification", "chat", "follow", "event"], [f"ev{i}" for i in range(12)]
    )[0],
    "bench poll": POLL_QUERY,
    "introspection": get_introspection_query(descriptions=True, input_value_deprecation=True),
    "chat screen": (
        "{ chatUnreadCount conversations { id participantIds unreadCount lastReadMessageId "
        "updatedAt lastMessage { id body senderId } } }"
    ),
    "snapshot": (
        "{ realtimeCursor { epoch seq } realtimeConfig { websocketUrl domains { domain stage "
        "pollIntervalMs } } unreadNotificationCount notifications { items { id kind text data "
        "createdAt readAt } nextCursor unreadCount } followRequests { id status } "
        "myUpcomingRsvps { eventId status event { id title rsvpCounts { going interested } } } }"
    ),
}


@pytest.mark.parametrize("name", sorted(EVERYDAY))
def test_everyday_queries_are_well_inside_the_limits(name):
    query = EVERYDAY[name]
    limits = QueryLimits()
    assert not validate(SCHEMA, parse(query), limits.rules())
    assert depth(query) <= limits.max_depth // 2
    assert cost(query) <= limits.max_cost // 2
    assert len(query.encode()) <= limits.max_query_bytes // 8
    print(f"{name}: depth {depth(query)}, cost {cost(query)}, {len(query)} bytes")


# -- depth ----------------------------------------------------------------------------


def test_depth_counts_fields_through_fragments():
    query = """
    { ...Top }
    fragment Top on Query { setRsvpLike: myUpcomingRsvps { event { ...Counts } } }
    fragment Counts on Event { rsvpCounts { going } }
    """
    assert depth(query) == 4
    assert not _refusals(query, MaxDepthRule, 4)
    [error] = _refusals(query, MaxDepthRule, 3)
    assert error["extensions"] == {
        "code": "BAD_REQUEST",
        "limit": {"name": "depth", "max": 3, "value": 4},
    }
    assert error["message"] == "the query's depth is at least 4, over the limit of 3"


def test_a_depth_bomb_is_refused_without_walking_all_of_it():
    query = "{ me " + "{ id " * 150 + "}" * 150 + " }"
    [error] = _refusals(query, MaxDepthRule, 12)
    assert error["extensions"]["limit"]["name"] == "depth"
    assert "at least 13" in error["message"]


def test_introspection_counts_one_level_and_cycles_do_not_hang():
    assert depth(get_introspection_query()) == 1
    cyclic = "{ ...A } fragment A on Query { me { id } ...B } fragment B on Query { ...A }"
    assert depth(cyclic) == 2


# -- aliases --------------------------------------------------------------------------


def test_aliases_are_counted_over_the_document():
    query = "{ " + " ".join(f"a{i}: chatUnreadCount" for i in range(51)) + " }"
    [error] = _refusals(query, MaxAliasesRule, 50)
    assert error["extensions"]["limit"] == {"name": "aliases", "max": 50, "value": 51}
    assert "51" in error["message"] and "50" in error["message"]
    assert not _refusals(query, MaxAliasesRule, 51)


# -- cost -----------------------------------------------------------------------------


def test_cost_multiplies_lists_by_their_page_size():
    assert cost("{ chatUnreadCount }") == 1
    assert cost("{ me { id name } }") == 3
    # conversations(first: 50) by default: 1 + 50 x (id + lastMessage { id })
    assert cost("{ conversations { id lastMessage { id } } }") == 1 + 50 * 3
    assert cost("{ conversations(first: 7) { id } }") == 1 + 7
    assert cost("{ conversations(first: 100000) { id } }") == 1 + MAX_PAGE
    assert cost("{ conversations(first: 0) { id } }") == 1 + 1
    assert cost('{ messages(conversationId: "c", last: 3) { id } }') == 1 + 3


def test_a_page_argument_on_an_object_sizes_the_lists_inside_it():
    # notifications(first: 20) returns one page; its items are the 20.
    assert cost("{ notifications { items { id } nextCursor } }") == 1 + (1 + 20) + 1
    assert cost("{ notifications(first: 5) { items { id kind } } }") == 1 + 1 + 5 * 2


def test_a_page_size_from_a_variable_counts_its_default_or_the_maximum():
    assert cost("query($n: Int = 10) { conversations(first: $n) { id } }") == 1 + 10
    assert cost("query($n: Int) { conversations(first: $n) { id } }") == 1 + MAX_PAGE


def test_unpaged_lists_and_introspection():
    assert cost("{ followRequests { id } }") == 1 + UNPAGED_LIST_SIZE
    intro = "{ __schema { types { name fields { name } } } }"
    assert cost(intro) == 1 + SCHEMA_COST + (1 + (1 + (1 + 1)))
    assert cost('{ __type(name: "Query") { fields { name } } }') == 1 + 1 + 1


def test_fragments_are_costed_where_they_are_spread():
    query = """
    { a: conversations(first: 10) { ...C } b: conversations(first: 2) { ...C } }
    fragment C on Conversation { id lastMessage { id body } }
    """
    assert cost(query) == (1 + 10 * 4) + (1 + 2 * 4)


def test_the_cost_rule_names_the_estimate_and_the_limit():
    query = "{ " + " ".join(f"a{i}: conversations(first: 200) {{ id }}" for i in range(30)) + " }"
    [error] = _refusals(query, MaxCostRule, 5_000)
    assert error["extensions"]["limit"]["name"] == "cost"
    assert error["extensions"]["limit"]["max"] == 5_000
    assert error["extensions"]["limit"]["value"] > 5_000
    assert "estimated cost is at least" in error["message"]


def test_a_fragment_bomb_is_costed_without_expanding_it():
    # Each fragment spreads the next twice: 2^40 expansions if walked naively.
    parts = ["{ ...F0 }"]
    for i in range(40):
        parts.append(f"fragment F{i} on Query {{ me {{ id }} ...F{i + 1} ...F{i + 1} }}")
    parts.append("fragment F40 on Query { me { id } }")
    query = " ".join(parts)
    assert cost(query) > 2**40  # an estimate counts every expansion, in linear time
    [error] = _refusals(query, MaxCostRule, 5_000)
    assert error["extensions"]["limit"]["name"] == "cost"


# -- repeated fields ------------------------------------------------------------------


def test_a_field_repeated_at_one_place_is_refused_fragments_merged():
    flat = "{ me { " + "id " * 21 + "} }"
    [error] = _refusals(flat, MaxRepeatsRule, 20)
    assert error["extensions"]["limit"]["name"] == "repeats"
    assert not _refusals("{ me { " + "id " * 20 + "} }", MaxRepeatsRule, 20)
    via_fragments = (
        "{ "
        + " ".join(f"...F{i}" for i in range(25))
        + " } "
        + " ".join(f"fragment F{i} on Query {{ me {{ id }} }}" for i in range(25))
    )
    assert _refusals(via_fragments, MaxRepeatsRule, 20)
    # Same-named fields merge, and so do their selections: 5 x 5 ids under one `me`.
    nested = "{ " + " ".join("me { " + "id " * 5 + "}" for _ in range(5)) + " }"
    [error] = _refusals(nested, MaxRepeatsRule, 20)
    assert error["extensions"]["limit"]["value"] == 25


# -- the executor ---------------------------------------------------------------------


@pytest.fixture
def domain(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/g.db")
    yield Domain(store)
    store.close()


def ctx(domain, user="alice"):
    return RequestContext(viewer=Viewer(user), domain=domain, realtime_config=lambda _u: {})


def _code(body: dict) -> str:
    return body["errors"][0]["extensions"]["code"]


def test_documents_over_a_limit_are_refused_before_execution(domain):
    executor = PollingExecutor(QueryLimits(max_query_bytes=1_000, max_tokens=100))
    status, body = executor.execute({"query": "{ me { id } }" + " " * 1_000}, ctx(domain))
    assert status == 400 and _code(body) == "BAD_REQUEST"
    assert body["errors"][0]["message"] == (
        "the query's size is 1,013 bytes, over the limit of 1,000 bytes"
    )
    status, body = executor.execute({"query": "{ me { " + "id " * 200 + "} }"}, ctx(domain))
    assert status == 400 and body["errors"][0]["extensions"]["limit"]["name"] == "tokens"
    assert "over the limit of 100" in body["errors"][0]["message"]
    assert "data" not in body


def test_execution_errors_answer_200_with_data_whatever_the_nullability(domain):
    status, body = PollingExecutor().execute(
        {"query": '{ me { id } conversation(id: "nope") { id } }'}, ctx(domain)
    )
    assert status == 200 and body["data"] == {"me": {"id": "alice"}, "conversation": None}
    assert _code(body) == "NOT_FOUND"
    status, body = PollingExecutor().execute(
        {"query": '{ me { id } messages(conversationId: "nope") { id } }'}, ctx(domain)
    )
    assert status == 200 and body["data"] is None and _code(body) == "NOT_FOUND"


@pytest.mark.parametrize(
    ("query", "variables", "path"),
    [
        ("query($n: Int) { conversations(first: $n) { id } }", {"n": "x"}, "variables.n"),
        ("query($p: [ID!]!) { presence(userIds: $p) { userId } }", {}, "variables.p"),
        (
            "query($p: [ID!]!) { presence(userIds: $p) { userId } }",
            {"p": ["a", None]},
            "variables.p[1]",
        ),
        ("query($e: ID!) { event(id: $e) { id } }", {"e": {"x": 1}}, "variables.e"),
    ],
)
def test_bad_variables_are_bad_requests_naming_the_variable(domain, query, variables, path):
    status, body = PollingExecutor().execute({"query": query, "variables": variables}, ctx(domain))
    assert status == 400 and "data" not in body
    assert body["errors"][0]["extensions"] == {"code": "BAD_REQUEST", "path": path}


def test_an_empty_operation_name_means_none(domain):
    body = {"query": "query Me { me { id } }", "operationName": ""}
    assert PollingExecutor().execute(body, ctx(domain)) == (200, {"data": {"me": {"id": "alice"}}})


def test_request_shape_and_operation_errors_are_bad_requests(domain):
    executor = PollingExecutor()
    for body in (
        {"query": 3},
        {"query": "{ me { id } }", "variables": []},
        {"query": "{ me { id } }", "operationName": 7},
        {"query": "query A { me { id } } query B { me { id } }"},
        {"query": "query A { me { id } }", "operationName": "B"},
    ):
        status, answer = executor.execute(body, ctx(domain))
        assert status == 400 and _code(answer) == "BAD_REQUEST", (body, answer)


def test_the_time_limit_ends_the_request_with_an_error_per_remaining_field(domain):
    executor = PollingExecutor(QueryLimits(timeout_s=1e-9))
    status, body = executor.execute(
        {"query": '{ a: event(id: "x") { id } b: event(id: "y") { id } }'}, ctx(domain)
    )
    assert status == 200 and body["data"] == {"a": None, "b": None}
    assert [e["extensions"]["code"] for e in body["errors"]] == ["TIMEOUT", "TIMEOUT"]
    assert "time limit" in body["errors"][0]["message"]
    assert PollingExecutor().execute({"query": "{ me { id } }"}, ctx(domain))[0] == 200


def test_refusals_are_cached_as_plain_errors_and_small_queries_as_documents(domain):
    executor = PollingExecutor(QueryLimits(max_depth=2))
    bomb = "{ me " + "{ id " * 10 + "}" * 10 + " }"
    for _ in range(2):
        assert executor.execute({"query": bomb}, ctx(domain))[0] == 400
    prepared = executor.cache.get(bomb)
    assert prepared is not None and prepared.document is None
    assert all(isinstance(error, dict) for error in prepared.errors)


# -- the parse cache ------------------------------------------------------------------


def test_the_cache_is_bounded_by_query_text_not_entries():
    cache: DocumentCache[int] = DocumentCache(max_bytes=1_000, max_entry_bytes=300)
    for i in range(100):
        cache.put(f"{i:03d}" + "x" * 97, i)
    assert cache.size_bytes <= 1_000 and len(cache) == 10
    assert cache.get("099" + "x" * 97) == 99 and cache.get("000" + "x" * 97) is None
    cache.put("y" * 301, -1)
    assert cache.get("y" * 301) is None  # never kept: above the entry limit


def test_the_executor_keeps_only_small_queries_within_its_budget(domain):
    executor = PollingExecutor(cache_bytes=20_000)
    for i in range(50):
        fields = " ".join(f"a{i}_{j}: chatUnreadCount" for j in range(40))
        assert executor.execute({"query": "{ " + fields + " }"}, ctx(domain))[0] == 200
    assert executor.cache.size_bytes <= 20_000
    big = "{ me { id } } " + "#" * 9_000 + "\n"
    assert executor.execute({"query": big}, ctx(domain))[0] == 200
    assert executor.cache.get(big) is None


# -- the fair share -------------------------------------------------------------------


async def test_one_user_holds_at_most_its_slots_and_others_pass(autojump_clock):
    share = FairShare(per_user=2, max_waiting=1)
    running: list[str] = []
    release = trio.Event()

    async def hold(user: str, name: str) -> None:
        async with share.slot(user):
            running.append(name)
            await release.wait()

    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(hold, "bomber", f"bomb{i}")
        await trio.testing.wait_all_tasks_blocked()
        assert len(running) == 2 and share.in_flight("bomber") == 3
        with pytest.raises(RateLimited):
            async with share.slot("bomber"):
                pass  # pragma: no cover
        async with share.slot("innocent"):
            running.append("innocent")
        assert running[-1] == "innocent"
        release.set()
    assert running[2] == "innocent" and len(running) == 4
    assert len(share) == 0  # no user kept once idle
