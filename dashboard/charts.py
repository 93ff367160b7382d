"""What each page draws and tabulates, made from the API's answers (`dashboard/data/`).

Every function here is pure: an answer in, the template's context out. A chart's data
is a plain dict that `static/dashboard.js` reads from the page's JSON data block; its
table rows carry the same numbers.
"""

from __future__ import annotations

from typing import Any

from dashboard import formats

DEVICE_LABELS = {
    "desktop": "Desktop",
    "mobile": "Mobile",
    "tablet": "Tablet",
    "tv": "TV",
    "bot": "Bot",
    "other": "Other",
    "unknown": "Unknown",
}
BUCKET_COLORS = ["#15803d", "#3657c9", "#c2410c"]


def stat(key: str, label: str, value: str, note: str = "") -> dict[str, str]:
    """One headline number, already formatted."""
    return {"key": key, "label": label, "value": value, "note": note}


def share(part: float, whole: float) -> float | None:
    return 100.0 * part / whole if whole else None


def daily(days: list[dict[str, Any]], day_from: str, day_to: str) -> dict[str, Any]:
    """A daily series: chart data (every day; watch time in hours), the range in words, and
    table rows (the days with any activity, so an empty month is not a page of zeros).
    """
    return {
        "from": day_from,
        "to": day_to,
        "range": f"{day_from} to {day_to} (UTC)",
        "rows": [d for d in days if d["views"] or d["watch_seconds"] or d["completions"]],
        "chart": {
            "labels": [d["day"][5:] for d in days],
            "views": [d["views"] for d in days],
            "completions": [d["completions"] for d in days],
            "watch_hours": [round(d["watch_seconds"] / 3600, 3) for d in days],
        },
    }


def overview(answer: dict[str, Any], popular: dict[str, Any]) -> dict[str, Any]:
    """The overview page: headline numbers, the daily series, completion bands, top videos."""
    buckets = answer["completion_buckets"]
    bands = [
        ("Above 75%", buckets["above_75"]),
        (f"50{formats.EN_DASH}75%", buckets["from_50_to_75"]),
        ("Below 50%", buckets["below_50"]),
    ]
    rated = sum(count for _, count in bands)
    catalogued = answer.get("catalogued_videos")
    return {
        "section": "overview",
        "has_data": bool(answer["videos"]),
        "headline": [
            stat(
                "videos",
                "Videos",
                formats.num(answer["videos"]),
                f"{formats.num(catalogued)} in the catalogue" if catalogued is not None else "",
            ),
            stat("views", "Views", formats.num(answer["views"])),
            stat("unique_viewers", "Unique viewers", formats.num(answer["unique_viewers"])),
            stat("watch_hours", "Watch time", formats.hours(answer["watch_seconds"])),
            stat("completions", "Completions", formats.num(answer["completions"])),
            stat(
                "avg_completion_rate",
                "Avg completion rate",
                formats.pct(answer["avg_completion_rate_pct"]),
                "mean over videos",
            ),
        ],
        "daily": daily(answer["daily"], answer["from"], answer["to"]),
        "buckets": {
            "rows": [
                {"label": label, "count": count, "share": share(count, rated)}
                for label, count in bands
            ],
            "chart": {
                "labels": [label for label, _ in bands],
                "values": [count for _, count in bands],
                "colors": BUCKET_COLORS,
            },
        },
        "popular": popular["rows"],
    }


def video(answer: dict[str, Any], segment_seconds: int) -> dict[str, Any]:
    """The one-video page: retention per segment, key moments, funnel, devices, daily."""
    summary = answer["summary"]
    views = summary["views"]
    duration = summary.get("duration_s")

    def span(segment: dict[str, Any]) -> str:
        # The last segment of a video ends with the video, not at a whole segment.
        end = min(segment["end_s"], duration) if duration else segment["end_s"]
        return formats.span(segment["start_s"], max(end, segment["start_s"]))

    segments = [{**s, "range": span(s)} for s in answer["segments"]]
    key_moments = {
        kind: [{**s, "range": span(s)} for s in found]
        for kind, found in answer["key_moments"].items()
    }
    said = moments(key_moments, segments, views)
    starts = [s["start_s"] for s in segments]
    # The segments the key moments name, marked on the chart too.
    marks = {
        m["mark"]: starts.index(m["start_s"])
        for m in said
        if m.get("mark") and m["start_s"] in starts
    }
    course = summary.get("course_title") or summary.get("course_id")
    return {
        "section": "videos",
        "name": summary.get("title") or answer["video_id"],
        "video": {
            "video_id": answer["video_id"],
            "is_preview": summary.get("is_preview"),
            "course": course,
            "course_id": summary.get("course_id"),
            "duration_s": summary.get("duration_s"),
            "last_event_at": summary.get("last_event_at"),
        },
        "segment_seconds": segment_seconds,
        "headline": [
            stat("views", "Views", formats.num(views)),
            stat("unique_viewers", "Unique viewers", formats.num(summary["unique_viewers"])),
            stat("watch_time", "Watch time", formats.clock(summary["watch_seconds"])),
            stat(
                "avg_watch",
                "Avg watch per view",
                formats.clock(summary.get("avg_watch_seconds_per_view")),
            ),
            stat(
                "completion_rate",
                "Completion rate",
                formats.pct(summary.get("completion_rate_pct")),
                f"{formats.num(summary['completions'])} completions",
            ),
            stat(
                "avg_completion",
                "Avg completion",
                formats.pct(summary.get("avg_completion_pct")),
                "share of the video a session saw",
            ),
        ],
        "moments": said,
        "segments": {
            "rows": segments if any(s["views"] for s in segments) else [],
            "chart": {
                "labels": [formats.clock(s["start_s"]) for s in segments],
                "ranges": [s["range"] for s in segments],
                "retention": [s["retention_pct"] or 0 for s in segments],
                "dropoff": [
                    round(100.0 * s["drop_offs"] / views, 2) if views else 0 for s in segments
                ],
                "rewatch": [s["rewatch"] or 0 for s in segments],
                "marks": marks,
            },
        },
        "funnel": funnel(answer["funnel"], summary["unique_viewers"]),
        "devices": devices(answer["devices"]),
        "daily": daily(answer["daily"], answer["from"], answer["to"]),
    }


def moments(
    key_moments: dict[str, list[dict[str, Any]]],
    segments: list[dict[str, Any]],
    views: int,
) -> list[dict[str, Any]]:
    """The key moments in words: where views rewatch most, where most of them stop, and
    where half of the views are gone."""
    out: list[dict[str, Any]] = []
    rewatched = [s for s in key_moments.get("most_rewatched", []) if (s.get("rewatch") or 0) > 1]
    if rewatched:
        top, *more = rewatched
        out.append(
            {
                "kind": "rewatch",
                "mark": "rewatch",
                "start_s": top["start_s"],
                "text": "Most rewatched:",
                "range": top["range"],
                "detail": f"played {formats.times(top['rewatch'])} per view there" + _next(more),
            }
        )
    # Sessions that watched to the end stop in the last segment: that is no drop-off.
    last = segments[-1]["start_s"] if segments else None
    dropped = [
        s
        for s in key_moments.get("most_drop_offs", [])
        if s.get("drop_offs") and s["start_s"] != last
    ]
    if dropped:
        top, *more = dropped
        left = top["drop_offs"]
        out.append(
            {
                "kind": "drop",
                "mark": "drop",
                "start_s": top["start_s"],
                "text": "Biggest drop-off:",
                "range": top["range"],
                "detail": f"{formats.num(left)} session{'' if left == 1 else 's'} stopped there, "
                f"{formats.pct(share(left, views))} of views" + _next(more),
            }
        )
    half = next((s for s in segments if (s["retention_pct"] or 0) < 50), None)
    if half is not None and views:
        out.append(
            {
                "kind": "drop",
                "text": "Half of the views are gone by",
                "range": half["range"],
                "detail": f"{formats.pct(half['retention_pct'])} of views reach it",
            }
        )
    return out


def _next(more: list[dict[str, Any]]) -> str:
    return f"; next: {', '.join(s['range'] for s in more)}" if more else ""


def funnel(steps: list[dict[str, Any]], viewers: int) -> dict[str, Any]:
    rows = [
        {
            "label": f"{step['milestone']}% of the video",
            "count": step["viewers"],
            "share": step["pct_of_viewers"],
        }
        for step in steps
    ]
    return {
        "viewers": viewers,
        "rows": rows,
        "chart": {
            "labels": [f"{step['milestone']}%" for step in steps],
            "pct": [step["pct_of_viewers"] or 0 for step in steps],
            "counts": [step["viewers"] for step in steps],
        },
    }


def devices(split: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [
        {
            "label": DEVICE_LABELS.get(d["device_type"], d["device_type"].capitalize()),
            "count": d["sessions"],
            "share": d["pct"],
        }
        for d in split
    ]
    return {
        "rows": rows,
        "chart": {"labels": [r["label"] for r in rows], "values": [r["count"] for r in rows]},
    }


def pipeline(report: dict[str, Any]) -> dict[str, Any]:
    """The pipeline page: per consumer group its lag, pending entries and dead letters."""
    groups = [{**g, "state": _group_state(g)} for g in report["groups"]]
    behind = [g["group"] for g in groups if g["state"] == "behind"]
    return {
        "section": "pipeline",
        "report": report,
        "groups": groups,
        "headline": [
            stat("length", "Stream entries", formats.num(report["length"])),
            stat("groups", "Processor groups", formats.num(len(groups))),
            stat(
                "behind",
                "Groups behind",
                formats.num(len(behind)),
                ", ".join(behind) if behind else "all caught up",
            ),
            stat("dead_letters", "Dead letters", formats.num(report["dead_letters"])),
        ],
        "backlog": any(g["lag"] or g["pending"] or g["dead_letters"] for g in groups),
        "chart_data": {
            "labels": [g["group"] for g in groups],
            "lag": [g["lag"] or 0 for g in groups],
            "pending": [g["pending"] for g in groups],
            "dead": [g["dead_letters"] for g in groups],
        },
    }


def _group_state(group: dict[str, Any]) -> str:
    """'behind' with entries unread or unacknowledged, 'caught up' without; Redis cannot
    always count the unread ones (lag None, after entries were deleted): 'lag unknown'."""
    if group["pending"] or group["lag"]:
        return "behind"
    return "caught up" if group["lag"] is not None else "lag unknown"
