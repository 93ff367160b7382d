"""The audience generator: seeded, valid, and shaped like the tracker's traffic."""

from __future__ import annotations

import itertools
import random
from collections import Counter, defaultdict

from tests import reference
from tools.audience import flatten, generate_audience, generate_sessions
from vidpulse.events import now_ms, parse_event

NOW = now_ms()


def test_one_seed_gives_the_same_traffic() -> None:
    """Two runs with one seed produce identical events, ids included; another seed does not."""
    kwargs = {"videos": 5, "viewers": 20, "sessions": 30, "now_ms": NOW}
    first = generate_sessions(random.Random(4), **kwargs)
    assert first == generate_sessions(random.Random(4), **kwargs)
    assert first != generate_sessions(random.Random(5), **kwargs)


def test_every_event_is_valid_and_sessions_behave_like_the_tracker() -> None:
    """Valid events; each session starts, beacons in ts order, and sends milestones and
    complete once, only when its coverage got there."""
    sessions = generate_audience(random.Random(8), videos=20, viewers=100, sessions=300, now_ms=NOW)
    types: Counter[str] = Counter()
    for s in sessions:
        events = s.events
        for e in events:
            parse_event(e, now_ms=NOW)
        types.update(e["type"] for e in events)
        assert events[0]["type"] == "session_start"
        assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
        assert events[0]["ts"] > NOW - 7 * 86_400_000
        assert events[-1]["ts"] < NOW
        duration = [e["duration_s"] for e in events if "duration_s" in e][-1]
        # A milestone goes out as soon as it is reached; the ranges reaching it travel
        # with the next beacon, so check against what the whole session reports.
        covered = reference.length(reference.merged(r for x in events for r in reference.played(x)))
        milestones = [e["milestone"] for e in events if e["type"] == "milestone"]
        assert milestones == sorted(set(milestones))
        if events[-1]["type"] == "session_end":
            # An abandoned session (a crashed tab: no session_end) never sends its last
            # ranges, so only a session that ended cleanly reports all it covered.
            assert all(covered >= duration * m / 100 - 0.01 for m in milestones)
        completes = [i for i, e in enumerate(events) if e["type"] == "complete"]
        assert len(completes) <= 1
        for i in completes:  # complete carries the ranges that reach the threshold
            upto = reference.merged(r for x in events[: i + 1] for r in reference.played(x))
            assert reference.length(upto) >= duration * 0.9 - 0.01
    assert {"progress", "pause", "seek", "rate_change", "milestone", "complete"} <= set(types)


def test_some_viewers_resume_where_they_stopped() -> None:
    """A share of sessions continue an earlier session of the same viewer and video."""
    sessions = generate_sessions(random.Random(3), videos=10, viewers=50, sessions=300, now_ms=NOW)
    by_pair: defaultdict[tuple[str, str], list[list[dict[str, object]]]] = defaultdict(list)
    for events in sessions:
        by_pair[(events[0]["viewer_id"], events[0]["video_id"])].append(events)
    resumed = [
        later
        for runs in by_pair.values()
        for earlier, later in itertools.pairwise(runs)
        if later[0]["position_s"] == earlier[-1]["position_s"] != 0
    ]
    assert len(resumed) > 10


def test_a_short_span_makes_sessions_overlap_like_live_traffic() -> None:
    """With span_ms, sessions start within that window, so many are under way at once."""
    sessions = generate_sessions(
        random.Random(2), videos=10, viewers=200, sessions=200, now_ms=NOW, span_ms=600_000
    )
    events = flatten(sessions)
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    middle = events[len(events) // 2]["ts"]
    under_way = [s for s in sessions if s[0]["ts"] <= middle <= s[-1]["ts"]]
    assert len(under_way) > 20
