"""Every Redis key and consumer-group name of a deployment, in one place."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any
from urllib.parse import quote

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

PROCESSOR_NAMES = ("raw", "heatmap", "progress", "metrics")
MILESTONES = (25, 50, 75, 90)


@dataclass(frozen=True)
class Keys:
    """Key names derived from the stream key, which prefixes all of them.

    With `partitions` > 1 (VIDPULSE_PARTITIONS) the events go to that many streams,
    `{stream}:{pN.K}`: the braces are a Redis Cluster hash tag, chosen so that the
    partitions spread evenly over the cluster's hash slots. A partition's dead letters
    and the milestone dedupe keys of the sessions it carries share its tag, hence its
    slot, so every script and transaction touches one slot. With one partition every
    key is what it always was.
    """

    stream: str
    partitions: int = 1

    @classmethod
    def of(cls, settings: Any) -> Keys:
        """The keys of a deployment's settings (its stream and partitions)."""
        return cls(settings.stream, settings.partitions)

    # -- partitions -----------------------------------------------------------------

    def partition_stream(self, partition: int) -> str:
        """The stream key of one partition (the stream itself when there is one)."""
        if self.partitions == 1:
            return self.stream
        return f"{self.stream}:{{{_slot_tag(partition, self.partitions)}}}"

    @property
    def partition_streams(self) -> list[str]:
        return [self.partition_stream(p) for p in range(self.partitions)]

    def partition(self, partition: int) -> Keys:
        """The keys of one partition, as one unpartitioned stream (its stream, its dlq)."""
        return Keys(self.partition_stream(partition))

    def partition_of(self, video_id: str, viewer_id: str) -> int:
        """The partition of a (video, viewer): all of a session's events go to one."""
        if self.partitions == 1:
            return 0
        return partition_of(video_id, viewer_id, self.partitions)

    @property
    def dlq(self) -> str:
        return f"{self.stream}:dlq"

    def members(self, group: str) -> str:
        """The live consumers of a group (a sorted set: name -> expiry), partitions > 1."""
        return f"{self.stream}:members:{group}"

    def milestone_dedupe(self, video_id: str, viewer_id: str, milestone: int) -> str:
        base = self.partition_stream(self.partition_of(video_id, viewer_id))
        return f"{base}:dedupe:{key_part(video_id)}:{key_part(viewer_id)}:m{milestone}"

    def watched50_dedupe(self, video_id: str, user_id: str) -> str:
        """The dedupe key of the watched-50% call, `POST /analytics` (ids encoded)."""
        base = self.partition_stream(self.partition_of(video_id, user_id))
        return f"{base}:dedupe:video:{key_part(video_id)}:user:{key_part(user_id)}:watched50"

    @property
    def rate_limit_prefix(self) -> str:
        """Prefix of the per-client rate-limit counters (hashed addresses follow it)."""
        return f"{self.stream}:ratelimit"

    @property
    def rate_limit_salt(self) -> str:
        """The deployment's random salt of the client-address hashes of the rate limit."""
        return f"{self.stream}:ratelimit:salt"

    def legacy_session(self, session_id: str) -> str:
        """What the view/progress/complete routes keep of a session (video, viewer, duration)."""
        return f"{self.stream}:legacy:session:{session_id}"

    # -- the dashboard's cache (version keys are bumped by the processors) --------

    def cache_version(self, scope: str) -> str:
        """Counter bumped after each commit touching `scope`.

        Scopes: a processor name (anything it wrote), `catalogue` (the videos table),
        `video:<video_id>` (anything any processor wrote about that one video).
        """
        return f"{self.stream}:cache:version:{scope}"

    def cache_entry(self, endpoint: str, versions: str, params_digest: str) -> str:
        """A cached answer: the endpoint, the versions it was computed at, its parameters."""
        return f"{self.stream}:cache:{endpoint}:{versions}:{params_digest}"

    # -- what `vidpulse forget` erases of a viewer ------------------------------------

    def viewer_keys(self, video_id: str, viewer_id: str) -> list[str]:
        """Every key named after a (video, viewer) pair: the milestone dedupe keys."""
        return [
            *(self.milestone_dedupe(video_id, viewer_id, m) for m in MILESTONES),
            self.watched50_dedupe(video_id, viewer_id),
        ]

    @staticmethod
    def group(processor: str) -> str:
        """Consumer-group name of a processor."""
        return processor


def partition_of(video_id: str, viewer_id: str, partitions: int) -> int:
    """The partition of a (video, viewer) among `partitions`: a CRC-32 of both ids."""
    return partition_of_bytes(video_id.encode(), viewer_id.encode(), partitions)


def partition_of_bytes(video_id: bytes, viewer_id: bytes, partitions: int) -> int:
    """`partition_of` of ids as UTF-8 bytes."""
    return zlib.crc32(viewer_id, zlib.crc32(video_id + b"\0")) % partitions


@cache
def _slot_tag(partition: int, partitions: int) -> str:
    """The hash tag of a partition: `p<partition>.<k>`, with the first k that puts it in
    its share of the slot space (partition p of n in slots [p/n, (p+1)/n) of 16384).

    A cluster's masters each own a contiguous share of the slots, so the partitions
    spread over the masters as evenly as their count allows.
    """
    low = partition * REDIS_CLUSTER_HASH_SLOTS // partitions
    high = (partition + 1) * REDIS_CLUSTER_HASH_SLOTS // partitions
    k = 0
    while not low <= key_slot(f"p{partition}.{k}".encode()) < high:
        k += 1
    return f"p{partition}.{k}"


@lru_cache(maxsize=4096)
def key_part(ident: str) -> str:
    """An id as one segment of a key: percent-encoded, so it holds no ':' (nor '%' bare).

    Ids may contain ':', the key separator; encoded, no two different id tuples give
    one key (video `a:b` with viewer `c` and video `a` with viewer `b:c` stay apart).
    Ids without ':' or '%' are unchanged.
    """
    return quote(ident, safe="")


def text(value: Any) -> str:
    """A Redis reply value (bytes, as the clients here are not decoding) as text."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
