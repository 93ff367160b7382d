"""Sessions as the aggregating processors bound them: credit, stored state, completions,
binding, event order and clean sums, through the ingest, Redis and PostgreSQL."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row
from starlette.testclient import TestClient

from processors.sessions import MAX_COVERAGE_RANGES
from tests.factories import make_event, run_burst
from vidpulse.events import now_ms
from vidpulse.settings import Settings

AGGREGATORS = ("heatmap", "progress", "metrics")
T0 = now_ms() - 3_600_000
LONG = 40_000.0  # a long recording, within the ingest's duration limit


def send(ingest: TestClient, *events: dict[str, Any]) -> None:
    response = ingest.post("/v1/events", json=list(events))
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == len(events), response.text


def run_all(settings: Settings, names: tuple[str, ...] = AGGREGATORS) -> None:
    for name in names:
        run_burst(settings, name)


def rows(db: psycopg.Connection[Any], query: str, *params: Any) -> list[dict[str, Any]]:
    with db.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def one(db: psycopg.Connection[Any], query: str, *params: Any) -> dict[str, Any]:
    found = rows(db, query, *params)
    assert len(found) == 1, found
    return found[0]


def test_one_small_request_writes_a_bounded_number_of_heatmap_rows(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """20 new sessions each claiming a whole 12-hour video are credited 30 s each, everywhere."""
    events = [
        make_event(
            "progress",
            video_id=f"v{i}",
            session_id=f"s{i}",
            ts=T0,
            duration_s=43_200.0,
            position_s=43_200.0,
            played=[[0, 43_200]],
        )
        for i in range(20)
    ]
    assert len(orjson.dumps(events)) < 6000
    send(ingest, *events)
    run_all(settings)
    heat = one(db, "SELECT count(*) AS n, sum(watch_seconds) AS seconds FROM video_heatmap")
    # 30 s fill 3 segments of 10 s; the drop-off adds the last segment.
    assert heat == {"n": 20 * 4, "seconds": Decimal(20 * 30)}
    for row in rows(db, "SELECT watch_seconds, unique_seconds FROM video_sessions"):
        assert row == {"watch_seconds": Decimal(30), "unique_seconds": Decimal(30)}
    assert one(db, "SELECT sum(watch_seconds) AS s FROM video_metrics")["s"] == Decimal(600)


def test_a_session_is_credited_16_times_its_span_plus_30_seconds(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """Two beacons 10 s apart claiming 500 s get 190 s in heatmap, session and metrics alike."""
    send(
        ingest,
        make_event("progress", ts=T0, duration_s=LONG, played=[[0, 100]], position_s=100.0),
        make_event(
            "progress", ts=T0 + 10_000, duration_s=LONG, played=[[100, 500]], position_s=500.0
        ),
    )
    run_all(settings)
    heat = one(db, "SELECT sum(watch_seconds) AS s, max(segment_end) AS e FROM video_heatmap")
    assert heat == {"s": Decimal(190), "e": 510}  # the drop-off stays at position 500
    viewed = rows(db, "SELECT segment_start FROM video_heatmap WHERE views > 0 ORDER BY 1")
    assert [r["segment_start"] for r in viewed] == [0, 10, 20, *range(100, 260, 10)]
    session = one(db, "SELECT watch_seconds, unique_seconds, max_position_s FROM video_sessions")
    assert session == {
        "watch_seconds": Decimal(190),
        "unique_seconds": Decimal(190),
        "max_position_s": 500.0,
    }
    assert one(db, "SELECT watch_seconds FROM video_metrics") == {"watch_seconds": Decimal(190)}


def stored_ranges(db: psycopg.Connection[Any], session_id: str) -> int:
    """Ranges the heatmap and progress processors keep for the session, all tables together."""
    row = one(
        db,
        "SELECT coalesce((SELECT array_length(coverage, 1) / 2 FROM heatmap_sessions"
        "                  WHERE session_id = %s), 0)"
        "     + coalesce((SELECT array_length(coverage, 1) / 2 FROM progress_sessions"
        "                  WHERE session_id = %s), 0)"
        "     + coalesce((SELECT sum(array_length(ranges, 1) / 2) FROM progress_played"
        "                  WHERE session_id = %s), 0) AS n",
        session_id,
        session_id,
        session_id,
    )
    return int(row["n"])


def fill(ingest: TestClient, session_id: str, ranges: int) -> None:
    """A completed session of `ranges` disjoint 0.1-s ranges, 100 per beacon, in 8 requests."""
    beacons = []
    for b in range(ranges // 100):
        ks = range(b * 100, b * 100 + 100)
        played = [[round(0.2 * k, 1), round(0.2 * k + 0.1, 1)] for k in ks]
        beacons.append(
            make_event(
                "progress",
                session_id=session_id,
                viewer_id=session_id,
                ts=T0 + 1000 * (b + 1),
                duration_s=LONG,
                position_s=played[-1][1],
                played=played,
            )
        )
    start = make_event("session_start", session_id=session_id, viewer_id=session_id, ts=T0)
    done = make_event(
        "complete",
        session_id=session_id,
        viewer_id=session_id,
        ts=T0 + 1000 * (len(beacons) + 1),
        duration_s=LONG,
    )
    requests = [[start, *beacons[i::8]] if i == 0 else beacons[i::8] for i in range(8)]
    requests[-1].append(done)
    for chunk in requests:
        send(ingest, *chunk)


def test_late_events_cost_no_more_after_100000_ranges_than_after_1000(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """A session's stored ranges stay bounded, so a late event reads as much at 100k as at 1k."""
    figures = {}
    for n in (1_000, 100_000):
        session_id = f"long-{n}"
        fill(ingest, session_id, n)
        run_all(settings, ("heatmap", "progress"))
        late = make_event(
            "progress",
            session_id=session_id,
            viewer_id=session_id,
            ts=T0 + 500,
            duration_s=LONG,
            position_s=1.0,
            played=[[0.1, 0.2]],
        )
        send(ingest, late)
        started = time.perf_counter()
        run_all(settings, ("heatmap", "progress"))
        figures[n] = (stored_ranges(db, session_id), time.perf_counter() - started)
    print(
        "\nranges a late event of the session loads, and its batch's wall time: "
        + ", ".join(f"{n:,} ranges: {r:,} ({s * 1000:.0f} ms)" for n, (r, s) in figures.items())
    )
    bound = 2 * MAX_COVERAGE_RANGES + 2048
    assert figures[1_000][0] <= bound
    assert figures[100_000][0] <= bound
    assert figures[100_000][0] <= 4 * figures[1_000][0]
    for session_id in ("long-1000", "long-100000"):
        row = one(
            db,
            "SELECT completed, watch_seconds FROM video_sessions WHERE session_id = %s",
            session_id,
        )
        assert row["completed"] is True


def test_forged_completions_without_a_view_do_not_count(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """100 complete events of made-up sessions leave 1 completion for 1 view (100 %)."""
    send(
        ingest,
        make_event("session_start", ts=T0),
        make_event("complete", ts=T0 + 60_000),
    )
    send(
        ingest,
        *[
            make_event("complete", session_id=f"fake-{i}", viewer_id=f"nobody-{i}", ts=T0)
            for i in range(100)
        ],
    )
    run_burst(settings, "metrics")
    summary = one(
        db,
        "SELECT views, completions, unique_completers, completion_rate_pct"
        " FROM video_analytics_summary",
    )
    assert summary == {
        "views": 1,
        "completions": 1,
        "unique_completers": 1,
        "completion_rate_pct": Decimal("100.00"),
    }
    daily = one(db, "SELECT completions, unique_completers FROM video_metrics_daily")
    assert daily == {"completions": 1, "unique_completers": 1}


def test_a_completion_counts_when_its_session_start_arrives_later(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """complete first, session_start in a later batch: the session then counts, on its day."""
    send(ingest, make_event("complete", ts=T0 + 60_000))
    run_burst(settings, "metrics")
    assert one(db, "SELECT completions FROM video_metrics") == {"completions": 0}
    send(ingest, make_event("session_start", ts=T0))
    run_burst(settings, "metrics")
    assert one(db, "SELECT completions, unique_completers FROM video_metrics") == {
        "completions": 1,
        "unique_completers": 1,
    }
    assert one(db, "SELECT sum(completions) AS c FROM video_metrics_daily") == {"c": 1}


def snapshot(db: psycopg.Connection[Any]) -> dict[str, list[dict[str, Any]]]:
    """Every aggregate row the processors wrote, in a stable order."""
    return {
        "heatmap": rows(db, "SELECT * FROM video_heatmap ORDER BY 1, 2"),
        "sessions": rows(db, "SELECT * FROM video_sessions ORDER BY 1"),
        "progress": rows(db, "SELECT * FROM video_watch_progress ORDER BY 1, 2"),
        "metrics": rows(db, "SELECT * FROM video_metrics ORDER BY 1"),
        "daily": rows(db, "SELECT * FROM video_metrics_daily ORDER BY 1, 2"),
    }


def test_a_session_cannot_be_taken_over_by_another_video_or_viewer(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """Events naming the victim's session with another video or viewer change none of its rows."""
    send(
        ingest,
        make_event("session_start", session_id="victim", ts=T0),
        make_event(
            "progress", session_id="victim", ts=T0 + 15_000, played=[[0, 15]], position_s=15.0
        ),
    )
    run_all(settings)
    before = snapshot(db)
    forged = [
        make_event("session_start", session_id="victim", video_id="video-2", ts=T0 - 1000),
        make_event(
            "progress",
            session_id="victim",
            viewer_id="thief",
            ts=T0 + 16_000,
            played=[[15, 99]],
            position_s=99.0,
        ),
        make_event(
            "complete",
            session_id="victim",
            video_id="video-2",
            viewer_id="thief",
            ts=T0 + 17_000,
            position_s=100.0,
        ),
    ]
    send(ingest, *forged)
    run_all(settings)
    assert snapshot(db) == before
    refused = rows(db, "SELECT processor, reason, events FROM processor_refusals ORDER BY 1")
    assert refused == [
        {"processor": name, "reason": "session_taken", "events": len(forged)}
        for name in sorted(AGGREGATORS)
    ]


def test_a_forged_future_ts_does_not_outrank_the_viewers_own_later_events(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """A beacon dated 299 s ahead counts as received; the viewer's next beacon moves the resume."""
    now = now_ms()
    send(ingest, make_event("progress", session_id="mine", ts=now - 30_000, position_s=10.0))
    send(
        ingest,
        make_event("session_end", session_id="forged", ts=now + 299_000, position_s=95.0),
    )
    run_burst(settings, "progress")
    send(ingest, make_event("pause", session_id="mine", ts=now_ms() + 1000, position_s=42.0))
    run_burst(settings, "progress")
    resume = one(db, "SELECT position_s FROM video_watch_progress")
    assert resume == {"position_s": 42.0}


def test_events_with_equal_ts_follow_their_order_in_the_request(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """Of two events with one ts, the later one in the request is the latest, every time."""
    for i in range(6):
        first, last = (10.0, 20.0) if i % 2 else (20.0, 10.0)
        send(
            ingest,
            make_event("pause", session_id=f"s{i}", viewer_id=f"u{i}", ts=T0, position_s=first),
            make_event("seek", session_id=f"s{i}", viewer_id=f"u{i}", ts=T0, position_s=last),
        )
    run_all(settings, ("heatmap", "progress"))
    got = {r["session_id"]: r["position_s"] for r in rows(db, "SELECT * FROM video_sessions")}
    assert got == {f"s{i}": 20.0 if i % 2 else 10.0 for i in range(6)}
    drops = {r["segment_start"]: r["drop_offs"] for r in rows(db, "SELECT * FROM video_heatmap")}
    assert drops == {10: 3, 20: 3}


def test_stored_sums_of_seconds_are_whole_milliseconds(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """0.1 + 0.458 s is stored as 0.558 in the heatmap, the session and the metrics."""
    send(
        ingest,
        make_event("session_start", ts=T0),
        make_event("progress", ts=T0 + 15_000, played=[[0, 0.1], [0.2, 0.658]], position_s=0.7),
    )
    run_all(settings)
    assert one(db, "SELECT watch_seconds FROM video_heatmap") == {"watch_seconds": Decimal("0.558")}
    assert one(db, "SELECT watch_seconds, unique_seconds FROM video_sessions") == {
        "watch_seconds": Decimal("0.558"),
        "unique_seconds": Decimal("0.558"),
    }
    for table in ("video_metrics", "video_metrics_daily"):
        assert one(db, f"SELECT watch_seconds FROM {table}") == {"watch_seconds": Decimal("0.558")}
