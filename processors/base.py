"""What a processor is: a name and how it applies one batch in one transaction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from processors.lanes import LOCK_TURN
from processors.store import Batch, States, Store, count_refused, group
from vidpulse.agents import classify
from vidpulse.events import Event
from vidpulse.settings import Settings


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry, decoded: the event and what the ingest knew of its request."""

    stream_id: str
    event: Event
    received_at: datetime
    user_agent: str | None = None
    referer: str | None = None
    # What the processor's `prepare` made of this entry when it was read (see Processor).
    prepared: Any = None

    @property
    def is_bot(self) -> bool:
        """Whether the request came from a bot (see vidpulse.agents): left out of aggregates."""
        return classify(self.user_agent).is_bot


ApplyBatch = Callable[[psycopg.Connection[Any], Sequence[Entry], Settings], None]
Prepare = Callable[[Entry], Any]
Purge = Callable[[psycopg.Connection[Any], Settings], int]
Fold = Callable[[psycopg.Connection[Any], "Batch[Any]", Settings], None]


@dataclass(frozen=True)
class Settle:
    """What a keyed processor writes from its folded states, besides the states.

    `begin(conn, batch)` runs as soon as the states are loaded, before the fold: it
    locks and sends for what it will need (its statements run while the fold does);
    `finish(conn, batch, begun, settings)` runs after the fold, with what `begin`
    returned.
    """

    begin: Callable[[psycopg.Connection[Any], Batch[Any]], Any]
    finish: Callable[[psycopg.Connection[Any], Batch[Any], Any, Settings], None]


@dataclass(frozen=True)
class Processor:
    """A consumer group and the function applying a batch of not-yet-applied events.

    `apply` runs inside the batch's transaction and is given only events this
    processor has never applied before (the runtime keeps the ledger); it must
    write only the processor's own tables. A processor keeping state per session
    is made with `keyed` (below): its `apply` loads and locks that state from its
    `store`, folds the batch over it and saves it. `purge`, when given, deletes
    working state no event can need any more (older than the ledger's retention);
    the runtime calls it about hourly, in a transaction of its own, and logs the count.
    `prepare`, when given, is the per-event work that needs no database (e.g. building
    a row): the runtime runs it as it decodes a batch, which with a backlog happens on
    its reading thread while the previous batch commits, and keeps the result in
    `Entry.prepared`. An entry it raises on is handled as one that cannot be decoded.
    """

    name: str
    apply: ApplyBatch
    purge: Purge | None = None
    prepare: Prepare | None = None
    store: Store[Any] | None = None

    @property
    def group(self) -> str:
        return self.name

    @property
    def ledger_table(self) -> str:
        return f"{self.name}_applied"


@dataclass(frozen=True)
class KeyedApply:
    """A keyed processor's `apply`: load, fold, settle, save.

    Groups the batch's events by session (bots' left out), then `store.load` creates,
    locks (in session order) and reads every touched session's state; `settle.begin`,
    when given, locks what it will write; `fold` turns the events into new states and
    writes the processor's own output tables; `settle.finish` writes what is computed
    from the folded states; `store.save` writes the states back; last, the refused
    events are counted.

    With other batches in flight, the states are locked in the batches' reading order
    (processors/lanes.py). It all runs in a pipeline (psycopg's pipeline mode): a
    statement whose result is not needed at once runs in PostgreSQL while Python goes
    on with the batch, and only reading a result waits, for every statement sent
    before it. The saved states go to the store's cache once the pipeline is through.
    """

    name: str
    store: Store[Any]
    fold: Fold
    settle: Settle | None = None

    def __call__(
        self, conn: psycopg.Connection[Any], entries: Sequence[Entry], settings: Settings
    ) -> None:
        groups = group(entries)
        cache = self.store.cache(conn, settings.state_cache_sessions)
        with conn.pipeline():
            if groups:
                # In reading order when batches are in flight side by side (see lanes).
                with LOCK_TURN.get() or nullcontext():
                    states = self.store.load(conn, groups, cache)
            else:
                states = States()
            batch = Batch(entries, groups, states)
            begun = None if self.settle is None else self.settle.begin(conn, batch)
            self.fold(conn, batch, settings)
            if self.settle is not None:
                self.settle.finish(conn, batch, begun, settings)
            saved = self.store.save(conn, batch.states, cache)
            count_refused(conn, self.name, batch.refused)
        saved.keep()


def keyed(
    name: str,
    store: Store[Any],
    fold: Fold,
    *,
    settle: Settle | None = None,
    purge: Purge | None = None,
    prepare: Prepare | None = None,
) -> Processor:
    """A processor keeping per-session state in `store`, applying batches by `fold`."""
    return Processor(name, KeyedApply(name, store, fold, settle), purge, prepare, store)
