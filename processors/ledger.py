"""The per-processor ledger of applied event ids: what makes every effect happen once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from processors.base import Entry


def claim_fresh(conn: psycopg.Connection[Any], table: str, entries: Sequence[Entry]) -> list[Entry]:
    """Record the entries' event ids as applied; return those never applied before.

    Runs inside the batch's transaction, so a rollback forgets the claim too. Of
    several entries with one event id (client retries), only the first is returned.
    """
    if not entries:
        return []
    ids = [e.event.event_id for e in entries]
    query = sql.SQL(
        "INSERT INTO {} (event_id) SELECT unnest(%b::uuid[])"
        " ON CONFLICT DO NOTHING RETURNING event_id"
    ).format(sql.Identifier(table))
    fresh = {row[0] for row in conn.execute(query, (ids,))}
    out: list[Entry] = []
    for entry in entries:
        if entry.event.event_id in fresh:
            fresh.discard(entry.event.event_id)
            out.append(entry)
    return out


def purge(conn: psycopg.Connection[Any], table: str, retention_days: int) -> int:
    """Forget ids applied longer ago than the retention; returns how many."""
    query = sql.SQL("DELETE FROM {} WHERE applied_at < now() - make_interval(days => %s)").format(
        sql.Identifier(table)
    )
    return conn.execute(query, (retention_days,)).rowcount
