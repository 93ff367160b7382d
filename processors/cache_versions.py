"""Tell the dashboard's cache what a committed batch changed: bump its version keys.

Called after the batch's transaction commits and before its entries are acked, so
a crash in between redelivers the batch, which bumps again (the ledger makes the
redelivery apply nothing). The bump follows the commit by milliseconds, well within
the one second the dashboard promises for freshness.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis

from vidpulse.keys import Keys


def bump(client: redis.Redis, keys: Keys, processor: str, video_ids: Iterable[str]) -> None:
    """INCR the processor's version and the version of every video the batch touched."""
    pipe = client.pipeline(transaction=False)
    pipe.incr(keys.cache_version(processor))
    for video_id in sorted(set(video_ids)):
        pipe.incr(keys.cache_version(f"video:{video_id}"))
    pipe.execute()
