"""Batches in flight: a consumer applies up to VIDPULSE_BATCHES_IN_FLIGHT batches at once.

Each batch runs on a `Lane`, a connection of its own, as its own transaction: while
one batch waits for PostgreSQL (its locks, its save, its commit), the next one is
decoded and folded. To PostgreSQL they are two replicas of the processor: keyed rows
are locked in one global order, so they cannot deadlock, and a batch touching a key
another one holds waits for its commit.

One thing replicas do not promise, and lanes do: a session's events are applied in
stream order. Every batch takes a ticket when it is read; a keyed processor's batch
starts its transaction's work (the ledger first) only once every earlier batch holds
the locks of its keys (processors/base.py, `LOCK_TURN`) or has ended, so two batches
sharing a session lock it in reading order. The wait comes before the batch holds any
row: a batch waiting here never holds what an earlier one waits for in PostgreSQL
(such as the ledger row of an event a client sent twice, once in each batch).
"""

from __future__ import annotations

import threading
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

import psycopg

if TYPE_CHECKING:
    from processors.base import Entry


class Stopped(Exception):
    """A stop was requested while waiting; the work in hand is abandoned uncommitted."""


@dataclass(eq=False)
class Lane:
    """One batch at a time: its connection and what the batch being applied counts."""

    number: int
    conn: psycopg.Connection[Any] | None = None
    busy: bool = False  # a batch is being applied on it
    applied: int = 0  # entries new to the ledger in the transaction being committed
    dropped: dict[str, Entry] = field(default_factory=dict)  # forgotten viewers' events


class Turnstile:
    """Lets batches lock their keys in the order of their tickets.

    `ticket()` is called by the one thread that reads batches, in reading order.
    """

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._changed = threading.Condition()
        self._issued = 0
        self._next = 0  # the first ticket not through yet
        self._through: set[int] = set()  # later tickets already through

    def ticket(self) -> Turn:
        turn = Turn(self, self._issued)
        self._issued += 1
        return turn

    def _wait(self, number: int) -> None:
        with self._changed:
            while self._next < number:
                if self._stop.is_set():
                    raise Stopped
                self._changed.wait(0.1)

    def _through_(self, number: int) -> None:
        with self._changed:
            self._through.add(number)
            while self._next in self._through:
                self._through.remove(self._next)
                self._next += 1
            self._changed.notify_all()


class Turn:
    """A batch's ticket: `with turn:` waits for every earlier batch to be through,
    and is through itself on leaving. Through once: a batch retried entry by entry
    does not wait again. `close()` lets it through unused (the batch ended)."""

    def __init__(self, turnstile: Turnstile, number: int) -> None:
        self._turnstile = turnstile
        self.number = number
        self.through = False

    def wait(self) -> None:
        """Return once every earlier batch is through (at once if this one is)."""
        if not self.through:
            self._turnstile._wait(self.number)

    def __enter__(self) -> None:
        self.wait()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if not self.through:
            self.through = True
            self._turnstile._through_(self.number)


# The turn of the batch this thread applies; None: no other batch is in flight.
LOCK_TURN: ContextVar[Turn | None] = ContextVar("lock_turn", default=None)
