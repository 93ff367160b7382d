"""Keyed state of a processor: one row per key (a session), handled a batch at a time.

A processor that keeps state per session declares a `Store` (its table, its key
column, and how each attribute of its state maps to columns) and a fold over a
`Batch`; `Processor.apply` (processors/base.py) then runs, in the batch's
transaction:

1. **load**: create the rows of the keys the batch touches that do not exist yet
   (bound to the first event of the batch naming them), lock every touched row in
   key order (one global order, so replicas cannot deadlock on each other), and
   read them back: two statements whatever the batch size;
2. **fold**: the processor's own function turns the events into new states and
   writes its own output tables;
3. **save**: one `UPDATE ... FROM unnest(...)` with binary parameters writes every
   touched row back.

`Latest` is the value type of "the value of the latest event carrying one", latest
being the greatest (event time, stream order) (see processors/sessions.py);
`Earliest` keeps the earliest instead. Each maps to three columns: the value,
`<prefix>_ts` and `<prefix>_order`.
"""

from __future__ import annotations

import inspect
import threading
import weakref
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import psycopg

from processors import arrays

if TYPE_CHECKING:
    from processors.base import Entry

T = TypeVar("T")
S = TypeVar("S")

EventKey = tuple[int, int]  # (event time in ms, stream order)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


class Latest(Generic[T]):
    """A value and the (event time, stream order) of the event it came from.

    `offer` replaces it with a value from a later event; a value from an earlier
    event changes nothing, so the outcome is the same in any arrival order.
    """

    __slots__ = ("key", "value")

    def __init__(self, value: T | None = None, key: EventKey | None = None) -> None:
        self.value = value
        self.key = key

    def offer(self, value: T | None, key: EventKey) -> None:
        """Take `value` (None: the event carries none) if its event comes after the current one."""
        if value is not None and (self.key is None or key > self.key):
            self.value, self.key = value, key

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value!r}, {self.key!r})"


class Earliest(Latest[T]):
    """Like Latest, but the value of the earliest event carrying one stays."""

    __slots__ = ()

    def offer(self, value: T | None, key: EventKey) -> None:
        if value is not None and (self.key is None or key < self.key):
            self.value, self.key = value, key


@dataclass(frozen=True)
class Field:
    """How one attribute of a state maps to columns of the store's table.

    Both functions work a column at a time, for every row of a batch at once:
    `load` takes one sequence per column and returns the attribute's values, `dump`
    takes the attribute's values and returns one list per column. None: the
    attribute is its one column, as is. `attr` None: columns computed from the
    whole state (`dump` takes the states), written but never read back. `saved`
    False: read, never written (set when the row is created).
    """

    attr: str | None
    columns: tuple[tuple[str, str], ...]  # (name, SQL type)
    load: Callable[..., Sequence[Any]] | None = None
    dump: Callable[[list[Any]], list[list[Any]]] | None = None
    saved: bool = True


def each(
    load: Callable[..., Any], dump: Callable[[Any], tuple[Any, ...]]
) -> tuple[Callable[..., list[Any]], Callable[[list[Any]], list[list[Any]]]]:
    """Field functions from ones that convert one row's value."""

    def load_all(*columns: Sequence[Any]) -> list[Any]:
        return list(map(load, *columns))

    def dump_all(values: list[Any]) -> list[list[Any]]:
        return [list(c) for c in zip(*map(dump, values), strict=True)]

    return load_all, dump_all


def column(attr: str, type: str, name: str | None = None) -> Field:
    """An attribute stored as is in one column (named like it unless `name`)."""
    return Field(attr, ((name or attr, type),))


def converted(
    attr: str, name: str, type: str, load: Callable[[Any], Any], dump: Callable[[Any], Any]
) -> Field:
    """An attribute kept in one column, converted by `load` and `dump` (None stays None)."""
    return Field(
        attr,
        ((name, type),),
        lambda values: [None if v is None else load(v) for v in values],
        lambda values: [[None if v is None else dump(v) for v in values]],
    )


def _latest_field(kind: type[Latest[Any]], attr: str, name: str, prefix: str, type: str) -> Field:
    def load(
        values: Sequence[Any], ts: Sequence[int | None], orders: Sequence[Any]
    ) -> list[Latest[Any]]:
        # The order stays the Decimal it is read as: it compares with ints exactly.
        return [
            kind(v, None if t is None else (t, 0 if o is None else o))
            for v, t, o in zip(values, ts, orders, strict=True)
        ]

    def dump(latests: list[Latest[Any]]) -> list[list[Any]]:
        keys = [latest.key for latest in latests]
        return [
            [latest.value for latest in latests],
            [None if k is None else k[0] for k in keys],
            [None if k is None else int(k[1]) for k in keys],  # read as Decimal
        ]

    columns = ((name, type), (f"{prefix}_ts", "bigint"), (f"{prefix}_order", "numeric"))
    return Field(attr, columns, load, dump)


def latest(attr: str, type: str, name: str | None = None, prefix: str | None = None) -> Field:
    """A Latest attribute: its value in column `name`, its key in `<prefix>_ts`/`_order`."""
    return _latest_field(Latest, attr, name or attr, prefix or attr, type)


def earliest(attr: str, type: str, name: str | None = None, prefix: str | None = None) -> Field:
    """An Earliest attribute, stored as `latest` stores one."""
    return _latest_field(Earliest, attr, name or attr, prefix or attr, type)


def instant(attr: str, name: str | None = None) -> Field:
    """A time in ms since the epoch (int or None) kept in a timestamptz column."""
    return converted(attr, name or attr, "timestamptz", ms, at)


def ranges(attr: str, name: str | None = None) -> Field:
    """Ranges [(start, end), ...] kept flattened in a float8[] column."""
    from processors import intervals

    return Field(
        attr,
        ((name or attr, "float8[]"),),
        lambda values: list(map(intervals.unflat, values)),
        lambda values: [[array_literal(intervals.flat(v)) for v in values]],
    )


@dataclass
class Batch(Generic[S]):
    """One batch as a fold sees it.

    `entries` are all the fresh entries (bots' included); `groups` the non-bot ones
    per key in stream order, keys sorted; `states` the loaded (locked) state of
    every key of `groups`. A fold counts the events it refuses in `refused`.
    """

    entries: Sequence[Entry]
    groups: dict[str, list[Entry]]
    states: States[S]
    refused: int = 0


class Store(Generic[S]):
    """A table of keyed state: one row per key, read and written set-based per batch.

    `fields` map the state's attributes to columns; `make(**attributes)` builds a
    state from them. `created` are columns set when a row is created, from the first
    event of the batch naming its key (`create(entry)` gives their values).
    """

    def __init__(
        self,
        table: str,
        key: str,
        fields: Sequence[Field],
        make: Callable[..., S],
        *,
        created: Sequence[tuple[str, str]] = (),
        create: Callable[[Entry], tuple[Any, ...]] | None = None,
    ) -> None:
        self.table, self.key, self.make = table, key, make
        self.loaded = [f for f in fields if f.attr is not None]
        self.saved = [f for f in fields if f.saved]
        self.create = create
        self.created = tuple(created)
        inserted = ((key, "text"), *self.created)
        # Inserts the missing rows and locks every touched one, in key order: `WHERE
        # false` leaves existing rows unchanged, but ON CONFLICT DO UPDATE locks them.
        self._lock = (
            f"INSERT INTO {table} ({', '.join(n for n, _ in inserted)})\n"
            f"SELECT * FROM unnest({', '.join(arrays.placeholder(t) for _, t in inserted)})\n"
            "ORDER BY 1\n"
            f"ON CONFLICT ({key}) DO UPDATE SET {key} = excluded.{key} WHERE false\n"
            "RETURNING 1"
        )
        names = [n for f in self.loaded for n, _ in f.columns]
        self._columns = [c for f in self.saved for c in f.columns]
        # How each saved column travels (array columns as text literals, see save).
        self._types = ["text" if t.endswith("[]") else t for _, t in self._columns]
        # The saved columns that are not read are read too, to tell which columns a
        # batch changed (see save).
        names += [n for n, _ in self._columns if n not in names]
        # The rows of the keys whose state is not cached, or was changed since (their
        # row version, xmin, is not the one cached): `v` is the cached version or NULL.
        self._load = (
            f"SELECT t.{key}, t.xmin::text::bigint, {', '.join(f't.{n}' for n in names)}\n"
            f"FROM unnest(%t::text[], %t::bigint[]) AS u(k, v) JOIN {table} t ON t.{key} = u.k\n"
            "WHERE u.v IS DISTINCT FROM t.xmin::text::bigint"
        )
        self._inserted_types = [t for _, t in inserted]
        # Where each saved column is in a loaded row; None: compared by value never
        # (an array, sent as a text literal).
        self._before = [None if t.endswith("[]") else 2 + names.index(n) for n, t in self._columns]
        picks = [0 if at is None else at for at in self._before]
        self._pick_before: Callable[[Sequence[Any]], tuple[Any, ...]] = (
            itemgetter(*picks) if len(picks) > 1 else lambda row: (row[picks[0]],)
        )
        # States are made from their attributes in the order of `fields` (positionally).
        parameters = list(inspect.signature(make).parameters)
        if parameters[: len(self.loaded)] != [f.attr for f in self.loaded]:
            raise ValueError(f"{table}: fields must list the state's attributes in order")
        self._spans: list[tuple[int, int, Callable[..., Sequence[Any]] | None]] = []
        at = 2
        for f in self.loaded:
            self._spans.append((at, at + len(f.columns), f.load))
            at += len(f.columns)
        self._dumps = [(f.attr, f.dump) for f in self.saved]
        self._saves: dict[tuple[int, ...], str] = {}
        self._caches: weakref.WeakKeyDictionary[psycopg.Connection[Any], _Cache[S]] = (
            weakref.WeakKeyDictionary()
        )
        self._caches_lock = threading.Lock()

    def _save_statement(self, changed: tuple[int, ...]) -> str:
        """UPDATE ... FROM unnest(...) of the saved columns numbered `changed`."""
        statement = self._saves.get(changed)
        if statement is None:
            columns = [(self.key, "text"), *(self._columns[i] for i in changed)]
            # float8[] values travel as text literals: unnest would flatten a 2-D array.
            sets = ", ".join(
                f"{n} = u.{n}::{t}" if t.endswith("[]") else f"{n} = u.{n}" for n, t in columns[1:]
            )
            params = ", ".join(
                arrays.placeholder("text" if t.endswith("[]") else t) for _, t in columns
            )
            # Answers with the transaction's id: the version (xmin) the rows now have.
            statement = self._saves[changed] = (
                f"WITH saved AS (UPDATE {self.table} t SET {sets}\n"
                f"FROM unnest({params}) AS u({', '.join(n for n, _ in columns)})\n"
                f"WHERE t.{self.key} = u.{self.key})\n"
                "SELECT pg_current_xact_id()::xid::text::bigint"
            )
        return statement

    def cache(self, conn: psycopg.Connection[Any], limit: int | None = None) -> _Cache[S]:
        """The states this store keeps for `conn` between batches (see _Cache), at most
        `limit` of them from now on (None: as before)."""
        with self._caches_lock:
            cache = self._caches.get(conn)
            if cache is None:
                cache = self._caches[conn] = _Cache()
        if limit is not None:
            cache.limit = limit
        return cache

    def share(self, conn: psycopg.Connection[Any], cache: _Cache[S]) -> None:
        """Let `conn` use `cache`: the connections of one consumer's lanes share one."""
        with self._caches_lock:
            self._caches[conn] = cache

    def load(
        self,
        conn: psycopg.Connection[Any],
        groups: Mapping[str, list[Entry]],
        cache: _Cache[S] | None = None,
    ) -> States[S]:
        """Create, lock (in key order) and read the states of the keys of `groups`.

        A state the cache holds at the version its row still has is taken from the
        cache; the others are read from their rows.
        """
        keys = list(groups)
        values: list[list[Any]] = [keys]
        if self.create is not None:
            rows = [self.create(group[0]) for group in groups.values()]
            values += [list(c) for c in zip(*rows, strict=True)]
        cache = self.cache(conn) if cache is None else cache
        # Taken once the rows are locked: a batch in flight beside this one that held
        # them has cached its states by then (see processors/lanes.py).
        conn.execute(self._lock, list(map(arrays.param, values, self._inserted_types))).fetchall()
        taken = cache.take(keys)
        versions = [None if (c := taken.get(k)) is None else c[0] for k in keys]
        params = (arrays.literal(keys, "text"), arrays.literal(versions, "bigint"))
        rows = conn.execute(self._load, params).fetchall()
        states: States[S] = States()
        for key, (version, state, before) in taken.items():
            states[key] = state
            states.versions[key] = version
            states.before[key] = before
        if not rows:
            return states
        columns = list(zip(*rows, strict=True))
        attributes = [
            columns[i] if load is None else load(*columns[i:j]) for i, j, load in self._spans
        ]
        if taken:
            cache.stale += sum(1 for key in columns[0] if key in taken)
        states.update(zip(columns[0], map(self.make, *attributes), strict=True))
        states.versions.update(zip(columns[0], columns[1], strict=True))
        states.before.update(zip(columns[0], map(self._pick_before, rows), strict=True))
        return states

    def save(
        self, conn: psycopg.Connection[Any], states: States[S], cache: _Cache[S] | None = None
    ) -> Saved[S]:
        """Write the states back (their rows are locked since `load`); `keep()` on what
        it returns caches them, once the statement is through (see Saved).

        Only the columns whose values changed in some row are written: the others
        hold what was read, since the rows are locked.
        """
        cache = self.cache(conn) if cache is None else cache
        if not states:
            return Saved(cache, [], [], [], [], None)
        keys = list(states)
        values = list(states.values())
        columns: list[list[Any]] = []
        for attr, dump in self._dumps:
            column = values if attr is None else list(map(attrgetter(attr), values))
            columns.extend([column] if dump is None else dump(column))
        before = list(zip(*map(states.before.__getitem__, keys), strict=True))
        changed = tuple(
            n
            for n, (column, at) in enumerate(zip(columns, self._before, strict=True))
            if at is None or before[n] != tuple(column)
        )
        cursor = None
        if changed:
            params = [arrays.literal(keys, "text")]
            params += [arrays.param(columns[n], self._types[n]) for n in changed]
            cursor = conn.execute(self._save_statement(changed), params)
        versions = list(map(states.versions.__getitem__, keys))
        return Saved(cache, keys, versions, values, columns, cursor)


@dataclass
class Saved(Generic[S]):
    """States a store has sent to be written, to cache once the writing is through.

    `keep` reads the transaction id the save statement answers with (in a pipeline,
    that waits for it), the version the rows now have; without a save statement
    (nothing changed), the rows keep the versions they were loaded at.
    """

    cache: _Cache[S]
    keys: list[str]
    versions: list[int]
    states: list[S]
    columns: list[list[Any]]
    cursor: psycopg.Cursor[Any] | None

    def keep(self) -> None:
        versions: Sequence[int | None] = self.versions
        if self.cursor is not None:
            row = self.cursor.fetchone()
            versions = [None if row is None else row[0]] * len(self.keys)
            if row is not None:
                self.cache.newest = row[0]
        if self.keys:
            self.cache.put(self.keys, versions, self.states, zip(*self.columns, strict=True))


class _Cache(Generic[S]):
    """States kept between batches, with the row version (xmin) each was saved at.

    Like a caching state store: a key's next batch takes its state from here instead
    of reading and decoding its row, when the row is still at the version cached (a
    row another consumer or a statement changed since has another xmin, and is read
    again). `take` removes what it gives out, so a batch that fails leaves nothing
    behind it may have changed; `save` puts the states back once their rows are
    written. One cache per connection, or per consumer when its lanes share one
    (processors/lanes.py); after the database was lost (or failed over) it starts
    empty. Past `limit` states (VIDPULSE_STATE_CACHE_SESSIONS),
    the least recently saved go first.

    A version is a 32-bit transaction id, and those wrap around: a state cached more
    than MAX_AGE transactions before the newest save is read again rather than
    compared with a row version that, ids having wrapped, could equal its own.
    """

    MAX_AGE = 1 << 30

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._lock = threading.Lock()  # batches in flight side by side share a cache
        self.newest: int | None = None  # the transaction id of the latest save
        self._states: OrderedDict[str, tuple[int, S, tuple[Any, ...]]] = OrderedDict()
        self.hits = 0  # keys whose state was cached, when a batch asked for them
        self.misses = 0  # keys whose state was not
        self.stale = 0  # hits whose row had changed since: read again

    def take(self, keys: Sequence[str]) -> dict[str, tuple[int, S, tuple[Any, ...]]]:
        pop = self._states.pop
        with self._lock:
            taken = {k: v for k in keys if (v := pop(k, None)) is not None}
        newest = self.newest
        if newest is not None:
            taken = {k: v for k, v in taken.items() if (newest - v[0]) % (1 << 32) < self.MAX_AGE}
        self.hits += len(taken)
        self.misses += len(keys) - len(taken)
        return taken

    def put(
        self,
        keys: Sequence[str],
        versions: Sequence[int | None],
        states: Sequence[S],
        before: Iterable[tuple[Any, ...]],
    ) -> None:
        cache = self._states
        with self._lock:
            for key, version, state, row in zip(keys, versions, states, before, strict=True):
                if version is not None:
                    cache[key] = (version, state, row)
            while len(cache) > self.limit:
                cache.popitem(last=False)

    def clear(self) -> None:
        """Forget every state (the database was lost: it may not be the same one again)."""
        with self._lock:
            self._states.clear()
        self.newest = None

    def __len__(self) -> int:
        return len(self._states)


class States(dict[str, S]):
    """The states a store loaded, by key; with, per key, the row's version and the values
    its saved columns had (what `save` compares with)."""

    def __init__(self) -> None:
        super().__init__()
        self.versions: dict[str, int] = {}
        self.before: dict[str, tuple[Any, ...]] = {}


def group(entries: Iterable[Entry]) -> dict[str, list[Entry]]:
    """Entries per session in stream order; sessions sorted (the order rows are locked in).

    Bots' entries are left out: they count in no session-based aggregate.
    """
    groups: defaultdict[str, list[Entry]] = defaultdict(list)
    for entry in entries:
        if not entry.is_bot:
            groups[entry.event.session_id].append(entry)
    return dict(sorted(groups.items()))


_COUNT_REFUSED = """
INSERT INTO processor_refusals AS t (processor, reason, events, last_at)
VALUES (%s, 'session_taken', %s, now())
ON CONFLICT (processor, reason) DO UPDATE
SET events = t.events + excluded.events, last_at = excluded.last_at
"""


def count_refused(conn: psycopg.Connection[Any], processor: str, events: int) -> None:
    """Add `events` refused events to the processor's counter (last in the batch)."""
    if events:
        conn.execute(_COUNT_REFUSED, (processor, events))


@overload
def at(ms: int) -> datetime: ...
@overload
def at(ms: None) -> None: ...
def at(ms: int | None) -> datetime | None:
    """Milliseconds since the epoch as a UTC datetime (exact to the millisecond)."""
    # A timedelta product: exact, and a quarter of the cost of fromtimestamp + replace.
    return None if ms is None else _EPOCH + ms * _MS


def ms(when: datetime | None) -> int | None:
    """A datetime as whole milliseconds since the epoch (the inverse of `at`)."""
    if when is None:
        return None
    return (when - _EPOCH) // _MS


def array_literal(values: Iterable[float]) -> str:
    """A float8[] literal that reads back bit-identical (repr is the shortest exact form)."""
    return "{" + ",".join(map(repr, values)) + "}"


def columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows as one list per column, the shape unnest takes."""
    return [[row[i] for row in rows] for i in range(width)]
