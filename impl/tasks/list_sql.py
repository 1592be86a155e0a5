"""The SQL of one page of a listing: filters, sort, keyset cursor and `meta.total`, in one
statement whose cost does not grow with the user's number of tasks.

The indexes (migrations 0004, 0006, 0011): one per sort key, (user_id, key, id, priority rank,
completed), read forwards or backwards; (user_id, completed, created_at, id, priority rank) for
status in the default order; task_tags for `tag` and task_words for `q` (migrations 0005, 0012).
Every condition that bounds an index range or is checked on an index entry is leakproof (text,
uuid, timestamp and integer comparisons, CASE): under row-level security PostgreSQL uses no
other on an index (docs/row-security.md, "The price in plans"). A page is
read in one of two ways, and the statement decides which at run time, from numbers it reads
first:

- walk: read the sort index from the cursor and keep the rows that match, until the page is
  full. Conditions the index itself orders (status with the created_at sort, priority with the
  priority sort, due dates with the due_date sort) bound the index range; status and priority
  with another sort are checked on the index entries (their last key columns, migration 0006),
  so only the tasks that pass are read; the others are tested row by row. Cheap while matches
  are common: about limit / (share of matching tasks) rows.
- collect: when few tasks match (at most COLLECT_MAX by the counters, or TOTAL_CAP counted),
  fetch them all through the index of a filter (task_tags for a tag, task_words for q's longest
  word, the due date index, status, priority) and sort them. Cheap while matches are few.

A count says how many tasks match, not where they lie in the sort's order: a due range in
creation order matches none of the newest tasks, a tag only old tasks carry none of the recently
updated ones, and a walk would pass thousands of tasks before its first match (issue 33). So
where the walk tests rows (a word search, a due range in another order, a tag in another
order), the statement first peeks at the next PEEK_ROWS rows of the walk, and collects when
they hold too few matches.

Both branches are in the statement, each behind a condition on that number, and each written so
that the planner has one sensible plan for it whatever its estimates: the row tests of the walk
are wrapped in coalesce(), which no index can serve and which the planner rates as matching half
of the rows, so it always walks the sort index; the collecting query reads no more than its
LIMIT. (The status and priority checks on a sort index's entries need no coalesce(): an index
that bounds them by its leading columns would still need a sort, which a LIMIT makes dearer
than the walk.) So a cached generic plan is as good as a custom one, and misleading statistics
(a user's tasks are not distributed like everybody's) cannot turn a page into a scan of the
user's rows: tests/tasks/test_query_plans.py checks both plans of every shape.

A tag sorted by created_at walks the tag's rows of task_tags (migration 0005) instead of the
sort index: the tasks without the tag are never read, and with `q` a row whose word bits lack
the query's is skipped in the index (_Walk).

`meta.total`: from the per-user counters (task_counts, task_tag_counts: exact, the sum of the
user's slots, migration 0010) unless `q`,
`due_before` or `due_after` filters; then the matching tasks are counted up to TOTAL_CAP + 1,
and a total above TOTAL_CAP is reported as TOTAL_CAP with `total_exact` false.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from impl.platform.row_scope import as_caller
from impl.tasks.columns import select_list
from impl.tasks.cursor import Position
from impl.tasks.tables import PRIORITIES

COLUMNS = select_list("tasks.")  # the returned fields, in the order of columns.FIELDS


def priority_rank(value: str) -> str:
    """A priority as its rank (1 low ... 3 high: the enum's order), the integer the indexes hold
    (tables.PRIORITY_RANK): under row-level security an integer comparison may bound an index
    range, an enum comparison may not (it is not leakproof; docs/row-security.md)."""
    whens = " ".join(f"WHEN '{name}'::task_priority THEN {rank}"
                     for rank, name in enumerate(PRIORITIES, 1))
    return f"CASE {value} {whens} ELSE NULL::integer END"


# sort name -> (expression, SQL type of the cursor value). Columns are qualified: a bare
# `priority` in ORDER BY would name the text output column, not the enum.
SORT_EXPRESSIONS = {
    "created_at": ("tasks.created_at", "timestamptz"),
    "updated_at": ("tasks.updated_at", "timestamptz"),
    "title": ("tasks.title", "text"),
    "priority": (priority_rank("tasks.priority"), "task_priority"),
    "due_date": ("tasks.due_date", "timestamptz"),
}
# The sort keys of the row at `ordinal` (the page's last, whose position the next cursor holds),
# as text, from the page's columns (NULL for the other rows: formatting them costs a few
# microseconds a row).
def _cursor_keys(ordinal: str) -> str:
    return ", ".join(
        f"CASE WHEN page.ordinal = {ordinal} THEN (page.{name})::text END AS key_{name}"
        for name in SORT_EXPRESSIONS
    )
# Tasks without a due date sort last in both directions: NULL becomes the far end. Each
# direction has an index on exactly its expression (tables.py DUE_ASC, DUE_DESC). A CASE, not
# COALESCE, which PostgreSQL counts as leaky: under row-level security a bound on it could not
# be an index condition (migration 0011).
DUE_ASC = "CASE WHEN tasks.due_date IS NULL THEN 'infinity'::timestamptz ELSE tasks.due_date END"
DUE_DESC = "CASE WHEN tasks.due_date IS NULL THEN '-infinity'::timestamptz ELSE tasks.due_date END"
# meta.total with `q`, `due_before` or `due_after`: matching tasks are counted up to this many
# (a page of the benchmark); a larger total is reported as TOTAL_CAP, with meta.total_exact
# false. Counting costs about TOTAL_CAP / (share of matching tasks) rows read.
TOTAL_CAP = 20
# Up to this many matches (known exactly from the counters), collecting and sorting them all is
# cheaper than walking the sort index past the others.
COLLECT_MAX = 1000
# A word search first walks at most this many of the user's tasks in sort order (see below).
WALK_MAX = 1500
PEEK_ROWS, PEEK_HITS = 150, 2
# A due range's index hands out only the range (a word's task_words: all of them), so collecting
# through it is cheaper, and a walk must promise more to be preferred: 6 of 150 (4 %, about 525
# tasks walked for a page) where a word search needs 2.
DUE_PEEK_HITS = 6
TAG_SEARCH = "tasks.search @@ (SELECT tag FROM search)"


# How each filter's `meta.total` is known: from the per-user counters (exact), or by counting
# the matching tasks up to TOTAL_CAP. Every filter of ListQuery says which (FILTERS), so a new
# filter cannot be served the counters' total by omission (tests/tasks/test_task_fields.py
# checks FILTERS against the contract's list parameters).
COUNTERS = {"total": "counters"}
CAPPED = {"total": "capped"}


@dataclass(frozen=True)
class ListQuery:
    status: str = field(default="all", metadata=COUNTERS)
    priority: str | None = field(default=None, metadata=COUNTERS)
    tag: str | None = field(default=None, metadata=COUNTERS)
    q: str | None = field(default=None, metadata=CAPPED)
    due_before: datetime | None = field(default=None, metadata=CAPPED)
    due_after: datetime | None = field(default=None, metadata=CAPPED)
    sort: str = "-created_at"
    limit: int = 50

    @property
    def counted(self) -> bool:
        """meta.total comes from the counters: no filter that needs counting is given."""
        return all(getattr(self, name) is None for name in CAPPED_FILTERS)


FILTERS = {f.name: f.metadata["total"] for f in fields(ListQuery) if "total" in f.metadata}
CAPPED_FILTERS = tuple(name for name, total in FILTERS.items() if total == "capped")


@dataclass(frozen=True)
class Statement:
    sql: str
    args: list[Any]
    counted: bool  # meta.total comes from the counters (exact), not a capped count


@dataclass
class _Args:
    values: list[Any] = field(default_factory=list)

    def __call__(self, value: Any) -> str:
        """A placeholder for `value`."""
        self.values.append(value)
        return f"${len(self.values)}"


def timestamp(value: datetime | None) -> str | None:
    """Date-times go to PostgreSQL as RFC 3339 text: asyncpg would turn Python's smallest and
    largest datetimes (0001-01-01T00:00:00Z, 9999-12-31T23:59:59.999999Z) into -infinity and
    infinity, which come back without an offset."""
    return None if value is None else value.isoformat()


def _sort_expression(name: str, descending: bool) -> tuple[str, str]:
    if name == "due_date":
        return (DUE_DESC if descending else DUE_ASC), "timestamptz"
    return SORT_EXPRESSIONS[name]


def _cursor_key(position: Position, name: str, descending: bool) -> str:
    value = position.keys[name]
    if value is None:  # only due_date is nullable
        return "-infinity" if descending else "infinity"
    return value


def _counter_column(status: str, priority: str | None) -> str:
    """The counter expression (task_counts, task_tag_counts) for a status and priority."""
    if priority is None:
        return {"all": "total", "pending": "total - completed", "completed": "completed"}[status]
    return {
        "all": priority,
        "pending": f"{priority} - {priority}_completed",
        "completed": f"{priority}_completed",
    }[status]


@dataclass
class _Conditions:
    ordered: list[str] = field(default_factory=list)  # bound the sort index's range
    indexed: list[str] = field(default_factory=list)  # checked on the sort index's entries
    tested: list[str] = field(default_factory=list)  # tested row by row in a walk
    collect_order: str | None = None  # the ORDER BY that makes collecting use a filter's index
    searched: list[str] = field(default_factory=list)  # tag and word matches (also in tested)


@dataclass(frozen=True)
class _Walk:
    """What a walk reads in the page's order, testing each row: the user's tasks through the
    sort index, or (with a tag, sorted by created_at) the tag's rows of task_tags, which skip
    the tasks without the tag instead of testing them, and with `q` also most of the tasks
    without its words: a row's word bits (migration 0005) must hold the query's before its task
    is looked up and tested."""

    source: str  # the FROM clause
    where: str  # the range read: the user, the conditions that bound it or that its entries hold
    skips: bool  # the range holds rows that do not match (in the index, or tested)
    key: str  # the sort key and its tie-break, in the order of the range's index
    tie: str
    direction: str
    tested: list[str]  # conditions on the task, tested row by row
    length: str  # how many rows the whole range holds
    prefilter: str | None  # an index-only test each row passes before its task is tested
    # What testing a row costs, in rows of the walk of the sort index (for the choice between
    # walking and collecting): a task_tags row's task is a primary key lookup away.
    row_cost: int

    @property
    def order(self) -> str:
        return f"{self.key} {self.direction}, {self.tie} {self.direction}"

    def test(self, conditions: list[str], found: str | None = None) -> str:
        """True when the row's task meets every condition; coalesce() (which no index serves, and
        which the planner rates as half the rows) keeps the planner walking the index. With
        `found` (a walk of task_tags): that column of the task when it meets them, else NULL."""
        both = " AND ".join(conditions) or "true"
        if self.source == "tasks":
            return f"coalesce({both}, false)" if conditions else "true"
        lookup = "FROM tasks WHERE tasks.id = tagged.task_id AND tasks.user_id = $1"
        if found is None:
            task = f"coalesce((SELECT {both} {lookup}), false)"
            otherwise = " ELSE false"
        else:
            task = f"(SELECT {found} {lookup} AND coalesce({both}, false))"
            otherwise = ""
        if self.prefilter is None:
            return task
        return f"CASE WHEN {self.prefilter} THEN {task}{otherwise} END"

    def tested_rows(self, after: str, limit: str) -> str:
        """The range's rows after `after`, in order, at most `limit`: (id, place, sort_key, hit),
        hit when the row's task meets every tested condition, `place` its task's place in the
        table (ctid) when it does: a page of the rows found fetches its tasks from there, with
        no second descent of the primary key (measured: 30-40 us less at 100,000 tasks, 3-4 %
        of the statement; docs/perf/search-walk-options.md)."""
        rows = f"WHERE {self.where}{after} ORDER BY {self.order} LIMIT {limit}"
        if self.source == "tasks":
            return (f"SELECT tasks.id AS id, tasks.ctid AS place, {self.key} AS sort_key, "
                    f"{self.test(self.tested)} AS hit FROM tasks {rows}")
        # A task_tags row: test() looks its task up for its place in the table, NULL when it is
        # not a hit. (The LIMIT keeps this subquery whole, so `hit` reads `place` instead of
        # looking the task up again.)
        place = self.test(self.tested, "tasks.ctid")
        return (f"SELECT id, place, sort_key, place IS NOT NULL AS hit FROM (SELECT {self.tie} "
                f"AS id, {place} AS place, {self.key} AS sort_key FROM {self.source} {rows}) "
                "AS tested")

    def page(self, columns: str, order: str, condition: str, keyset: str, limit: str) -> str:
        """The first `limit` rows of the range that meet `condition`, after `keyset`."""
        rows = (f"FROM {self.source} WHERE {self.where}{condition}{keyset} "
                f"ORDER BY {self.order} LIMIT {limit}")
        if self.source == "tasks":
            return f"SELECT {columns} {rows}"
        return (f"SELECT {columns} FROM (SELECT {self.tie} AS id {rows}) AS chosen "
                f"JOIN tasks ON tasks.id = chosen.id AND tasks.user_id = $1 ORDER BY {order}")


def _walk(query: ListQuery, conditions: _Conditions, sort_name: str, direction: str,
          arg: _Args) -> _Walk:
    if query.tag is None or sort_name != "created_at":
        expression, _ = _sort_expression(sort_name, direction == "DESC")
        return _Walk(
            source="tasks",
            where="".join(["tasks.user_id = $1",
                           *(f" AND {c}" for c in [*conditions.ordered, *conditions.indexed])]),
            skips=bool(conditions.indexed or conditions.tested),
            key=expression,
            tie="tasks.id",
            direction=direction,
            tested=conditions.tested,
            length=("(SELECT coalesce(sum(total), 0)::bigint FROM task_counts "
                    "WHERE user_id = $1)"),
            prefilter=None,
            row_cost=1,
        )
    # The tag's range of task_tags (user_id, tag, created_at, task_id) INCLUDE (word_bits),
    # read index-only; the status bound of the created_at index becomes a test.
    tag = arg(query.tag)
    return _Walk(
        source="task_tags AS tagged",
        where=f"tagged.user_id = $1 AND tagged.tag = {tag}",
        key="tagged.created_at",
        tie="tagged.task_id",
        direction=direction,
        skips=True,
        tested=[c for c in [*conditions.ordered, *conditions.indexed, *conditions.tested]
                if c != TAG_SEARCH],
        length=(f"(SELECT coalesce(sum(total), 0)::bigint FROM task_tag_counts "
                f"WHERE user_id = $1 AND tag = {tag})"),
        prefilter=(
            "tagged.word_bits & (SELECT bits FROM search) = (SELECT bits FROM search)"
            if query.q is not None else None
        ),
        row_cost=8,
    )


def _conditions(query: ListQuery, sort_name: str, descending: bool, arg: _Args) -> _Conditions:
    conditions = _Conditions()
    if query.status != "all":
        value = "true" if query.status == "completed" else "false"
        target = conditions.ordered if sort_name == "created_at" else conditions.indexed
        target.append(f"tasks.completed = {value}")
        conditions.collect_order = "tasks.created_at"  # (user_id, completed, created_at, id)
    if query.priority is not None:
        target = conditions.ordered if sort_name == "priority" else conditions.indexed
        rank = priority_rank(f"{arg(query.priority)}::text::task_priority")
        target.append(f"{priority_rank('tasks.priority')} = {rank}")
        conditions.collect_order = "tasks.id"  # (user_id, priority rank, id)
    if query.due_before is not None or query.due_after is not None:
        # Both bounds on one expression: one range of its index. Undated tasks are +infinity in
        # the ascending expression, -infinity in the descending one: the bound on that side
        # keeps them out (due dates are finite: CHECK due_date_finite).
        if sort_name == "due_date":
            due = DUE_DESC if descending else DUE_ASC
        else:
            due = DUE_ASC if query.due_before is not None else DUE_DESC
        bounds = []
        if query.due_before is not None:
            bounds.append(f"{due} < {arg(timestamp(query.due_before))}::text::timestamptz")
        elif due == DUE_ASC:
            bounds.append(f"{due} < 'infinity'::timestamptz")
        if query.due_after is not None:
            bounds.append(f"{due} > {arg(timestamp(query.due_after))}::text::timestamptz")
        elif due == DUE_DESC:
            bounds.append(f"{due} > '-infinity'::timestamptz")
        target = conditions.ordered if sort_name == "due_date" else conditions.tested
        target.extend(bounds)
        conditions.collect_order = due
    # The search queries come from the `search` CTE: computed once per statement, not per row.
    if query.tag is not None:
        conditions.searched.append(TAG_SEARCH)
    if query.q is not None:
        conditions.searched.append("tasks.search @@ (SELECT words FROM search)")
    if conditions.searched:
        conditions.tested.extend(conditions.searched)
        conditions.collect_order = None  # task_tags or task_words: not in a useful order
    return conditions


def list_statement(user_id: str, query: ListQuery, after: Position | None) -> Statement:
    """One page of a listing and its total, in one statement (tests/tasks/test_query_plans.py runs
    EXPLAIN on exactly this)."""
    descending = query.sort.startswith("-")
    sort_name = query.sort.lstrip("-")
    expression, sql_type = _sort_expression(sort_name, descending)
    direction = "DESC" if descending else "ASC"
    order = f"{expression} {direction}, tasks.id {direction}"
    arg = _Args()
    user = f"tasks.user_id = {arg(user_id)}"
    limit = arg(query.limit + 1)  # a parameter, so that one statement serves every page size
    conditions = _conditions(query, sort_name, descending, arg)
    walk = _walk(query, conditions, sort_name, direction, arg)
    every = " AND ".join([user, *conditions.ordered, *conditions.indexed, *conditions.tested])
    counted = query.counted
    # A capped total and a walk that tests rows (q, or a due range in another order): how far
    # the walk must go depends on where the matches lie in the sort's order, which no count
    # says (a due range in creation order matches none of the newest tasks), so it peeks first.
    peeks = not counted and bool(walk.tested)

    # Ties break on id in the sort's direction: "after" a row is (key, id) beyond its own in the
    # order of the (user_id, key, id) index, read backwards when descending.
    beyond = "<" if descending else ">"
    keyset, collected_keyset = "", ""
    if after is not None:
        # The page continues after the cursor's row. The cursor holds the key as text;
        # PostgreSQL casts it back.
        value = f"{arg(_cursor_key(after, sort_name, descending))}::text::{sql_type}"
        if sort_name == "priority":  # the cursor holds the name; the index, its rank
            value = priority_rank(value)
        position = f"({value}, {arg(after.task_id)}::uuid)"
        keyset = f" AND ({walk.key}, {walk.tie}) {beyond} {position}"
        collected_keyset = f" AND (collected.sort_key, collected.id) {beyond} {position}"
    ctes: list[str] = []
    if conditions.searched:
        tag = f"task_tag_query($1, {arg(query.tag)})" if query.tag is not None else "NULL"
        words = f"task_search_query($1, {arg(query.q)})" if query.q is not None else "NULL"
        # The word bits only for a walk that tests them (a tag's rows): a call costs ~20 us.
        bits = f"task_word_bits({arg(query.q)})" if walk.prefilter is not None else "0"
        # The longest word of q (the likeliest to be rare), whose tasks a collection reads
        # from task_words (a range: the word as a prefix); NULL when q has no word.
        term = (f"(SELECT w FROM unnest(string_to_array(task_search_words({arg(query.q)}), ' '))"
                " AS w ORDER BY char_length(w) DESC, w LIMIT 1)" if query.q is not None
                else "NULL::text")
        ctes.append(
            f"search AS MATERIALIZED (SELECT {tag} AS tag, {words} AS words, {bits} AS bits, "
            f"{term} COLLATE \"C\" AS term)"
        )
    if counted:
        # The counters know how many tasks match: collect them if that is few.
        column = _counter_column(query.status, query.priority)
        counters = "task_counts WHERE user_id = $1"
        if query.tag is not None:
            counters = f"task_tag_counts WHERE user_id = $1 AND tag = {arg(query.tag)}"
        collect_max = COLLECT_MAX
        # Few: collecting M matches costs about as much as walking past (limit + 1) * N / M
        # rows when M * M * 8 = (limit + 1) * N * row_cost (measured: a collected row costs
        # about eight rows of a sort index walked, about one of task_tags, whose task is looked
        # up), N the rows of the walk's range (the user's tasks, or the tag's); and never more
        # than COLLECT_MAX.
        ctes.append(
            "counts AS MATERIALIZED (SELECT "
            f"(SELECT coalesce(sum({column}), 0)::bigint FROM {counters}) "
            f"AS matches, {walk.length} AS tasks)"
        )
        # That rule assumes the matches are spread over the sort's order. When the walk tests
        # rows (a tag in another order, status on a tag's rows) they can all lie at its far end
        # (a tag only old tasks carry, newest first: issue 33), and the walk would pass nearly
        # all the user's tasks: so before walking past up to COLLECT_MAX matches it peeks at the
        # first PEEK_ROWS rows after the cursor, and collects when fewer than PEEK_HITS match
        # there. (A CASE evaluates the peek, a subquery of its own, only when it gets there.)
        far = "false"
        if walk.tested:
            far = (f"(SELECT count(*) FILTER (WHERE hit) < {PEEK_HITS} FROM "
                   f"({walk.tested_rows(keyset, str(PEEK_ROWS))}) AS peek)")
        ctes.append(
            f"decision AS (SELECT matches, CASE WHEN matches > {COLLECT_MAX} THEN false "
            f"WHEN matches * matches * 8 <= {limit} * tasks * {walk.row_cost} THEN true "
            f"ELSE {far} END AS few FROM counts)"
        )
        gate = " AND (SELECT few FROM decision)"
    elif not peeks:
        # Due dates in their own order: count through their index (its range, in order: never
        # the whole table).
        collect_max = TOTAL_CAP
        gate = ""
    else:
        # A word search, or a due range in another order. task_words holds every task of the
        # word (its range, all of it), which costs more than walking the sort index when they are
        # common, and nothing when they are rare; a due range's index reads only the range, but
        # all of it, to sort it. A walk costs little when matches come early in the sort's
        # order, and can pass thousands of tasks when they lie at its far end (a due range in
        # creation order: issue 33). So peek at the first PEEK_ROWS tasks in sort order after
        # the cursor: if at least `hits` of them match (PEEK_HITS for words, DUE_PEEK_HITS for
        # a due range), walk on after them (at most WALK_MAX
        # tasks in all) for the first TOTAL_CAP + 1 matches, the peek's own first (each task is
        # tested once): the page is the first of them when there are more than TOTAL_CAP. If
        # fewer are found there (or the words are rare), the matches are sparse here: collect
        # them through the filter's index (up to COLLECT_MAX), which beats walking past the
        # others for every page.
        collect_max = COLLECT_MAX
        hits = PEEK_HITS if query.q is not None else DUE_PEEK_HITS
        ctes.append(f"peek AS MATERIALIZED ({walk.tested_rows(keyset, str(PEEK_ROWS))})")
        backwards = "ASC" if descending else "DESC"
        ctes.append(
            "peek_end AS MATERIALIZED (SELECT id, sort_key, (SELECT count(*) FROM peek "
            f"WHERE hit) AS hits FROM peek ORDER BY sort_key {backwards}, id {backwards} LIMIT 1)"
        )
        # The walk goes on after the peek's last row, so each task is tested once. Its LIMIT is
        # an expression: the planner then expects to read a tenth of the range, and walks the
        # sort index; with a constant one, it rates the keyset as a third of the user's rows,
        # reads them all and sorts them (measured: 100 times slower at 100,000 tasks).
        after_peek = (f" AND ({walk.key}, {walk.tie}) {beyond} ((SELECT sort_key FROM peek_end), "
                      "(SELECT id FROM peek_end))")
        walk_on = (f"CASE WHEN (SELECT hits FROM peek_end) >= {hits} "
                   f"THEN {WALK_MAX - PEEK_ROWS} ELSE 0 END")
        ctes.append(
            "walked AS MATERIALIZED (SELECT found.* FROM ("
            f"(SELECT * FROM peek WHERE hit AND (SELECT hits FROM peek_end) >= "
            f"{hits} ORDER BY sort_key {direction}, id {direction}) UNION ALL "
            f"(SELECT walk.* FROM ({walk.tested_rows(after_peek, walk_on)}) "
            f"AS walk WHERE walk.hit)) AS found LIMIT {TOTAL_CAP + 1})"
        )
        gate = f" AND (SELECT count(*) FROM walked) <= {TOTAL_CAP}"
    if walk.skips or not counted:
        # All the matching tasks, when there are few (or the first TOTAL_CAP + 1 of them, to
        # count them): through a filter's index, never walking the user's other tasks. With a
        # tag or words, that is task_tags or task_words alone: the others are tested on the
        # tasks they lead to (combining it with a btree index of tasks would read all the
        # user's entries of that index).
        collect_order = f" ORDER BY {conditions.collect_order}" if conditions.collect_order else ""
        if query.tag is not None:
            # A tag's tasks through its range of task_tags (a btree, text equality), each
            # looked up by id and tested for the rest: under row-level security the GIN index
            # cannot serve the tag's condition (`@@` is not leakproof, docs/row-security.md),
            # and would leave every task of the user to test. LATERAL ... LIMIT 1: a lookup per
            # row of the tag (joined plainly, the planner may hash the user's whole sort index).
            others = " AND ".join(
                [user, *conditions.ordered, *conditions.indexed,
                 *(c for c in conditions.tested if c != TAG_SEARCH)]
            )
            ctes.append(
                "collected AS MATERIALIZED (SELECT found.id, found.sort_key "
                "FROM task_tags AS tagged CROSS JOIN LATERAL ("
                f"SELECT tasks.id, {expression} AS sort_key FROM tasks "
                f"WHERE tasks.id = tagged.task_id AND coalesce({others}, false) LIMIT 1) AS found "
                f"WHERE tagged.user_id = $1 AND tagged.tag = {arg(query.tag)}{gate}{collect_order} "
                f"LIMIT {collect_max + 1})"
            )
        elif conditions.searched:
            # The tasks of q's longest word, through its range of task_words (text comparisons:
            # leakproof, so an index range under row-level security, where the GIN index of
            # `search` cannot serve: migration 0012), each looked up by id and tested with the
            # whole search and the other conditions. chr(1114111), the last code point, ends
            # the range of the words that start with the term (word characters are below it).
            ctes.append(
                "collected AS MATERIALIZED (SELECT found.id, found.sort_key FROM ("
                "SELECT DISTINCT w.task_id FROM task_words AS w WHERE w.user_id = $1 "
                "AND w.word >= (SELECT term FROM search) "
                "AND w.word < (SELECT term || chr(1114111) FROM search)) AS worded "
                "CROSS JOIN LATERAL ("
                f"SELECT tasks.id, {expression} AS sort_key FROM tasks "
                f"WHERE tasks.id = worded.task_id AND coalesce({every}, false) LIMIT 1) AS found "
                f"WHERE true{gate}{collect_order} LIMIT {collect_max + 1})"
            )
        else:
            where = every
        if not conditions.searched:
            ctes.append(
                f"collected AS MATERIALIZED (SELECT tasks.id, {expression} AS sort_key FROM tasks "
                f"WHERE {where}{gate}{collect_order} LIMIT {collect_max + 1})"
            )
    if not counted and not peeks:
        ctes.append(
            f"decision AS (SELECT matches, matches <= {TOTAL_CAP} AS few "
            "FROM (SELECT count(*) AS matches FROM collected) AS counted)"
        )
    elif not counted:
        # More than TOTAL_CAP found by the walk: many, walk the pages. Otherwise the collected
        # count decides (more than COLLECT_MAX: walk too).
        ctes.append(
            f"decision AS (SELECT CASE WHEN walked > {TOTAL_CAP} THEN walked ELSE collected END "
            f"AS matches, walked <= {TOTAL_CAP} AND collected <= {COLLECT_MAX} AS few, "
            f"walked > {TOTAL_CAP} AS walked_many "
            "FROM (SELECT (SELECT count(*) FROM walked) AS walked, "
            "(SELECT count(*) FROM collected) AS collected) AS counted)"
        )

    page_columns = f"{COLUMNS}, row_number() OVER (ORDER BY {order}) AS ordinal"

    if not walk.skips:
        # Every condition bounds the walk's index: the page is a range of it.
        branches = walk.page(page_columns, order, "", keyset, limit)
    else:
        # Few matches: sort the collected ones. Many: walk the sort index, testing each row;
        # coalesce() keeps the planner from serving the tests with an index and sorting.
        few = (
            f"SELECT {page_columns} FROM (SELECT collected.id FROM collected "
            f"WHERE decision.few{collected_keyset} "
            f"ORDER BY collected.sort_key {direction}, collected.id {direction} "
            f"LIMIT {limit}) AS chosen JOIN tasks ON tasks.id = chosen.id AND {user} "
            f"ORDER BY {order}"
        )
        # A word search's page can be the first matches the walk found (walked_page below).
        walked_page = peeks and query.limit <= TOTAL_CAP
        not_few = " AND NOT decision.few"
        if walked_page:
            not_few += " AND NOT decision.walked_many"
        many = walk.page(
            page_columns, order, f" AND {walk.test(walk.tested)}{not_few}", keyset, limit
        )
        branches = f"SELECT * FROM ({few}) AS few UNION ALL SELECT * FROM ({many}) AS many"
        if walked_page:
            # The page when the walk (from the cursor) found more than TOTAL_CAP matches: its
            # rows are the first of them. (Many matches that the walk did not find: walk on.)
            # The walk read their rows: they are fetched again by their place in the table (the
            # same row versions: one statement, one snapshot), the user checked once more.
            walked_order = f"walked.sort_key {direction}, walked.id {direction}"
            walked = (
                f"SELECT {page_columns} FROM (SELECT walked.place FROM walked "
                f"WHERE decision.walked_many ORDER BY {walked_order} LIMIT {limit}) AS chosen "
                f"JOIN tasks ON tasks.ctid = chosen.place AND {user} ORDER BY {order}"
            )
            branches = (f"SELECT * FROM ({few}) AS few UNION ALL SELECT * FROM ({walked}) "
                        f"AS walked_page UNION ALL SELECT * FROM ({many}) AS many")
    # The outer row always exists, so an empty page still brings its total (as one row of NULL
    # task columns).
    sql = (
        f"WITH {', '.join(ctes)} SELECT page.*, {_cursor_keys(f'{limit} - 1')}, "
        "decision.matches AS total FROM decision "
        f"LEFT JOIN LATERAL ({branches}) AS page ON true WHERE {as_caller('$1')} "
        "ORDER BY page.ordinal"
    )
    return Statement(sql=sql, args=arg.values, counted=counted)


def last_position(record: Any) -> Position:
    """The cursor position of a page's last row."""
    return Position(
        task_id=uuid.UUID(str(record["id"])),
        keys={name: record[f"key_{name}"] for name in SORT_EXPRESSIONS},
    )
