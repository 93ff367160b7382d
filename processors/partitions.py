"""How the consumers of one processor share out the partitions (VIDPULSE_PARTITIONS > 1).

No coordinator but Redis itself: every consumer keeps its name in the processor's
membership set (`{stream}:members:{group}`, a sorted set of name -> expiry, in server
time), renewing it every VIDPULSE_CONSUMER_HEARTBEAT_MS from a thread of its own, and
reads back the live names. Every consumer computes the same assignment from the same
sorted names: partition p goes to the (p mod n)-th of the n live consumers. A consumer
that stops leaves the set at once; one that dies drops out when its entry expires
(three heartbeats), and the others take its partitions over, claiming the entries it
had read but not acknowledged (XAUTOCLAIM) as they would a dead consumer's in one
stream. While views differ for a moment (a heartbeat apart), a partition may be read
by two consumers, which is harmless (a group delivers each entry once, the ledger
applies each event once), or by none for that moment.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import redis
import structlog

from vidpulse.keys import text

log = structlog.get_logger("vidpulse.processor")

# KEYS[1] the membership set. ARGV[1] the name to renew ('' = none), ARGV[2] its time to
# live in ms, ARGV[3] a name to remove ('' = none). Drops the expired names and returns
# the live ones. Server time, so the consumers' clocks do not matter.
_BEAT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[1] ~= '' then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
end
if ARGV[3] ~= '' then
    redis.call('ZREM', KEYS[1], ARGV[3])
end
if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 10)
end
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


def assignment(members: Sequence[str], me: str, partitions: int) -> list[int]:
    """The partitions `me` reads among the live `members`: p goes to sorted(members)[p % n]."""
    ordered = sorted(set(members))
    if me not in ordered:
        return []
    return [p for p in range(partitions) if ordered[p % len(ordered)] == me]


class Membership:
    """A consumer's place among its processor's live consumers, renewed by a thread."""

    def __init__(
        self, client: redis.Redis, key: str, me: str, partitions: int, heartbeat_ms: int
    ) -> None:
        self.client, self.key, self.me, self.partitions = client, key, me, partitions
        self.heartbeat_ms = heartbeat_ms
        self.ttl_ms = heartbeat_ms * 3
        self._members: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> list[str]:
        """Renew this consumer's entry; the live members."""
        reply = self.client.eval(_BEAT_LUA, 1, self.key, self.me, self.ttl_ms, "")
        members = sorted(text(m) for m in reply)
        with self._lock:
            self._members = members
        return members

    def owned(self) -> list[int]:
        """The partitions this consumer reads now (by the last heartbeat's members)."""
        with self._lock:
            members = list(self._members)
        return assignment(members, self.me, self.partitions)

    @property
    def members(self) -> list[str]:
        with self._lock:
            return list(self._members)

    def start(self) -> None:
        """Join (one heartbeat now, raising if Redis cannot be reached), then keep beating."""
        self.beat()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{self.me}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.heartbeat_ms / 1000):
            try:
                self.beat()
            except Exception as exc:  # beats resume when Redis (or the cluster) is back
                log.warning("heartbeat_failed", consumer=self.me, error=str(exc))

    def leave(self) -> None:
        """Stop beating and leave the set, so the others take the partitions over now."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.client.eval(_BEAT_LUA, 1, self.key, "", self.ttl_ms, self.me)
        except Exception:  # it expires by itself
            log.debug("leave_failed", consumer=self.me, exc_info=True)
