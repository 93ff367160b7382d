"""A viewer's resume rows, for a platform backend rendering its player at the resume point.

`progress(conn, viewer_id, video_id=None, limit=100)` answers::

    {
      "viewer_id": str,
      "rows": [{"video_id": str, "title": str | None, "position_s": float | None,
                "duration_s": float | None, "progress_pct": float | None,
                "completed": bool, "first_watched_at": str | None,
                "last_watched_at": str | None, "completed_at": str | None,
                "course_id": str | None, "lesson_id": str | None}, ...]
    }

Rows of video_watch_progress, most recently watched first; an unknown viewer has none.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from dashboard.data import fetch_all

_PROGRESS = """
SELECT p.video_id, c.title, p.position_s, p.duration_s, p.progress_pct, p.completed,
       p.first_watched_at, p.last_watched_at, p.completed_at, p.course_id, p.lesson_id
FROM video_watch_progress p
LEFT JOIN videos c ON c.video_id = p.video_id
WHERE p.viewer_id = %(viewer_id)s
  AND (%(video_id)s::text IS NULL OR p.video_id = %(video_id)s)
ORDER BY p.last_watched_at DESC NULLS LAST, p.video_id
LIMIT %(limit)s
"""

COLUMNS = [
    "video_id",
    "title",
    "position_s",
    "duration_s",
    "progress_pct",
    "completed",
    "first_watched_at",
    "last_watched_at",
    "completed_at",
    "course_id",
    "lesson_id",
]


async def progress(
    conn: AsyncConnection[Any], viewer_id: str, video_id: str | None = None, limit: int = 100
) -> dict[str, Any]:
    params = {"viewer_id": viewer_id, "video_id": video_id, "limit": limit}
    return {"viewer_id": viewer_id, "rows": await fetch_all(conn, _PROGRESS, params)}
