"""Headline numbers over every video, and a daily series.

`overview(conn, day_from, day_to)` answers::

    {
      "videos": int,               # videos with any event (rows of video_metrics)
      "catalogued_videos": int,    # rows of the catalogue (videos table)
      "views": int,                # sum of video_metrics.views
      "unique_viewers": int,       # distinct viewer_id over all videos (video_watch_progress)
      "watch_seconds": float, "watch_hours": float,   # hours: 2 decimals
      "completions": int,
      "avg_completion_rate_pct": float | None,  # mean of the videos' completion rates
                                                # (videos with at least one view)
      "completion_buckets": {"above_75": int, "from_50_to_75": int, "below_50": int},
      "from": "YYYY-MM-DD", "to": "YYYY-MM-DD",
      "daily": [{"day": "YYYY-MM-DD", "views": int, "watch_seconds": float,
                 "completions": int}, ...]     # every day of from..to, zeros included
    }

Completion rate of a video = 100 · completions / views. Buckets: rate > 75, 50 ≤ rate
≤ 75, rate < 50 (videos without views are in none).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from psycopg import AsyncConnection

from dashboard.data import fetch_all, fetch_one

_TOTALS = """
WITH rates AS (
    SELECT 100.0 * completions / views AS rate FROM video_metrics WHERE views > 0
)
SELECT (SELECT count(*) FROM video_metrics) AS videos,
       (SELECT count(*) FROM videos) AS catalogued_videos,
       (SELECT coalesce(sum(views), 0)::bigint FROM video_metrics) AS views,
       (SELECT coalesce(sum(watch_seconds), 0) FROM video_metrics) AS watch_seconds,
       (SELECT coalesce(sum(completions), 0)::bigint FROM video_metrics) AS completions,
       (SELECT count(*) FROM (SELECT viewer_id FROM video_watch_progress GROUP BY 1) v)
           AS unique_viewers,
       (SELECT round(avg(rate), 2) FROM rates) AS avg_completion_rate_pct,
       (SELECT count(*) FROM rates WHERE rate > 75) AS above_75,
       (SELECT count(*) FROM rates WHERE rate >= 50 AND rate <= 75) AS from_50_to_75,
       (SELECT count(*) FROM rates WHERE rate < 50) AS below_50
"""

# Aggregated over the range first, then joined to every day: joining the days to the
# rows first makes PostgreSQL walk the whole table through the day index.
DAILY = """
WITH totals AS (
    SELECT day, sum(views)::bigint AS views, sum(watch_seconds)::float8 AS watch_seconds,
           sum(completions)::bigint AS completions
    FROM video_metrics_daily
    WHERE day BETWEEN %(from)s AND %(to)s
    GROUP BY day
)
SELECT d::date AS day, coalesce(t.views, 0) AS views,
       coalesce(t.watch_seconds, 0) AS watch_seconds, coalesce(t.completions, 0) AS completions
FROM generate_series(%(from)s::date, %(to)s::date, interval '1 day') AS d
LEFT JOIN totals t ON t.day = d::date
ORDER BY d
"""

DAILY_COLUMNS = ["day", "views", "watch_seconds", "completions"]


async def overview(conn: AsyncConnection[Any], day_from: date, day_to: date) -> dict[str, Any]:
    totals = await fetch_one(conn, _TOTALS)
    assert totals is not None
    daily = await fetch_all(conn, DAILY, {"from": day_from, "to": day_to})
    return {
        "videos": totals["videos"],
        "catalogued_videos": totals["catalogued_videos"],
        "views": totals["views"],
        "unique_viewers": totals["unique_viewers"],
        "watch_seconds": totals["watch_seconds"],
        "watch_hours": round(totals["watch_seconds"] / 3600, 2),
        "completions": totals["completions"],
        "avg_completion_rate_pct": totals["avg_completion_rate_pct"],
        "completion_buckets": {
            "above_75": totals["above_75"],
            "from_50_to_75": totals["from_50_to_75"],
            "below_50": totals["below_50"],
        },
        "from": day_from.isoformat(),
        "to": day_to.isoformat(),
        "daily": [{c: row[c] for c in DAILY_COLUMNS} for row in daily],
    }
