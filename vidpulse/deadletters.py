"""Reading, replaying and dropping dead letters (`{stream}:dlq`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from vidpulse.keys import Keys, text

# The fields of the original entry; the rest of a dead letter says why it died.
_ORIGINAL_FIELDS = (b"event", b"received_at", b"user_agent", b"referer")
_PAGE = 1000
_NOTHING_TO_REPLAY = "none of the original entry's fields (event, received_at, ...) is kept"


@dataclass
class ReplayReport:
    """What a replay did: how many went back, and each dead letter it could not replay."""

    replayed: int = 0
    broken: list[tuple[str, str]] = field(default_factory=list)  # (dead letter id, why)


def list_dead(client: redis.Redis, keys: Keys, count: int = 100) -> list[dict[str, str]]:
    """The oldest `count` dead letters, each with its id and fields as text."""
    entries: Any = client.xrange(keys.dlq, count=count)
    return [
        {"id": text(i), **{text(k): text(v) for k, v in fields.items()}} for i, fields in entries
    ]


def _pages(client: redis.Redis, key: str) -> Iterator[tuple[bytes, dict[bytes, bytes]]]:
    """Every entry of the stream `key`, read page by page."""
    start = "-"
    while True:
        page: Any = client.xrange(key, min=start, count=_PAGE)
        yield from page
        if len(page) < _PAGE:
            return
        start = "(" + text(page[-1][0])


def replay(client: redis.Redis, keys: Keys, group: str | None = None) -> ReplayReport:
    """Put dead letters back on the stream (all, or one group's).

    Every group sees a replayed event again; the processors that applied it already
    skip it (their ledgers hold its event_id), the others apply it now. So an entry
    several groups dead-lettered goes back once, not once per group. A dead letter
    without any of the original entry's fields is reported, left in place, and the
    rest go on.
    """
    report = ReplayReport()
    reappended: set[bytes] = set()
    for entry_id, fields in _pages(client, keys.dlq):
        if group is not None and text(fields.get(b"group", b"")) != group:
            continue
        original = {k: v for k, v in fields.items() if k in _ORIGINAL_FIELDS}
        if not original:
            report.broken.append((text(entry_id), _NOTHING_TO_REPLAY))
            continue
        original_id = fields.get(b"original_id")
        pipe = client.pipeline(transaction=True)
        if original_id is None or original_id not in reappended:
            pipe.xadd(keys.stream, original)  # type: ignore[arg-type]
        if original_id is not None:
            reappended.add(original_id)
        pipe.xdel(keys.dlq, entry_id)
        pipe.execute()
        report.replayed += 1
    return report


def drop(
    client: redis.Redis,
    keys: Keys,
    *,
    ids: Sequence[str] = (),
    group: str | None = None,
    everything: bool = False,
) -> int:
    """Delete dead letters: these ids, one group's, or all. Returns how many went."""
    if everything:
        pipe = client.pipeline(transaction=True)
        pipe.xlen(keys.dlq)
        pipe.delete(keys.dlq)
        count, _ = pipe.execute()
        return int(count)
    if group is not None:
        ids = [
            text(entry_id)
            for entry_id, fields in _pages(client, keys.dlq)
            if text(fields.get(b"group", b"")) == group
        ]
    dropped = 0
    for start in range(0, len(ids), _PAGE):
        dropped += int(client.xdel(keys.dlq, *ids[start : start + _PAGE]))
    return dropped
