"""The list of videos (sortable, filterable, keyset-paginated) and the popular ones.

`videos(conn, query)` answers::

    {
      "rows": [ROW, ...],
      "next_cursor": str | None,   # pass as ?cursor= for the next page; None on the last
      "sort": str, "order": "asc" | "desc", "limit": int
    }

`popular(conn, limit)` answers ``{"rows": [ROW, ...], "limit": int}``, ordered by
watched_50_count desc, then views desc (then video_id), previews excluded.

ROW: the columns of the view `video_analytics_summary` with the catalogue's::

    {"video_id": str, "title": str | None, "course_id": str | None,
     "course_title": str | None, "catalogued": bool, "is_preview": bool,
     "views": int, "unique_viewers": int, "watch_seconds": float,
     "avg_watch_seconds_per_view": float | None, "plays": int, "pauses": int,
     "seeks": int, "watched_25_count": int, "watched_50_count": int,
     "watched_75_count": int, "watched_90_count": int, "completions": int,
     "unique_completers": int, "completion_rate_pct": float | None,
     "sessions": int, "avg_completion_pct": float | None,
     "first_event_at": str | None, "last_event_at": str | None}

A video is listed when it has events (a row in video_metrics); `title` is None for
one that is not in the catalogue. `is_preview`: the catalogue's flag when the video is
catalogued, else true when any of its sessions said is_preview.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson
from psycopg import AsyncConnection

from dashboard.data import fetch_all

# sort name -> (SQL expression of the key, never NULL; its SQL type for the cursor)
SORTS: dict[str, tuple[str, str]] = {
    "views": ("m.views", "bigint"),
    "watched_50": ("m.watched_50_count", "bigint"),
    "completion_rate": (
        "coalesce(round(100.0 * m.completions / nullif(m.views, 0), 2), -1)",
        "numeric",
    ),
    "watch_seconds": ("m.watch_seconds", "float8"),
    "last_event_at": ("coalesce(m.last_event_at, '-infinity'::timestamptz)", "timestamptz"),
}

IS_PREVIEW = """coalesce(c.is_preview, EXISTS (
    SELECT 1 FROM progress_sessions p WHERE p.video_id = m.video_id AND p.is_preview))"""

# The page's rows first (from video_metrics and the catalogue only), then the
# per-session averages of just those rows: the view's GROUP BY over every session
# would cost the whole table on each page.
_PAGE = """
WITH page AS (
    SELECT m.*, c.title, c.course_id, c.course_title, c.video_id IS NOT NULL AS catalogued,
           {is_preview} AS is_preview, ({key})::text AS sort_key
    FROM video_metrics m
    LEFT JOIN videos c ON c.video_id = m.video_id
    WHERE {where}
    ORDER BY {key} {order}, m.video_id {order}
    LIMIT %(limit)s
)
SELECT page.video_id, page.title, page.course_id, page.course_title, page.catalogued,
       page.is_preview, page.views, page.unique_viewers, page.watch_seconds,
       round((page.watch_seconds / nullif(page.views, 0))::numeric, 2)
           AS avg_watch_seconds_per_view,
       page.plays, page.pauses, page.seeks,
       page.watched_25_count, page.watched_50_count, page.watched_75_count,
       page.watched_90_count, page.completions, page.unique_completers,
       round(100.0 * page.completions / nullif(page.views, 0), 2) AS completion_rate_pct,
       coalesce(s.sessions, 0) AS sessions, round(s.avg_completion_pct, 2) AS avg_completion_pct,
       page.first_event_at, page.last_event_at, page.sort_key
FROM page
LEFT JOIN LATERAL (
    SELECT count(*) AS sessions, avg(p.completion_pct) AS avg_completion_pct
    FROM progress_sessions p WHERE p.video_id = page.video_id
) s ON true
ORDER BY {page_key} {order}, page.video_id {order}
"""

COLUMNS = [
    "video_id",
    "title",
    "course_id",
    "course_title",
    "catalogued",
    "is_preview",
    "views",
    "unique_viewers",
    "watch_seconds",
    "avg_watch_seconds_per_view",
    "plays",
    "pauses",
    "seeks",
    "watched_25_count",
    "watched_50_count",
    "watched_75_count",
    "watched_90_count",
    "completions",
    "unique_completers",
    "completion_rate_pct",
    "sessions",
    "avg_completion_pct",
    "first_event_at",
    "last_event_at",
]


class BadCursor(ValueError):
    """A cursor that is not one this API gave out for the same sort and order."""


@dataclass(frozen=True)
class VideoQuery:
    """The validated parameters of a videos listing."""

    sort: str = "views"
    order: str = "desc"
    course_id: str | None = None
    include_preview: bool = False
    q: str | None = None
    limit: int = 50
    cursor: str | None = None

    def cache_params(self) -> dict[str, Any]:
        return {
            "sort": self.sort,
            "order": self.order,
            "course_id": self.course_id,
            "include_preview": self.include_preview,
            "q": self.q,
            "limit": self.limit,
            "cursor": self.cursor,
        }


def encode_cursor(sort: str, order: str, key: str, video_id: str) -> str:
    raw = orjson.dumps({"s": sort, "o": order, "k": key, "v": video_id})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str, order: str) -> tuple[str, str]:
    """(sort key as text, video_id) of a cursor; BadCursor when it is not a valid one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = orjson.loads(raw)
    except (binascii.Error, ValueError):
        raise BadCursor("not a cursor this API gave out") from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), str) for k in ("s", "o", "k", "v")
    ):
        raise BadCursor("not a cursor this API gave out")
    if data["s"] != sort or data["o"] != order:
        raise BadCursor("the cursor belongs to another sort or order")
    return data["k"], data["v"]


def _like_prefix(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


async def videos(conn: AsyncConnection[Any], query: VideoQuery) -> dict[str, Any]:
    key, key_type = SORTS[query.sort]
    order = "DESC" if query.order == "desc" else "ASC"
    where = ["true"]
    params: dict[str, Any] = {"limit": query.limit + 1}
    if not query.include_preview:
        where.append(f"NOT {IS_PREVIEW}")
    if query.course_id is not None:
        where.append(
            "(c.course_id = %(course_id)s OR (c.video_id IS NULL AND EXISTS ("
            " SELECT 1 FROM progress_sessions p"
            " WHERE p.video_id = m.video_id AND p.course_id = %(course_id)s)))"
        )
        params["course_id"] = query.course_id
    if query.q:
        where.append("(m.video_id LIKE %(q)s ESCAPE '\\' OR c.title ILIKE %(q)s ESCAPE '\\')")
        params["q"] = _like_prefix(query.q)
    if query.cursor is not None:
        after_key, after_id = decode_cursor(query.cursor, query.sort, query.order)
        op = "<" if order == "DESC" else ">"
        where.append(f"({key}, m.video_id) {op} (%(after_key)s::{key_type}, %(after_id)s)")
        params["after_key"] = after_key
        params["after_id"] = after_id
    sql = _PAGE.format(
        is_preview=IS_PREVIEW,
        key=key,
        order=order,
        where=" AND ".join(where),
        page_key=f"page.sort_key::{key_type}",
    )
    rows = await fetch_all(conn, sql, params)
    next_cursor = None
    if len(rows) > query.limit:
        rows = rows[: query.limit]
        last = rows[-1]
        next_cursor = encode_cursor(query.sort, query.order, last["sort_key"], last["video_id"])
    for row in rows:
        del row["sort_key"]
    return {
        "rows": rows,
        "next_cursor": next_cursor,
        "sort": query.sort,
        "order": query.order,
        "limit": query.limit,
    }


_POPULAR = f"""
SELECT m.video_id, c.title, c.course_id, c.course_title, m.watched_50_count, m.views,
       m.unique_viewers, m.completions, m.unique_completers, m.watch_seconds, m.last_event_at
FROM video_metrics m
LEFT JOIN videos c ON c.video_id = m.video_id
WHERE NOT {IS_PREVIEW}
ORDER BY m.watched_50_count DESC, m.views DESC, m.video_id
LIMIT %(limit)s
"""

POPULAR_COLUMNS = [
    "video_id",
    "title",
    "course_id",
    "course_title",
    "watched_50_count",
    "views",
    "unique_viewers",
    "completions",
    "unique_completers",
    "watch_seconds",
    "last_event_at",
]


async def popular(conn: AsyncConnection[Any], limit: int) -> dict[str, Any]:
    rows = await fetch_all(conn, _POPULAR, {"limit": limit})
    return {"rows": rows, "limit": limit}
