"""Tell the dashboard's cache what a committed batch changed: bump its version keys.

Called after the batch's transaction commits and before its entries are acked, so
a crash in between redelivers the batch, which bumps again (the ledger makes the
redelivery apply nothing). The bump follows the commit by milliseconds, well within
the one second the dashboard promises for freshness.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import hiredis
import redis

from vidpulse.keys import Keys

_pack: Callable[[tuple[Any, ...]], bytes] = hiredis.pack_command


def bump(client: redis.Redis, keys: Keys, processor: str, video_ids: Iterable[str]) -> None:
    """INCR the processor's version and the version of every video the batch touched.

    A live batch touches about as many videos as it has events: the INCRs are packed
    and sent in one write, and their replies read back, without a pipeline object's
    per-command bookkeeping.
    """
    names = [keys.cache_version(processor)]
    names += [keys.cache_version(f"video:{v}") for v in sorted(set(video_ids))]
    if type(client) is not redis.Redis:  # e.g. a cluster client: let it route the keys
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.incr(name)
        pipe.execute()
        return
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        packed = b"".join([_pack(("INCR", name)) for name in names])
        conn.send_packed_command([packed])  # type: ignore[no-untyped-call]
        errors = [r for r in (conn.read_response() for _ in names) if isinstance(r, Exception)]
    except BaseException:
        # Replies may be left unread: the connection is never used again.
        conn.disconnect()  # type: ignore[no-untyped-call]
        raise
    finally:
        pool.release(conn)
    if errors:
        raise errors[0]
