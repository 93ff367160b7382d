"""Dashboard reads: cached answers per second beside a bare endpoint, uncached p99.

- cached: `GET /api/v1/overview` and `GET /api/v1/videos/{id}` through the real app
  under uvicorn (Redis hit, no PostgreSQL), against a bare Starlette GET answering the
  same bytes, same uvicorn flags, same wrk invocation; rounds alternate, medians.
- uncached: the overview and one-video reads computed from PostgreSQL (what a cache
  miss costs) at 10,000 videos and 1,000,000 sessions, rows made in the database with
  generate_series; p50/p99 over many reads.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection

from bench import loadgen, servers
from bench.env import BenchEnv
from dashboard.data.overview import overview
from dashboard.data.video import video

DASHBOARD_APP = "dashboard.app:app_from_env"
BARE_READ_APP = "bench.bare:create_read_app"
TOKEN = "bench-dashboard-token-0123456789abcdef"


@dataclass(frozen=True)
class DashboardConfig:
    videos: int = 10_000
    sessions: int = 1_000_000
    days: int = 30
    segments: int = 30
    duration_s: float = 10.0
    warmup_s: float = 2.0
    rounds: int = 3
    connections: int = 32
    overview_reads: int = 40
    video_reads: int = 400


# Zipf-like popularity: video k gets a share falling with k (power 2 of a uniform draw).
_FILL = """
INSERT INTO videos (video_id, title, course_id, course_title, duration_s, is_preview)
SELECT 'video-' || lpad(i::text, 5, '0'), 'Lesson ' || i, 'c-' || (i / 20), 'Course ' || (i / 20),
       120 + (i %% 900), i %% 50 = 0
FROM generate_series(0, %(videos)s - 1) AS i;

INSERT INTO progress_sessions (session_id, video_id, viewer_id, started_at, last_event_at,
                               is_preview, duration_s, position_s, max_position_s,
                               watch_seconds, unique_seconds, completion_pct, completed,
                               device_type, browser, os)
SELECT 's-' || n,
       'video-' || lpad(v::text, 5, '0'),
       'viewer-' || ((n * 7919) %% (%(sessions)s / 5)),
       now() - (n %% (%(days)s * 24)) * interval '1 hour',
       now() - (n %% (%(days)s * 24)) * interval '1 hour' + interval '5 minutes',
       v %% 50 = 0, 300, (n %% 300), (n %% 300), (n %% 400), (n %% 300),
       round(((n %% 300) / 3.0)::numeric, 2), n %% 3 = 0,
       (ARRAY['desktop', 'mobile', 'tablet'])[1 + n %% 3], 'Chrome', 'Linux'
FROM (SELECT n, least(floor(%(videos)s * random() ^ 2), %(videos)s - 1)::int AS v
      FROM generate_series(1, %(sessions)s::bigint) AS n) s;

INSERT INTO video_watch_progress (viewer_id, video_id, position_s, duration_s, progress_pct,
                                  completed, first_watched_at, last_watched_at)
SELECT DISTINCT ON (viewer_id, video_id) viewer_id, video_id, position_s, duration_s,
       least(100, round((100 * position_s / duration_s)::numeric, 2)), completed,
       started_at, last_event_at
FROM progress_sessions;

INSERT INTO video_metrics (video_id, views, unique_viewers, watch_seconds, plays, pauses, seeks,
                           watched_25_count, watched_50_count, watched_75_count,
                           watched_90_count, completions, unique_completers,
                           first_event_at, last_event_at)
SELECT video_id, count(*), count(DISTINCT viewer_id), sum(watch_seconds), count(*), count(*) / 2,
       count(*) / 4, count(*) * 3 / 4, count(*) / 2, count(*) / 3, count(*) / 4,
       count(*) FILTER (WHERE completed), count(DISTINCT viewer_id) FILTER (WHERE completed),
       min(started_at), max(last_event_at)
FROM progress_sessions GROUP BY video_id;

INSERT INTO video_metrics_daily (video_id, day, views, unique_viewers, watch_seconds,
                                 completions)
SELECT video_id, started_at::date, count(*), count(DISTINCT viewer_id), sum(watch_seconds),
       count(*) FILTER (WHERE completed)
FROM progress_sessions GROUP BY 1, 2;

INSERT INTO video_heatmap (video_id, segment_start, segment_end, views, watch_seconds, drop_offs)
SELECT m.video_id, k * 10, k * 10 + 10, greatest(1, m.views * (%(segments)s - k) / %(segments)s),
       greatest(1, m.views * (%(segments)s - k) / %(segments)s) * 11.0, m.views / %(segments)s
FROM video_metrics m, generate_series(0, %(segments)s - 1) AS k;
"""


def fill(env: BenchEnv, cfg: DashboardConfig) -> dict[str, Any]:
    """The tables at the configured size, written directly by SQL; returns counts and time."""
    started = time.monotonic()
    params = {
        "videos": cfg.videos,
        "sessions": cfg.sessions,
        "days": cfg.days,
        "segments": cfg.segments,
    }
    with env.connect(autocommit=True) as conn:
        for statement in _FILL.split(";\n\n"):
            conn.execute(statement.encode(), params)
        conn.execute("ANALYZE")
        counts = {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            for table in (
                "videos",
                "progress_sessions",
                "video_metrics",
                "video_metrics_daily",
                "video_heatmap",
                "video_watch_progress",
            )
        }
    return {"rows": counts, "fill_s": round(time.monotonic() - started, 1)}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _uncached(env: BenchEnv, cfg: DashboardConfig) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    day_from = today - timedelta(days=29)
    rng = random.Random(5)
    # Uniformly drawn videos, and the five most watched (the heaviest pages) every time.
    ids = [f"video-{rng.randrange(cfg.videos):05d}" for _ in range(cfg.video_reads)]
    ids[:5] = [f"video-{i:05d}" for i in range(5)]
    async with await AsyncConnection.connect(env.database_url, autocommit=True) as conn:
        await overview(conn, day_from, today)  # warm the buffers once
        overview_ms = []
        for _ in range(cfg.overview_reads):
            t = time.perf_counter()
            await overview(conn, day_from, today)
            overview_ms.append((time.perf_counter() - t) * 1000)
        video_ms = []
        for vid in ids:
            t = time.perf_counter()
            answer = await video(conn, vid, day_from, today, 10)
            video_ms.append((time.perf_counter() - t) * 1000)
            assert answer is not None
    return {
        "overview": {
            "reads": len(overview_ms),
            "p50_ms": round(statistics.median(overview_ms), 1),
            "p99_ms": round(_percentile(overview_ms, 0.99), 1),
        },
        "video": {
            "reads": len(video_ms),
            "p50_ms": round(statistics.median(video_ms), 1),
            "p99_ms": round(_percentile(video_ms, 0.99), 1),
            "max_ms": round(max(video_ms), 1),
        },
    }


def _cached(env: BenchEnv, cfg: DashboardConfig, workdir: Path) -> dict[str, Any]:
    """Requests/s of cached reads: the app as deployed (process memo on), the app
    answering from Redis on every request (memo off), and the bare GET of the same bytes."""
    settings = env.settings(env.stream("dashboard"), admin_tokens=TOKEN)
    redis_only = env.settings(env.stream("dashboard"), admin_tokens=TOKEN, cache_local_ms=0)
    out: dict[str, Any] = {}
    with (
        servers.uvicorn_server(DASHBOARD_APP, env.environ(settings)) as (memo_base, _),
        servers.uvicorn_server(DASHBOARD_APP, env.environ(redis_only)) as (redis_base, _),
    ):
        for name, path in (
            ("overview", "/api/v1/overview"),
            ("video", "/api/v1/videos/video-00001"),
        ):
            request = urllib.request.Request(
                memo_base + path, headers={"Authorization": f"Bearer {TOKEN}"}
            )
            with urllib.request.urlopen(request, timeout=60) as response:
                body = response.read()  # computes the answer and stores it in Redis
            body_file = workdir / f"{name}.json"
            body_file.write_bytes(body)
            bare_env = {**env.environ(settings), "BENCH_BARE_BODY": str(body_file)}
            with servers.uvicorn_server(BARE_READ_APP, bare_env) as (bare_base, _):
                urls = {
                    "bare": (bare_base + path, ""),
                    "dashboard": (memo_base + path, TOKEN),
                    "redis": (redis_base + path, TOKEN),
                }
                for url, token in urls.values():
                    loadgen.run_wrk_get(
                        url, token, duration_s=cfg.warmup_s, connections=cfg.connections
                    )
                rounds = []
                for i in range(cfg.rounds):
                    order = list(urls) if i % 2 == 0 else list(reversed(urls))
                    row = {}
                    for side in order:
                        url, token = urls[side]
                        row[side] = loadgen.run_wrk_get(
                            url, token, duration_s=cfg.duration_s, connections=cfg.connections
                        ).as_dict()
                    rounds.append(row)
            rps = {side: statistics.median(r[side]["rps"] for r in rounds) for side in urls}
            out[name] = {
                "dashboard_rps": rps["dashboard"],
                "redis_rps": rps["redis"],
                "bare_rps": rps["bare"],
                "ratio": rps["dashboard"] / rps["bare"] if rps["bare"] else 0.0,
                "redis_ratio": rps["redis"] / rps["bare"] if rps["bare"] else 0.0,
                "body_bytes": len(body),
                "errors": sum(r[s]["errors"] for r in rounds for s in urls),
                "rounds": rounds,
            }
    return out


def run(env: BenchEnv, cfg: DashboardConfig) -> dict[str, Any]:
    env.truncate_all()
    filled = fill(env, cfg)
    uncached = asyncio.run(_uncached(env, cfg))
    with tempfile.TemporaryDirectory(prefix="vidpulse-bench-") as tmp:
        cached = _cached(env, cfg, Path(tmp))
    env.truncate_all()
    return {
        "videos": cfg.videos,
        "sessions": cfg.sessions,
        "connections": cfg.connections,
        **filled,
        "uncached": uncached,
        "cached": cached,
    }
