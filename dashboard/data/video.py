"""Everything about one video.

`video(conn, video_id, day_from, day_to, segment_seconds)` answers None for a video
neither seen in events nor catalogued, else::

    {
      "video_id": str,
      "summary": {ROW of dashboard.data.videos, zeros for a catalogued video without events,
                  "duration_s": float | None},   # catalogue's, else the latest session's
      "funnel": [{"milestone": 25|50|75|90, "viewers": int,
                  "pct_of_viewers": float | None}, ...],   # % of unique_viewers
      "segments": [{"start_s": float, "end_s": float, "views": int,
                    "watch_seconds": float, "drop_offs": int,
                    "retention_pct": float | None,   # segment views / video views · 100
                    "rewatch": float | None}, ...],  # watch_seconds / (views · length)
      "key_moments": {"most_rewatched": [SEGMENT, ...],   # top 3 by rewatch
                      "most_drop_offs": [SEGMENT, ...]},  # top 3 by drop_offs
      "from": "YYYY-MM-DD", "to": "YYYY-MM-DD",
      "daily": [{"day": "YYYY-MM-DD", "views": int, "unique_viewers": int,
                 "watch_seconds": float, "completions": int}, ...],  # every day, zeros included
      "devices": [{"device_type": str, "sessions": int, "pct": float}, ...]
    }

Segments run from 0 to the last segment anything touched, untouched ones as zeros.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from psycopg import AsyncConnection

from dashboard.data import fetch_all, fetch_one, pct
from dashboard.data.videos import IS_PREVIEW

_SUMMARY = f"""
SELECT v.video_id, c.title, c.course_id, c.course_title, c.video_id IS NOT NULL AS catalogued,
       {IS_PREVIEW} AS is_preview,
       coalesce(m.views, 0) AS views, coalesce(m.unique_viewers, 0) AS unique_viewers,
       coalesce(m.watch_seconds, 0) AS watch_seconds,
       round((m.watch_seconds / nullif(m.views, 0))::numeric, 2) AS avg_watch_seconds_per_view,
       coalesce(m.plays, 0) AS plays, coalesce(m.pauses, 0) AS pauses,
       coalesce(m.seeks, 0) AS seeks,
       coalesce(m.watched_25_count, 0) AS watched_25_count,
       coalesce(m.watched_50_count, 0) AS watched_50_count,
       coalesce(m.watched_75_count, 0) AS watched_75_count,
       coalesce(m.watched_90_count, 0) AS watched_90_count,
       coalesce(m.completions, 0) AS completions,
       coalesce(m.unique_completers, 0) AS unique_completers,
       round(100.0 * m.completions / nullif(m.views, 0), 2) AS completion_rate_pct,
       s.sessions, round(s.avg_completion_pct, 2) AS avg_completion_pct,
       m.first_event_at, m.last_event_at,
       coalesce(c.duration_s, (
           SELECT p.duration_s FROM progress_sessions p
           WHERE p.video_id = v.video_id AND p.duration_s IS NOT NULL
           ORDER BY p.last_event_at DESC LIMIT 1)) AS duration_s
FROM (SELECT %(video_id)s::text AS video_id) v
LEFT JOIN video_metrics m ON m.video_id = v.video_id
LEFT JOIN videos c ON c.video_id = v.video_id
CROSS JOIN LATERAL (
    SELECT count(*) AS sessions, avg(p.completion_pct) AS avg_completion_pct
    FROM progress_sessions p WHERE p.video_id = v.video_id
) s
WHERE m.video_id IS NOT NULL OR c.video_id IS NOT NULL
"""

_SEGMENTS = """
WITH touched AS (
    SELECT segment_start, segment_end, views, watch_seconds, drop_offs
    FROM video_heatmap WHERE video_id = %(video_id)s
)
SELECT k * %(seg)s::float8 AS start_s,
       coalesce(t.segment_end, (k + 1) * %(seg)s::float8) AS end_s,
       coalesce(t.views, 0) AS views,
       coalesce(t.watch_seconds, 0) AS watch_seconds,
       coalesce(t.drop_offs, 0) AS drop_offs
FROM generate_series(0, (SELECT coalesce(floor(max(segment_start) / %(seg)s), -1)
                         FROM touched)::int) AS k
LEFT JOIN touched t ON t.segment_start = k * %(seg)s
ORDER BY k
"""

DAILY = """
SELECT d::date AS day,
       coalesce(m.views, 0) AS views,
       coalesce(m.unique_viewers, 0) AS unique_viewers,
       coalesce(m.watch_seconds, 0) AS watch_seconds,
       coalesce(m.completions, 0) AS completions
FROM generate_series(%(from)s::date, %(to)s::date, interval '1 day') AS d
LEFT JOIN video_metrics_daily m ON m.video_id = %(video_id)s AND m.day = d::date
ORDER BY d
"""

DAILY_COLUMNS = ["day", "views", "unique_viewers", "watch_seconds", "completions"]

_DEVICES = """
SELECT coalesce(device_type, 'unknown') AS device_type, count(*) AS sessions
FROM progress_sessions WHERE video_id = %(video_id)s
GROUP BY 1
ORDER BY 2 DESC, 1
"""

MILESTONES = (25, 50, 75, 90)


async def video(
    conn: AsyncConnection[Any],
    video_id: str,
    day_from: date,
    day_to: date,
    segment_seconds: int,
) -> dict[str, Any] | None:
    summary = await fetch_one(conn, _SUMMARY, {"video_id": video_id})
    if summary is None:
        return None
    viewers = summary["unique_viewers"]
    views = summary["views"]
    funnel = [
        {
            "milestone": m,
            "viewers": summary[f"watched_{m}_count"],
            "pct_of_viewers": pct(summary[f"watched_{m}_count"], viewers),
        }
        for m in MILESTONES
    ]
    segments = await fetch_all(conn, _SEGMENTS, {"video_id": video_id, "seg": segment_seconds})
    for s in segments:
        length = s["end_s"] - s["start_s"]
        s["retention_pct"] = pct(s["views"], views)
        s["rewatch"] = round(s["watch_seconds"] / (s["views"] * length), 3) if s["views"] else None
    rewatched = sorted(
        (s for s in segments if s["rewatch"] is not None),
        key=lambda s: (-s["rewatch"], s["start_s"]),
    )
    dropping = sorted(
        (s for s in segments if s["drop_offs"] > 0), key=lambda s: (-s["drop_offs"], s["start_s"])
    )
    daily = await fetch_all(conn, DAILY, {"video_id": video_id, "from": day_from, "to": day_to})
    devices = await fetch_all(conn, _DEVICES, {"video_id": video_id})
    total_sessions = sum(d["sessions"] for d in devices)
    for d in devices:
        d["pct"] = pct(d["sessions"], total_sessions)
    return {
        "video_id": video_id,
        "summary": summary,
        "funnel": funnel,
        "segments": segments,
        "key_moments": {"most_rewatched": rewatched[:3], "most_drop_offs": dropping[:3]},
        "from": day_from.isoformat(),
        "to": day_to.isoformat(),
        "daily": daily,
        "devices": devices,
    }
