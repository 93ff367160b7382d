"""Interval arithmetic on media seconds: played ranges, coverage, heatmap segments.

A range is a `(start, end)` pair of seconds with start < end, half-open in spirit:
two ranges that touch (`(0, 5)` and `(5, 9)`) merge into one, and a range overlaps a
segment only by a positive length. "Merged" ranges are sorted, disjoint and do not
touch. Endpoints are never computed, only compared and copied, so merging the same
ranges in any order gives bit-identical results.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence

Range = tuple[float, float]


def clip(ranges: Iterable[Sequence[float]], duration: float) -> list[Range]:
    """The ranges cut to [0, duration]; ranges left empty are dropped."""
    out: list[Range] = []
    for start, end in ranges:
        a, b = max(start, 0.0), min(end, duration)
        if a < b:
            out.append((a, b))
    return out


def merge(ranges: Iterable[Range]) -> list[Range]:
    """The union of `ranges` as sorted, disjoint, non-touching ranges."""
    out: list[Range] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def played(ranges: Iterable[Sequence[float]] | None, duration: float | None) -> list[Range]:
    """One event's played ranges as docs/tables.md counts them: clipped to its duration, merged."""
    if not ranges or duration is None:
        return []
    return merge(clip(ranges, duration))


def union(a: Sequence[Range], b: Iterable[Range]) -> list[Range]:
    """The union of merged ranges `a` with any ranges `b`."""
    return merge([*a, *b])


def total(ranges: Iterable[Range]) -> float:
    """Summed length; of merged ranges, the seconds covered."""
    return sum((end - start for start, end in ranges), 0.0)


def overlap(merged: Sequence[Range], lo: float, hi: float) -> float:
    """Seconds of merged ranges inside [lo, hi)."""
    i = max(0, bisect.bisect_right(merged, (lo, math.inf)) - 1)
    seconds = 0.0
    while i < len(merged) and merged[i][0] < hi:
        start, end = merged[i]
        piece = min(end, hi) - max(start, lo)
        if piece > 0:
            seconds += piece
        i += 1
    return seconds


def segment_seconds(ranges: Iterable[Range], size: int) -> dict[int, float]:
    """Seconds of `ranges` inside each segment k = [k·size, (k+1)·size) they overlap.

    Overlapping ranges count twice; pass merged ranges to count each second once.
    """
    out: dict[int, float] = {}
    for start, end in ranges:
        for k in range(math.floor(start / size), math.ceil(end / size)):
            piece = min(end, (k + 1) * size) - max(start, k * size)
            if piece > 0:
                out[k] = out.get(k, 0.0) + piece
    return out


def segments(ranges: Iterable[Range], size: int) -> set[int]:
    """The segments the ranges overlap by more than 0 seconds."""
    return set(segment_seconds(ranges, size))


def take(merged: Sequence[Range], seconds: float) -> list[Range]:
    """The first `seconds` of merged ranges, in media order (all of them if they are shorter)."""
    out: list[Range] = []
    left = seconds
    for start, end in merged:
        if left <= 0:
            break
        if end - start <= left:
            out.append((start, end))
            left -= end - start
        else:
            out.append((start, start + left))
            break
    return out


def coarsen(merged: list[Range], limit: int) -> list[Range]:
    """Merged ranges cut down to at most `limit` ranges by filling their narrowest gaps.

    Unchanged when there are `limit` ranges or fewer; otherwise the result covers a
    little more than the input (the gaps filled), never less. Ties between gaps of one
    width go to the leftmost.
    """
    if len(merged) <= limit:
        return merged
    gaps = sorted(range(len(merged) - 1), key=lambda i: (merged[i + 1][0] - merged[i][1], i))
    filled = set(gaps[: len(merged) - limit])
    out: list[Range] = []
    start = merged[0][0]
    for i, (_, end) in enumerate(merged):
        if i not in filled:
            out.append((start, end))
            if i + 1 < len(merged):
                start = merged[i + 1][0]
    return out


def flat(ranges: Sequence[Range]) -> list[float]:
    """[(a, b), (c, d)] as [a, b, c, d], the form stored in float8[] columns."""
    return [x for r in ranges for x in r]


def unflat(values: Sequence[float] | None) -> list[Range]:
    """The inverse of `flat`."""
    if not values:
        return []
    return [(values[i], values[i + 1]) for i in range(0, len(values), 2)]
