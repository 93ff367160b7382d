"""Property tests of the interval arithmetic, against a brute-force model on a fine grid."""

from __future__ import annotations

import itertools
import math

from hypothesis import given
from hypothesis import strategies as st

from processors import intervals
from processors.intervals import Range

# Endpoints on a 0.25 s grid: exact in binary, so the grid model below is exact too.
GRID = 4
points = st.integers(min_value=0, max_value=60 * GRID).map(lambda n: n / GRID)


@st.composite
def ranges(draw: st.DrawFn, max_size: int = 12) -> list[Range]:
    out: list[Range] = []
    for a, b in draw(st.lists(st.tuples(points, points), max_size=max_size)):
        if a != b:
            out.append((min(a, b), max(a, b)))
    return out


def cells(rs: list[Range]) -> set[int]:
    """The grid cells [i/GRID, (i+1)/GRID) covered by the ranges."""
    return {i for a, b in rs for i in range(round(a * GRID), round(b * GRID))}


@given(ranges())
def test_merge_is_sorted_disjoint_and_covers_the_same_seconds(rs: list[Range]) -> None:
    """merge keeps exactly the covered seconds, as sorted ranges that neither overlap nor touch."""
    merged = intervals.merge(rs)
    assert cells(merged) == cells(rs)
    for (_, end), (start, _) in itertools.pairwise(merged):
        assert end < start
    assert all(a < b for a, b in merged)
    assert intervals.total(merged) == len(cells(rs)) / GRID


@given(ranges(), ranges())
def test_union_is_order_independent(a: list[Range], b: list[Range]) -> None:
    """Merging the same ranges in any grouping or order gives identical ranges."""
    left = intervals.union(intervals.merge(a), b)
    right = intervals.union(intervals.merge(b), a)
    assert left == right == intervals.merge(a + b)
    assert intervals.merge(list(reversed(a + b))) == left


@given(ranges(), points)
def test_clip_keeps_only_seconds_inside_the_duration(rs: list[Range], duration: float) -> None:
    """clip drops whatever lies outside [0, duration] and nothing inside."""
    duration = max(duration, 0.25)
    clipped = intervals.clip(rs, duration)
    assert all(0 <= a < b <= duration for a, b in clipped)
    assert cells(clipped) == {c for c in cells(rs) if c < duration * GRID}


@given(ranges(), points, st.sampled_from([1, 3, 10]))
def test_overlap_matches_the_grid(rs: list[Range], lo: float, size: int) -> None:
    """overlap of merged ranges with [lo, lo+size) is the covered seconds inside it."""
    merged = intervals.merge(rs)
    hi = lo + size
    expected = len({c for c in cells(rs) if lo * GRID <= c < hi * GRID}) / GRID
    assert math.isclose(intervals.overlap(merged, lo, hi), expected, abs_tol=1e-9)


@given(ranges(), st.sampled_from([1, 3, 10]))
def test_segment_seconds_split_each_range_exactly(rs: list[Range], size: int) -> None:
    """Per-segment seconds add up to the total and each equals the overlap with that segment."""
    merged = intervals.merge(rs)
    per_segment = intervals.segment_seconds(merged, size)
    assert math.isclose(sum(per_segment.values()), intervals.total(merged), abs_tol=1e-9)
    for k, seconds in per_segment.items():
        assert seconds > 0
        assert math.isclose(seconds, intervals.overlap(merged, k * size, (k + 1) * size))
    touched = {c // (size * GRID) for c in cells(rs)}
    assert intervals.segments(merged, size) == touched


@given(ranges())
def test_segment_seconds_count_rewatches(rs: list[Range]) -> None:
    """Unmerged ranges count every played second, overlaps included."""
    per_segment = intervals.segment_seconds(rs, 10)
    assert math.isclose(sum(per_segment.values()), intervals.total(rs), abs_tol=1e-9)


@given(ranges())
def test_flat_round_trips(rs: list[Range]) -> None:
    """flat and unflat are inverse, for the float8[] storage form."""
    merged = intervals.merge(rs)
    assert intervals.unflat(intervals.flat(merged)) == merged
    assert intervals.unflat(None) == []


def test_touching_ranges_merge_and_segment_edges_do_not_count() -> None:
    """(0,5)+(5,10) is one range; a range ending at a segment edge does not touch the next."""
    assert intervals.merge([(5.0, 10.0), (0.0, 5.0)]) == [(0.0, 10.0)]
    assert intervals.segments([(5.0, 10.0)], 10) == {0}
    assert intervals.segments([(10.0, 10.5)], 10) == {1}


def test_played_clips_then_merges_one_events_ranges() -> None:
    """An event's played ranges are clipped to its duration and merged before counting."""
    assert intervals.played([[0, 5], [4, 12], [30, 31]], 11.0) == [(0, 11.0)]
    assert intervals.played(None, 10.0) == []
    assert intervals.played([[0, 5]], None) == []


def test_total_of_nothing_is_a_float() -> None:
    """An empty coverage measures 0.0, so batches of mixed sessions dump as one float8 array."""
    assert isinstance(intervals.total([]), float)


@given(ranges(), st.integers(min_value=0, max_value=80 * GRID).map(lambda n: n / GRID))
def test_take_keeps_the_first_seconds_in_media_order(rs: list[Range], seconds: float) -> None:
    """take gives min(seconds, total) seconds, all before any second it leaves out."""
    merged = intervals.merge(rs)
    taken = intervals.take(merged, seconds)
    assert intervals.total(taken) == min(seconds, intervals.total(merged))
    kept = cells(taken)
    assert kept <= cells(merged)
    if kept:
        assert all(c > max(kept) for c in cells(merged) - kept)


@given(ranges(max_size=30), st.integers(min_value=1, max_value=6))
def test_coarsen_caps_the_ranges_and_only_fills_gaps(rs: list[Range], limit: int) -> None:
    """coarsen leaves at most `limit` ranges, covering everything covered before, and
    changes nothing when there are `limit` or fewer."""
    merged = intervals.merge(rs)
    coarse = intervals.coarsen(merged, limit)
    assert len(coarse) <= limit
    assert cells(merged) <= cells(coarse)
    assert coarse == intervals.merge(coarse)
    if len(merged) <= limit:
        assert coarse == merged
    else:
        assert (coarse[0][0], coarse[-1][1]) == (merged[0][0], merged[-1][1])
