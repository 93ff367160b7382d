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
    # The statement answers with the positions of the ids already applied before (none,
    # as a rule), not with the ids claimed: loading and hashing a UUID object per event
    # cost more than the claim itself.
    query = sql.SQL(
        "WITH ids AS (SELECT id, n FROM unnest(%b::uuid[]) WITH ORDINALITY AS u(id, n)),"
        " ins AS (INSERT INTO {} (event_id) SELECT id FROM ids ON CONFLICT DO NOTHING"
        " RETURNING event_id)"
        " SELECT n FROM ids WHERE id NOT IN (SELECT event_id FROM ins)"
    ).format(sql.Identifier(table))
    stale = {row[0] - 1 for row in conn.execute(query, (ids,))}
    if not stale and len({u.int for u in ids}) == len(ids):
        return list(entries)
    out: list[Entry] = []
    seen: set[int] = set()
    for i, entry in enumerate(entries):
        key = ids[i].int
        if i not in stale and key not in seen:
            out.append(entry)
        seen.add(key)
    return out


def purge(conn: psycopg.Connection[Any], table: str, retention_days: int) -> int:
    """Forget ids applied longer ago than the retention; returns how many."""
    query = sql.SQL("DELETE FROM {} WHERE applied_at < now() - make_interval(days => %s)").format(
        sql.Identifier(table)
    )
    return conn.execute(query, (retention_days,)).rowcount
