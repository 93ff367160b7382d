"""Resume rows (`video_watch_progress`): one per (viewer, video), over all the viewer's
sessions of the video as processor `progress` keeps them in `progress_sessions`.

After a batch's sessions are saved, the rows of the (viewer, video) pairs they are
bound to are locked (creating missing ones, in sorted order) and recomputed from
the sessions' rows, so concurrent replicas cannot lose each other's updates.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg

from processors.completion import percent

PairKey = tuple[str, str]  # (viewer_id, video_id)

_LOCK_PAIRS = """
INSERT INTO video_watch_progress (viewer_id, video_id)
SELECT v, w FROM unnest(%b::text[], %b::text[]) AS u(v, w) ORDER BY 1, 2
ON CONFLICT (viewer_id, video_id) DO UPDATE SET viewer_id = excluded.viewer_id WHERE false
"""
_AGGREGATE_PAIRS = """
SELECT viewer_id, video_id,
       (array_agg(position_s ORDER BY position_ts DESC, position_order DESC)
            FILTER (WHERE position_ts IS NOT NULL))[1],
       (array_agg(duration_s ORDER BY duration_ts DESC, duration_order DESC)
            FILTER (WHERE duration_ts IS NOT NULL))[1],
       bool_or(completed),
       min(completed_at) FILTER (WHERE completed),
       min(started_at),
       max(last_event_at),
       (array_agg(course_id ORDER BY course_ts DESC, course_order DESC)
            FILTER (WHERE course_ts IS NOT NULL))[1],
       (array_agg(lesson_id ORDER BY lesson_ts DESC, lesson_order DESC)
            FILTER (WHERE lesson_ts IS NOT NULL))[1]
FROM progress_sessions
WHERE (viewer_id, video_id) IN (SELECT * FROM unnest(%b::text[], %b::text[]))
GROUP BY viewer_id, video_id
"""
_SAVE_PAIRS = """
UPDATE video_watch_progress p
SET position_s = u.position_s, duration_s = u.duration_s, progress_pct = u.progress_pct,
    completed = u.completed, completed_at = u.completed_at,
    first_watched_at = u.first_watched_at, last_watched_at = u.last_watched_at,
    course_id = u.course_id, lesson_id = u.lesson_id
FROM unnest(%b::text[], %b::text[], %b::float8[], %b::float8[], %b::numeric[], %b::boolean[],
            %b::timestamptz[], %b::timestamptz[], %b::timestamptz[], %b::text[], %b::text[])
     AS u(viewer_id, video_id, position_s, duration_s, progress_pct, completed, completed_at,
          first_watched_at, last_watched_at, course_id, lesson_id)
WHERE p.viewer_id = u.viewer_id AND p.video_id = u.video_id
"""
_DELETE_PAIRS = """
DELETE FROM video_watch_progress
WHERE (viewer_id, video_id) IN (SELECT * FROM unnest(%b::text[], %b::text[]))
"""


def update(conn: psycopg.Connection[Any], pairs: Iterable[PairKey]) -> None:
    """Recompute the resume rows of `pairs` from their sessions (locking them first)."""
    pairs = sorted(set(pairs))
    if not pairs:
        return
    viewers, videos = [p[0] for p in pairs], [p[1] for p in pairs]
    conn.execute(_LOCK_PAIRS, (viewers, videos))
    rows = []
    seen: set[PairKey] = set()
    for row in conn.execute(_AGGREGATE_PAIRS, (viewers, videos)):
        viewer_id, video_id, position, duration, completed, completed_at = row[:6]
        first, last, course_id, lesson_id = row[6:]
        seen.add((viewer_id, video_id))
        pct = None if position is None else percent(position, duration)
        rows.append(
            (
                viewer_id,
                video_id,
                position,
                duration,
                pct,
                completed,
                completed_at,
                first,
                last,
                course_id,
                lesson_id,
            )
        )
    if rows:
        conn.execute(_SAVE_PAIRS, [list(column) for column in zip(*rows, strict=True)])
    gone = [p for p in pairs if p not in seen]
    if gone:  # a late first event moved a session to another pair
        conn.execute(_DELETE_PAIRS, ([p[0] for p in gone], [p[1] for p in gone]))
