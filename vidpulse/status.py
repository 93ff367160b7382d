"""What `vidpulse status` reports: per consumer group, how far behind it is."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import redis
from redis.exceptions import ResponseError

from vidpulse.keys import Keys, text

_DLQ_SCAN_LIMIT = 100_000


def gather(client: redis.Redis, keys: Keys) -> dict[str, Any]:
    """Stream length, dead letters, and per group: consumers, pending, lag, oldest pending age.

    With partitions, the figures are summed over them (the oldest pending age is the
    oldest of any), and `partitions` holds each partition's own report.
    """
    if keys.partitions == 1:
        return _gather_one(client, keys)
    parts = [_gather_one(client, keys.partition(p)) for p in range(keys.partitions)]
    groups: dict[str, dict[str, Any]] = {}
    for part in parts:
        for g in part["groups"]:
            total = groups.setdefault(
                g["group"],
                {
                    "group": g["group"],
                    "consumers": 0,
                    "pending": 0,
                    "lag": 0,
                    "oldest_pending_age_s": None,
                    "dead_letters": 0,
                    "last_delivered_id": None,
                },
            )
            total["consumers"] = max(total["consumers"], g["consumers"])
            total["pending"] += g["pending"]
            total["dead_letters"] += g["dead_letters"]
            total["lag"] = (
                None if total["lag"] is None or g["lag"] is None else total["lag"] + g["lag"]
            )
            ages = [
                a
                for a in (total["oldest_pending_age_s"], g["oldest_pending_age_s"])
                if a is not None
            ]
            total["oldest_pending_age_s"] = max(ages) if ages else None
    return {
        "stream": keys.stream,
        "length": sum(p["length"] for p in parts),
        "dead_letters": sum(p["dead_letters"] for p in parts),
        "groups": sorted(groups.values(), key=lambda r: r["group"]),
        "partitions": parts,
    }


def _gather_one(client: redis.Redis, keys: Keys) -> dict[str, Any]:
    now_ms = int(time.time() * 1000)
    dead_by_group: Counter[str] = Counter()
    dead: Any = client.xrange(keys.dlq, count=_DLQ_SCAN_LIMIT)
    for _, fields in dead:
        dead_by_group[text(fields.get(b"group", b"?"))] += 1
    try:
        groups = client.xinfo_groups(keys.stream)
        length = int(client.xlen(keys.stream))
    except ResponseError:
        groups, length = [], 0
    out: list[dict[str, Any]] = []
    for g in groups:
        name = text(g["name"])
        pending = int(g["pending"])
        oldest_age_s: float | None = None
        if pending:
            # Read apart from XINFO: the group may have acked them all in between.
            summary = client.xpending(keys.stream, name)
            pending = int(summary["pending"])
            if pending and summary["min"] is not None:
                oldest_ms = int(text(summary["min"]).split("-")[0])
                oldest_age_s = round(max(0, now_ms - oldest_ms) / 1000, 1)
        lag = g.get("lag")
        out.append(
            {
                "group": name,
                "consumers": int(g["consumers"]),
                "pending": pending,
                "lag": int(lag) if lag is not None else None,
                "oldest_pending_age_s": oldest_age_s,
                "dead_letters": dead_by_group.pop(name, 0),
                "last_delivered_id": text(g["last-delivered-id"]),
            }
        )
    return {
        "stream": keys.stream,
        "length": length,
        "dead_letters": int(client.xlen(keys.dlq)),
        "groups": sorted(out, key=lambda r: r["group"]),
    }


def render(report: dict[str, Any]) -> str:
    """A plain-text table for a terminal."""
    where = "each partition's :dlq" if report.get("partitions") else f"{report['stream']}:dlq"
    lines = [
        f"stream {report['stream']}: {report['length']} entries, "
        f"{report['dead_letters']} dead letters ({where})"
    ]
    if not report["groups"]:
        lines.append("no consumer groups yet: run `vidpulse migrate` or start a processor")
        return "\n".join(lines)
    lines += _table(report["groups"])
    for p, part in enumerate(report.get("partitions", [])):
        lines.append("")
        lines.append(
            f"partition {p} {part['stream']}: {part['length']} entries, "
            f"{part['dead_letters']} dead letters"
        )
        lines += _table(part["groups"])
    return "\n".join(lines)


def _table(groups: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    header = ("group", "consumers", "pending", "lag", "oldest pending", "dead letters")
    rows = [
        (
            g["group"],
            str(g["consumers"]),
            str(g["pending"]),
            "?" if g["lag"] is None else str(g["lag"]),
            "-" if g["oldest_pending_age_s"] is None else f"{g['oldest_pending_age_s']}s",
            str(g["dead_letters"]),
        )
        for g in groups
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for r in (header, *rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return lines
