"""What one GraphQL request may cost, checked before it runs.

A request is refused with `BAD_REQUEST` (HTTP 400), naming the limit and the
value, when its document is too big (`max_query_bytes`, before parsing), has
too many tokens (`max_tokens`, while parsing), or fails one of the four
validation rules below, which run before graphql-core's standard rules (some
of those are quadratic in the number of fields):

- `MaxDepthRule`: fields nested deeper than `max_depth` (fragments expanded;
  an introspection field counts as one level: the standard
  `MaxIntrospectionDepthRule` bounds what is below it);
- `MaxAliasesRule`: more than `max_aliases` aliased fields in the document;
- `MaxCostRule`: an estimated cost above `max_cost`;
- `MaxRepeatsRule`: one field (response name) selected more than
  `max_repeats` times at one place, fragments and same-named fields merged:
  `OverlappingFieldsCanBeMergedRule` compares each pair of them (100 repeats
  of `me { id }` cost 20 ms of validation, 490 cost 500 ms).

The cost estimate is an upper bound of the values a request completes. Every
field costs 1; a field with a selection costs 1 plus its selection's cost,
times the number of items it returns when it is a list. That number is the
field's page argument (`first`, `last`: the literal, or a variable's default,
or the argument's default, at most `MAX_PAGE`, the domain's own clamp); a
page argument on a field returning one object (`notifications` returns a
`NotificationPage`) sizes the lists directly inside it (`items`). Other lists
of objects count `UNPAGED_LIST_SIZE` items. Introspection lists count once
each (`MaxIntrospectionDepthRule`, a standard rule, bounds their nesting) and
`__schema` adds `SCHEMA_COST`, about what a full introspection costs to run.

The rules and the estimate take values and return values: no I/O.
"""

from __future__ import annotations

from typing import Any

import attrs
from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    OperationType,
    ValidationContext,
    ValidationRule,
    VariableNode,
    get_named_type,
    get_nullable_type,
    is_list_type,
    is_object_type,
)
from graphql.language import SKIP
from graphql.type.introspection import SchemaMetaFieldDef, TypeMetaFieldDef

__all__ = [
    "MAX_PAGE",
    "SCHEMA_COST",
    "UNPAGED_LIST_SIZE",
    "MaxAliasesRule",
    "MaxCostRule",
    "MaxDepthRule",
    "MaxRepeatsRule",
    "QueryLimits",
    "estimate_cost",
    "limit_error",
    "operation_depth",
]

MAX_PAGE = 200  # the domain clamps every page size to this
PAGE_ARGUMENTS = ("first", "last")
INTROSPECTION_ROOTS = ("__schema", "__type")
UNPAGED_LIST_SIZE = 20
SCHEMA_COST = 500


@attrs.frozen
class QueryLimits:
    """The limits of one GraphQL request; see the module docstring."""

    max_query_bytes: int = 65_536
    max_tokens: int = 2_000
    max_depth: int = 12
    max_aliases: int = 50
    max_cost: int = 5_000
    max_repeats: int = 20
    timeout_s: float = 5.0

    @classmethod
    def from_settings(cls, settings: Any) -> QueryLimits:
        return cls(
            max_query_bytes=settings.graphql_max_query_bytes,
            max_tokens=settings.graphql_max_tokens,
            max_depth=settings.graphql_max_depth,
            max_aliases=settings.graphql_max_aliases,
            max_cost=settings.graphql_max_cost,
            max_repeats=settings.graphql_max_repeats,
            timeout_s=settings.graphql_timeout_s,
        )

    def rules(self) -> tuple[type[ValidationRule], ...]:
        """The limit rules, bound to these limits."""
        return (
            MaxDepthRule.bound(self.max_depth),
            MaxAliasesRule.bound(self.max_aliases),
            MaxCostRule.bound(self.max_cost),
            MaxRepeatsRule.bound(self.max_repeats),
        )


def limit_error(
    name: str,
    subject: str,
    value: int | None,
    limit: int,
    nodes: Any = None,
    *,
    at_least: bool = False,
    unit: str = "",
) -> GraphQLError:
    """A refusal naming the limit and the value (`extensions.limit` for programs)."""
    if value is None:
        amount = "too large to measure"
    else:
        amount = f"{'at least ' if at_least else ''}{value:,}{unit}"
    return GraphQLError(
        f"{subject} is {amount}, over the limit of {limit:,}{unit}",
        nodes,
        extensions={
            "code": "BAD_REQUEST",
            "limit": {"name": name, "max": limit, "value": value},
        },
    )


class _LimitRule(ValidationRule):
    limit = 0

    @classmethod
    def bound(cls, limit: int) -> type[ValidationRule]:
        """This rule with another limit."""
        return type(cls.__name__, (cls,), {"limit": limit})


# -- depth ---------------------------------------------------------------------


class _Depth:
    """The deepest field nesting of selections, fragments expanded (memoized).

    The walk goes no deeper than `stop_above + 1` levels below where it starts,
    so a depth bomb costs as much as a query at the limit.
    """

    def __init__(self, context: ValidationContext, stop_above: int) -> None:
        self.context = context
        self.stop_above = stop_above
        self.stopped = False
        self.fragments: dict[str, int] = {}  # depth below each fragment, from its start

    def of(self, selections: Any, level: int = 0) -> int:
        """The deepest level reached below `level` (the depth of the enclosing field)."""
        deepest = level
        for node in selections:
            if isinstance(node, FieldNode):
                reached = level + 1
                below = node.selection_set
                descend = below is not None and node.name.value not in INTROSPECTION_ROOTS
                if below is not None and descend and reached <= self.stop_above:
                    reached = self.of(below.selections, reached)
            elif isinstance(node, InlineFragmentNode):
                reached = self.of(node.selection_set.selections, level)
            elif isinstance(node, FragmentSpreadNode):
                reached = level + self.fragment(node.name.value)
            else:  # pragma: no cover - no other selection kinds
                reached = level
            deepest = max(deepest, reached)
            if deepest > self.stop_above:
                self.stopped = True
                break  # already over: the exact figure does not matter
        return deepest

    def fragment(self, name: str) -> int:
        known = self.fragments.get(name)
        if known is not None:
            return known
        self.fragments[name] = 0  # a cycle counts nothing (NoFragmentCyclesRule refuses it)
        fragment = self.context.get_fragment(name)
        depth = self.of(fragment.selection_set.selections) if fragment is not None else 0
        self.fragments[name] = depth
        return depth


def operation_depth(context: ValidationContext, operation: OperationDefinitionNode) -> int:
    """The deepest field nesting of one operation."""
    return _Depth(context, stop_above=1 << 62).of(operation.selection_set.selections)


class MaxDepthRule(_LimitRule):
    """Refuses an operation whose fields nest deeper than `limit`."""

    limit = 12

    def enter_operation_definition(self, node: OperationDefinitionNode, *_args: Any) -> Any:
        walker = _Depth(self.context, self.limit)
        try:
            depth: int | None = walker.of(node.selection_set.selections)
        except RecursionError:
            depth = None
        if depth is None or depth > self.limit:
            self.report_error(
                limit_error(
                    "depth", "the query's depth", depth, self.limit, node, at_least=walker.stopped
                )
            )
        return SKIP


# -- aliases -------------------------------------------------------------------


class MaxAliasesRule(_LimitRule):
    """Refuses a document with more than `limit` aliased fields."""

    limit = 50

    def __init__(self, context: ValidationContext) -> None:
        super().__init__(context)
        self.count = 0
        self.first: FieldNode | None = None

    def enter_field(self, node: FieldNode, *_args: Any) -> None:
        if node.alias is not None:
            self.count += 1
            if self.first is None:
                self.first = node

    def leave_document(self, *_args: Any) -> None:
        if self.count > self.limit:
            self.report_error(
                limit_error(
                    "aliases",
                    "the number of aliases in the query",
                    self.count,
                    self.limit,
                    self.first,
                )
            )


# -- cost ----------------------------------------------------------------------


class _Cost:
    """The estimated cost of selections (see the module docstring), memoized per fragment."""

    def __init__(
        self,
        schema: GraphQLSchema,
        context: ValidationContext,
        operation: OperationDefinitionNode,
        stop_above: int,
    ) -> None:
        self.schema = schema
        self.context = context
        self.stop_above = stop_above
        self.stopped = False
        self.fragments: dict[tuple[str, int | None], int] = {}
        self.variable_defaults: dict[str, int | None] = {
            definition.variable.name.value: (
                int(definition.default_value.value)
                if isinstance(definition.default_value, IntValueNode)
                else None
            )
            for definition in operation.variable_definitions or ()
        }

    def of_operation(self, operation: OperationDefinitionNode) -> int:
        root = {
            OperationType.QUERY: self.schema.query_type,
            OperationType.MUTATION: self.schema.mutation_type,
            OperationType.SUBSCRIPTION: self.schema.subscription_type,
        }.get(operation.operation)
        if root is None or not is_object_type(root):
            return 0  # KnownOperationTypesRule refuses it
        return self.of(operation.selection_set.selections, root, None)

    def of(self, selections: Any, parent: Any, inherited: int | None) -> int:
        total = 0
        for node in selections:
            if isinstance(node, FieldNode):
                total += self.field(node, parent, inherited)
            elif isinstance(node, InlineFragmentNode):
                condition = node.type_condition
                kind = self.schema.get_type(condition.name.value) if condition else parent
                total += self.of(node.selection_set.selections, kind or parent, inherited)
            elif isinstance(node, FragmentSpreadNode):
                total += self.fragment(node.name.value, inherited)
            if total > self.stop_above:
                self.stopped = True
                break  # already over: the exact figure does not matter
        return total

    def fragment(self, name: str, inherited: int | None) -> int:
        key = (name, inherited)
        known = self.fragments.get(key)
        if known is not None:
            return known
        self.fragments[key] = 0  # a cycle counts nothing (NoFragmentCyclesRule refuses it)
        fragment = self.context.get_fragment(name)
        cost = 0
        if fragment is not None:
            kind = self.schema.get_type(fragment.type_condition.name.value)
            cost = self.of(fragment.selection_set.selections, kind, inherited)
        self.fragments[key] = cost
        return cost

    def field(self, node: FieldNode, parent: Any, inherited: int | None) -> int:
        if node.selection_set is None:
            return 1
        definition = self.definition(node.name.value, parent)
        if definition is None:
            return 1  # an unknown field: FieldsOnCorrectTypeRule refuses it
        introspection = parent is None or parent.name.startswith("__")
        child_type = get_named_type(definition.type)
        page = None if introspection else self.page_size(node, definition)
        if is_list_type(get_nullable_type(definition.type)):
            if introspection:
                items = 1
            elif page is not None:
                items = page
            else:
                items = inherited if inherited is not None else UNPAGED_LIST_SIZE
            items = max(items, 1)  # `first: 0` still has its selection checked and planned
            child_inherited = None
        else:
            items = 1
            child_inherited = page
        below = self.of(node.selection_set.selections, child_type, child_inherited)
        extra = SCHEMA_COST if definition is SchemaMetaFieldDef else 0
        return 1 + extra + items * below

    def definition(self, name: str, parent: Any) -> GraphQLField | None:
        if parent is self.schema.query_type:
            if name == "__schema":
                return SchemaMetaFieldDef
            if name == "__type":
                return TypeMetaFieldDef
        fields = getattr(parent, "fields", None)
        return fields.get(name) if fields is not None else None

    def page_size(self, node: FieldNode, definition: GraphQLField) -> int | None:
        """The items a paged field returns at most, or None for a field without paging."""
        names = [name for name in PAGE_ARGUMENTS if name in definition.args]
        if not names:
            return None
        for argument in node.arguments or ():
            if argument.name.value not in names:
                continue
            value = argument.value
            if isinstance(value, IntValueNode):
                return _clamp(int(value.value))
            if isinstance(value, VariableNode):
                default = self.variable_defaults.get(value.name.value)
                return _clamp(default) if default is not None else MAX_PAGE
            return MAX_PAGE
        defaults = [_default_int(definition.args[name]) for name in names]
        given = [value for value in defaults if value is not None]
        return _clamp(max(given)) if given else MAX_PAGE


def _clamp(value: int) -> int:
    return max(0, min(value, MAX_PAGE))


def _default_int(argument: Any) -> int | None:
    """An argument's integer default (graphql-core 3.3 keeps an SDL default as a literal)."""
    default = getattr(argument, "default", None)
    if default is not None:
        literal = getattr(default, "literal", None)
        if isinstance(literal, IntValueNode):
            return int(literal.value)
        value = getattr(default, "value", None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    value = getattr(argument, "default_value", None)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def estimate_cost(
    schema: GraphQLSchema, context: ValidationContext, operation: OperationDefinitionNode
) -> int:
    """The estimated cost of one operation (see the module docstring)."""
    return _Cost(schema, context, operation, 1 << 62).of_operation(operation)


class MaxCostRule(_LimitRule):
    """Refuses an operation whose estimated cost is above `limit`."""

    limit = 5_000

    def enter_operation_definition(self, node: OperationDefinitionNode, *_args: Any) -> Any:
        walker = _Cost(self.context.schema, self.context, node, self.limit)
        try:
            cost: int | None = walker.of_operation(node)
        except RecursionError:
            cost = None
        if cost is None or cost > self.limit:
            self.report_error(
                limit_error(
                    "cost",
                    "the query's estimated cost",
                    cost,
                    self.limit,
                    node,
                    at_least=walker.stopped,
                )
            )
        return SKIP


# -- repeated fields -----------------------------------------------------------


class _Repeats:
    """The most times one response name is selected at one place, fragments merged.

    Fields of the same response name merge, and so do their selections, so the
    count is taken over merged selections: graphql-core's
    `OverlappingFieldsCanBeMergedRule` compares every pair of them.
    """

    def __init__(self, context: ValidationContext, limit: int, budget: int) -> None:
        self.context = context
        self.limit = limit
        self.budget = budget  # selections visited before giving up
        self.worst = 0
        self.worst_node: FieldNode | None = None

    def check(self, selection_sets: list[Any], ancestors: frozenset[str] = frozenset()) -> None:
        groups: dict[str, list[FieldNode]] = {}
        self._collect(selection_sets, groups, set(), ancestors)
        for fields in groups.values():
            if len(fields) > self.worst:
                self.worst, self.worst_node = len(fields), fields[0]
            if self.worst > self.limit:
                return
            below = [field.selection_set for field in fields if field.selection_set]
            if below:
                self.check(below, ancestors | self._fragments_of(selection_sets))
                if self.worst > self.limit:
                    return

    def _collect(
        self,
        selection_sets: list[Any],
        groups: dict[str, list[FieldNode]],
        seen: set[str],
        ancestors: frozenset[str],
    ) -> None:
        for selection_set in selection_sets:
            for node in selection_set.selections:
                self.budget -= 1
                if self.budget < 0:
                    raise _TooMuchWork
                if isinstance(node, FieldNode):
                    name = node.alias.value if node.alias else node.name.value
                    groups.setdefault(name, []).append(node)
                elif isinstance(node, InlineFragmentNode):
                    self._collect([node.selection_set], groups, seen, ancestors)
                elif isinstance(node, FragmentSpreadNode):
                    name = node.name.value
                    if name in seen or name in ancestors:
                        continue  # merged once; a cycle is NoFragmentCyclesRule's
                    seen.add(name)
                    fragment = self.context.get_fragment(name)
                    if fragment is not None:
                        self._collect([fragment.selection_set], groups, seen, ancestors)

    def _fragments_of(self, selection_sets: list[Any]) -> frozenset[str]:
        return frozenset(
            node.name.value
            for selection_set in selection_sets
            for node in selection_set.selections
            if isinstance(node, FragmentSpreadNode)
        )


class _TooMuchWork(Exception):
    pass


class MaxRepeatsRule(_LimitRule):
    """Refuses a field selected more than `limit` times at one place (fragments merged)."""

    limit = 20
    budget = 50_000

    def enter_operation_definition(self, node: OperationDefinitionNode, *_args: Any) -> Any:
        walker = _Repeats(self.context, self.limit, self.budget)
        try:
            walker.check([node.selection_set])
            worst: int | None = walker.worst
        except (_TooMuchWork, RecursionError):
            worst = None
        if worst is None or worst > self.limit:
            self.report_error(
                limit_error(
                    "repeats",
                    "the number of times one field is selected at one place",
                    worst,
                    self.limit,
                    walker.worst_node or node,
                    at_least=worst is not None,
                )
            )
        return SKIP
