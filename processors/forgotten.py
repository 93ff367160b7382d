"""Viewers erased by `vidpulse forget`: what every batch checks before it writes.

`vidpulse forget` records the viewer (as a hash) in `forgotten_viewers` under an
exclusive advisory lock; every batch transaction takes the same lock shared before it
reads that table. So a batch either committed before the erasure started (and the
erasure deletes what it wrote) or sees the record and drops the viewer's events: an
event read by a processor but not yet committed when the erasure runs is never
written back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import psycopg
import redis

from vidpulse.events import MAX_FUTURE_MS
from vidpulse.keys import Keys
from vidpulse.settings import Settings

# Held exclusively by `vidpulse forget` while it records a viewer, shared by batches.
LOCK = 0x76706667

# The whole table: it holds the erasures of the last days only, few rows, and reading
# it costs less than sending it a batch's viewer hashes to look up.
_CUTOFFS = """
SELECT viewer_hash, (extract(epoch FROM forgotten_at) * 1000)::bigint + %s
FROM forgotten_viewers
"""


def viewer_hash(viewer_id: str) -> str:
    """The hex SHA-256 by which a forgotten viewer is remembered."""
    return hashlib.sha256(viewer_id.encode()).hexdigest()


def cutoffs(conn: psycopg.Connection[Any], viewer_ids: Iterable[str]) -> dict[str, int]:
    """{viewer id: ts (ms)} of the forgotten among `viewer_ids`: their events up to it go.

    The cut-off is the erasure's time plus the ingest's tolerance for clocks ahead
    (an event made before the erasure may carry a ts up to that much later); events
    after it are new activity. Takes the forget lock shared, for the transaction.
    """
    conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (LOCK,))
    rows = conn.execute(_CUTOFFS, (MAX_FUTURE_MS,)).fetchall()
    if not rows:
        return {}
    by_hash: dict[str, int] = dict(rows)
    out: dict[str, int] = {}
    for viewer_id in set(viewer_ids):
        cutoff = by_hash.get(viewer_hash(viewer_id))
        if cutoff is not None:
            out[viewer_id] = cutoff
    return out


def purge(conn: psycopg.Connection[Any], settings: Settings) -> int:
    """Forget erasures older than the ledger retention: no event from before them can
    still arrive (the ingest refuses ts older than 7 days)."""
    return conn.execute(
        "DELETE FROM forgotten_viewers WHERE forgotten_at < now() - make_interval(days => %s)",
        (settings.applied_retention_days,),
    ).rowcount


def erase_keys(
    client: redis.Redis,
    keys: Keys,
    viewer_id: str,
    videos: Iterable[str],
    sessions: Iterable[str],
) -> int:
    """Delete the Redis keys naming the viewer: the dedupe keys of each of `videos`, and
    the compatibility routes' records of `sessions` that name them. Returns how many."""
    names = [k for video in sorted(set(videos)) for k in keys.viewer_keys(video, viewer_id)]
    records = [keys.legacy_session(s) for s in sorted(set(sessions))]
    if records:
        pipe = client.pipeline(transaction=False)
        for name in records:
            pipe.hget(name, "viewer_id")
        mine = viewer_id.encode()
        names += [n for n, owner in zip(records, pipe.execute(), strict=True) if owner == mine]
    return sum(int(client.delete(*names[i : i + 1000])) for i in range(0, len(names), 1000))
