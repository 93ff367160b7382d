"""The pipeline's state, as `vidpulse status --json` reports it.

`pipeline(settings)` answers::

    {
      "stream": str, "length": int, "dead_letters": int,
      "groups": [{"group": str, "consumers": int, "pending": int, "lag": int | None,
                  "oldest_pending_age_s": float | None, "dead_letters": int,
                  "last_delivered_id": str}, ...]
    }

Read from Redis (not PostgreSQL) with the same code as the command, on a thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

from vidpulse.keys import Keys
from vidpulse.redisclient import sync_client
from vidpulse.settings import Settings
from vidpulse.status import gather

GROUP_COLUMNS = [
    "group",
    "consumers",
    "pending",
    "lag",
    "oldest_pending_age_s",
    "dead_letters",
    "last_delivered_id",
]


def _gather(settings: Settings) -> dict[str, Any]:
    client = sync_client(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
    try:
        return gather(client, Keys.of(settings))
    finally:
        client.close()


async def pipeline(settings: Settings) -> dict[str, Any]:
    return await asyncio.to_thread(_gather, settings)
