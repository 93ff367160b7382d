"""What a processor is: a name and how it applies one batch in one transaction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from processors.store import Batch, Store, count_refused, group
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


class Processor:
    """A consumer group and how it applies a batch of not-yet-applied events.

    The runtime calls `apply` inside the batch's transaction with only events this
    processor has never applied before (it keeps the ledger); a processor writes
    only its own tables. A processor either gives its own `apply` function, or
    declares a keyed `store` (processors/store.py) and a `fold`: `apply` then
    loads and locks the state of every session the batch touches, runs `fold`
    over it, saves it, runs `settle` (what is computed from the saved state, if
    anything), and counts the refused events. `purge`, when given, deletes working
    state no event can need any more (older than the ledger's retention); the
    runtime calls it about hourly, in a transaction of its own, and logs the count.
    `prepare`, when given, is the per-event work that needs no database (e.g. building
    a row): the runtime runs it as it decodes a batch, which with a backlog happens on
    its reading thread while the previous batch commits, and keeps the result in
    `Entry.prepared`. An entry it raises on is handled as one that cannot be decoded.
    """

    def __init__(
        self,
        name: str,
        apply: ApplyBatch | None = None,
        *,
        store: Store[Any] | None = None,
        fold: Fold | None = None,
        settle: Fold | None = None,
        purge: Purge | None = None,
        prepare: Prepare | None = None,
    ) -> None:
        if (apply is None) == (store is None or fold is None):
            raise ValueError("a processor gives either apply, or a store and a fold")
        self.name = name
        self.store = store
        self.fold = fold
        self.settle = settle
        self.purge = purge
        self.prepare = prepare
        self._apply = apply

    def apply(
        self, conn: psycopg.Connection[Any], entries: Sequence[Entry], settings: Settings
    ) -> None:
        """Apply one batch of fresh entries (inside the batch's transaction)."""
        if self._apply is not None:
            self._apply(conn, entries, settings)
            return
        assert self.store is not None
        assert self.fold is not None
        groups = group(entries)
        batch = Batch(entries, groups, self.store.load(conn, groups) if groups else {})
        self.fold(conn, batch, settings)
        self.store.save(conn, batch.states)
        if self.settle is not None:
            self.settle(conn, batch, settings)
        count_refused(conn, self.name, batch.refused)

    @property
    def group(self) -> str:
        return self.name

    @property
    def ledger_table(self) -> str:
        return f"{self.name}_applied"

    def __repr__(self) -> str:
        return f"Processor({self.name!r})"
