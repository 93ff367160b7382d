"""Redis Stream operations of a consumer group: create, read, claim, ack, dead-letter, trim."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import ResponseError

from vidpulse.keys import PROCESSOR_NAMES, Keys, text

RawEntry = tuple[str, dict[bytes, bytes]]


def ensure_groups(
    client: redis.Redis, stream: str, groups: tuple[str, ...] = PROCESSOR_NAMES
) -> None:
    """Create every processor's group from the stream's start, if missing.

    All groups are created together so that trimming (which keeps what any existing
    group still needs) can never drop events a processor started later would read.
    """
    for group in groups:
        try:
            client.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


def _entries(reply: Any) -> list[RawEntry]:
    out: list[RawEntry] = []
    for entry_id, fields in reply:
        out.append((text(entry_id), fields or {}))
    return out


@dataclass
class GroupStream:
    """One consumer's view of the stream, for one group."""

    client: redis.Redis
    keys: Keys
    group: str
    consumer: str
    dlq_max_length: int = 100_000

    def _live(self, entries: list[RawEntry]) -> list[RawEntry]:
        """The entries still in the stream. A pending entry deleted from the stream (XDEL,
        by `vidpulse forget`) comes back without fields: it is acked and left out."""
        gone = [entry_id for entry_id, fields in entries if not fields]
        if not gone:
            return entries
        self.ack(gone)
        return [entry for entry in entries if entry[1]]

    def read_new(self, count: int, block_ms: int | None) -> list[RawEntry]:
        """New entries for this consumer, waiting up to `block_ms` (None: not at all)."""
        reply: Any = self.client.xreadgroup(
            self.group, self.consumer, {self.keys.stream: ">"}, count=count, block=block_ms
        )
        return _entries(reply[0][1]) if reply else []

    def read_own_pending(self, after: str, count: int) -> list[RawEntry]:
        """This consumer's pending entries with ids greater than `after`."""
        while True:
            reply: Any = self.client.xreadgroup(
                self.group, self.consumer, {self.keys.stream: after}, count=count
            )
            entries = _entries(reply[0][1]) if reply else []
            live = self._live(entries)
            if live or not entries:
                return live
            after = entries[-1][0]  # a page of deleted entries only: read on

    def claim_idle(self, min_idle_ms: int, cursor: str, count: int) -> tuple[str, list[RawEntry]]:
        """XAUTOCLAIM idle entries of any consumer; acks ids trimmed from the stream."""
        reply = self.client.xautoclaim(
            self.keys.stream, self.group, self.consumer, min_idle_ms, cursor, count=count
        )
        next_cursor = text(reply[0])
        if len(reply) > 2 and reply[2]:
            self.client.xack(self.keys.stream, self.group, *reply[2])
        return next_cursor, self._live(_entries(reply[1]))

    def deliveries(self, ids: list[str]) -> dict[str, int]:
        """How many times each pending id has been delivered (absent: not pending)."""
        if not ids:
            return {}
        rows = self.client.xpending_range(
            self.keys.stream,
            self.group,
            min=min(ids, key=_id_key),
            max=max(ids, key=_id_key),
            count=len(ids) + 1000,
            consumername=self.consumer,
        )
        wanted = set(ids)
        out: dict[str, int] = {}
        for row in rows:
            mid = text(row["message_id"])
            if mid in wanted:
                out[mid] = int(row["times_delivered"])
        return out

    def ack(self, ids: list[str]) -> None:
        if ids:
            self.client.xack(self.keys.stream, self.group, *ids)

    def dead_letter(self, entry: RawEntry, error: str, deliveries: int) -> None:
        """Copy the entry to the dead-letter stream with why, and ack it, atomically."""
        entry_id, fields = entry
        record: dict[Any, Any] = dict(fields)
        record.update(
            {
                "error": error[:2000],
                "group": self.group,
                "consumer": self.consumer,
                "original_id": entry_id,
                "deliveries": deliveries,
                "failed_at": int(time.time() * 1000),
            }
        )
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(self.keys.dlq, record, maxlen=self.dlq_max_length, approximate=True)
        pipe.xack(self.keys.stream, self.group, entry_id)
        pipe.execute()

    def delete(self, ids: list[str]) -> None:
        """Delete entries from the stream (for every group), e.g. a forgotten viewer's."""
        if ids:
            self.client.xdel(self.keys.stream, *ids)

    def pending_count(self) -> int:
        info = self.client.xpending(self.keys.stream, self.group)
        return int(info["pending"])

    def forget_consumer_if_idle(self) -> None:
        """Remove this consumer from the group when it holds no pending entries."""
        self.client.eval(
            _FORGET_CONSUMERS_LUA, 1, self.keys.stream, self.group, 0, self.consumer, ""
        )

    def forget_idle_consumers(self, min_idle_ms: int) -> list[str]:
        """Remove the group's other consumers idle `min_idle_ms` with nothing pending."""
        removed: Any = self.client.eval(
            _FORGET_CONSUMERS_LUA, 1, self.keys.stream, self.group, min_idle_ms, "", self.consumer
        )
        return [text(name) for name in removed]


# KEYS[1] stream. ARGV: group, min idle ms, only this consumer ('' = any), never this one.
# Deletes consumers idle that long holding no pending entry and returns their names. The
# check and the delete are one atomic step: XGROUP DELCONSUMER drops the consumer's
# pending entries, so none may be handed to it in between.
_FORGET_CONSUMERS_LUA = """
local removed = {}
for _, row in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
    local c = {}
    for i = 1, #row, 2 do
        c[row[i]] = row[i + 1]
    end
    local chosen = (ARGV[3] == '' or c['name'] == ARGV[3]) and c['name'] ~= ARGV[4]
    if chosen and c['pending'] == 0 and c['idle'] >= tonumber(ARGV[2]) then
        redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], c['name'])
        removed[#removed + 1] = c['name']
    end
end
return removed
"""


def trim_processed(
    client: redis.Redis, stream: str, required: tuple[str, ...] = PROCESSOR_NAMES
) -> str | None:
    """Trim entries every group has read and acked. Returns the MINID used, if any.

    Keeps everything while a required group is missing, and everything from the
    oldest pending entry of any group on.
    """
    try:
        groups = client.xinfo_groups(stream)
    except ResponseError:
        return None
    names = {text(g["name"]) for g in groups}
    if not set(required) <= names or not groups:
        return None
    floor: str | None = None
    for g in groups:
        name = text(g["name"])
        candidate = text(g["last-delivered-id"])
        if int(g["pending"]):
            oldest = client.xpending(stream, name)["min"]
            if oldest is not None:  # None: the group acked all of them since XINFO
                candidate = min(candidate, text(oldest), key=_id_key)
        floor = candidate if floor is None else min(floor, candidate, key=_id_key)
    if floor is None or floor == "0-0":
        return None
    # LIMIT 0: without it a trim with ~ removes at most 100 nodes (10,000 entries), less
    # than a busy stream gains between two trims, and the stream would only ever grow.
    client.xtrim(stream, minid=floor, approximate=True, limit=0)
    return floor


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def id_time_ms(stream_id: str) -> int:
    """The server time (ms) at which an entry id was made."""
    return _id_key(stream_id)[0]
