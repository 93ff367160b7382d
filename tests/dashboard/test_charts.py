"""What the pages write and draw from an answer: number formats, key moments, states."""

from __future__ import annotations

from typing import Any

from dashboard import charts, formats


def test_numbers_are_written_for_people() -> None:
    """Thousands separators, m:ss under an hour and h:mm:ss above, one-decimal shares."""
    assert formats.num(1234567) == "1,234,567"
    assert formats.num(None) == "\u2013"
    assert formats.clock(0) == "0:00"
    assert formats.clock(130.4) == "2:10"
    assert formats.clock(3600) == "1:00:00"
    assert formats.clock(400_000) == "111:06:40"
    assert formats.clock(float("nan")) == "\u2013"
    assert formats.span(130, 140) == "2:10\u20132:20"
    assert formats.pct(62.456) == "62.5%"
    assert formats.times(1.256) == "1.26\u00d7"
    assert formats.hours(5400) == "1.50 h"
    assert formats.hours(36_000 * 1000) == "10,000.0 h"
    assert formats.when("2026-03-01T23:30:00-02:00") == "2026-03-02 01:30"
    assert formats.when("garbage") == "garbage"


def segment(start: float, views: int, drop_offs: int, rewatch: float | None) -> dict[str, Any]:
    return {
        "start_s": start,
        "end_s": start + 10,
        "views": views,
        "watch_seconds": 0.0,
        "drop_offs": drop_offs,
        "retention_pct": 100.0 * views / 20,
        "rewatch": rewatch,
    }


def answer(segments: list[dict[str, Any]], duration_s: float) -> dict[str, Any]:
    by_drop = sorted(segments, key=lambda s: (-s["drop_offs"], s["start_s"]))
    by_rewatch = sorted(
        (s for s in segments if s["rewatch"] is not None), key=lambda s: -s["rewatch"]
    )
    return {
        "video_id": "v1",
        "summary": {
            "title": None,
            "views": 20,
            "unique_viewers": 10,
            "watch_seconds": 100.0,
            "completions": 4,
            "duration_s": duration_s,
        },
        "segments": segments,
        "key_moments": {
            "most_rewatched": by_rewatch[:3],
            "most_drop_offs": [s for s in by_drop if s["drop_offs"]][:3],
        },
        "funnel": [],
        "devices": [],
        "daily": [],
        "from": "2026-01-01",
        "to": "2026-01-30",
    }


def test_key_moments_name_rewatch_the_drop_off_before_the_end_and_half_gone() -> None:
    """Finishers stopping in the last segment are no drop-off; a rewatch of 1x or less is
    not called out; the last segment's range ends with the video."""
    segments = [
        segment(0, 20, 1, 1.0),
        segment(10, 16, 5, 1.4),
        segment(20, 9, 2, 1.1),
        segment(30, 8, 8, 0.2),
    ]
    page = charts.video(answer(segments, duration_s=32), segment_seconds=10)
    moments = [(m["text"], m["range"]) for m in page["moments"]]
    assert moments == [
        ("Most rewatched:", "0:10\u20130:20"),
        ("Biggest drop-off:", "0:10\u20130:20"),
        ("Half of the views are gone by", "0:20\u20130:30"),
    ]
    assert "next: 0:20\u20130:30" in page["moments"][0]["detail"]
    assert "25.0% of views" in page["moments"][1]["detail"]
    assert page["segments"]["rows"][-1]["range"] == "0:30\u20130:32"
    assert page["segments"]["chart"]["dropoff"] == [5.0, 25.0, 10.0, 40.0]
    assert page["segments"]["chart"]["marks"] == {"rewatch": 1, "drop": 1}
    assert page["name"] == "v1"


def test_a_video_nobody_rewatched_or_left_early_has_no_such_moments() -> None:
    """Without rewatch above 1x or a drop-off before the end, only what is true is said."""
    segments = [segment(0, 20, 0, 1.0), segment(10, 20, 20, 1.0)]
    page = charts.video(answer(segments, duration_s=20), segment_seconds=10)
    assert page["moments"] == []


def test_pipeline_groups_are_caught_up_behind_or_of_unknown_lag() -> None:
    """Lag or pending entries: behind; none: caught up; lag Redis cannot count: unknown."""

    def group(name: str, pending: int, lag: int | None) -> dict[str, Any]:
        return {
            "group": name,
            "consumers": 1,
            "pending": pending,
            "lag": lag,
            "oldest_pending_age_s": None,
            "dead_letters": 0,
            "last_delivered_id": "0-0",
        }

    report = {
        "stream": "s",
        "length": 9,
        "dead_letters": 0,
        "groups": [group("a", 0, 0), group("b", 2, 0), group("c", 0, 7), group("d", 0, None)],
    }
    page = charts.pipeline(report)
    assert [g["state"] for g in page["groups"]] == [
        "caught up",
        "behind",
        "behind",
        "lag unknown",
    ]
    assert page["backlog"] is True
    assert page["headline"][2]["note"] == "b, c"
