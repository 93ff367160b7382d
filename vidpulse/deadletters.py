"""Reading and replaying the dead-letter stream."""

from __future__ import annotations

from typing import Any

import redis

from vidpulse.keys import Keys, text

# The fields of the original entry; the rest of a dead letter says why it died.
_ORIGINAL_FIELDS = (b"event", b"received_at", b"user_agent", b"referer")


def list_dead(client: redis.Redis, keys: Keys, count: int = 100) -> list[dict[str, str]]:
    """The oldest `count` dead letters, each with its id and fields as text."""
    entries: Any = client.xrange(keys.dlq, count=count)
    return [
        {"id": text(i), **{text(k): text(v) for k, v in fields.items()}} for i, fields in entries
    ]


def replay(client: redis.Redis, keys: Keys, group: str | None = None) -> int:
    """Put dead letters back on the stream (all, or one group's); returns how many.

    Every group sees a replayed event again; the processors that applied it already
    skip it (their ledgers hold its event_id), the others apply it now. So an entry
    several groups dead-lettered goes back once, not once per group.
    """
    moved = 0
    reappended: set[bytes] = set()
    entries: Any = client.xrange(keys.dlq)
    for entry_id, fields in entries:
        if group is not None and text(fields.get(b"group", b"")) != group:
            continue
        original = {k: v for k, v in fields.items() if k in _ORIGINAL_FIELDS}
        original_id = fields.get(b"original_id")
        pipe = client.pipeline(transaction=True)
        if original_id is None or original_id not in reappended:
            pipe.xadd(keys.stream, original)
        if original_id is not None:
            reappended.add(original_id)
        pipe.xdel(keys.dlq, entry_id)
        pipe.execute()
        moved += 1
    return moved
