"""The bench's live-shaped traffic: valid, seeded, sessions interleaved and shaped like lessons."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from bench import live
from vidpulse.events import now_ms, parse_event

NOW = now_ms()


def _rounds(slots: int, count: int, **kwargs: Any) -> list[list[live.Beacon]]:
    traffic = live.LiveTraffic(slots, seed=7, start_ms=live.backlog_start_ms(NOW, count), **kwargs)
    return list(traffic.rounds(count))


def test_one_seed_gives_the_same_traffic() -> None:
    assert _rounds(50, 4) == _rounds(50, 4)
    other = live.LiveTraffic(50, seed=8, start_ms=live.backlog_start_ms(NOW, 4))
    assert _rounds(50, 4) != list(other.rounds(4))


def test_each_round_holds_one_beacon_of_each_slot_from_distinct_sessions() -> None:
    rounds = _rounds(300, 12)
    for beacons in rounds:
        assert len(beacons) == 300
        assert len({b.events[0]["session_id"] for b in beacons}) == 300
        for b in beacons:
            assert 1 <= len(b.events) <= 3
            assert len({e["session_id"] for e in b.events}) == 1
            assert "bot" not in b.user_agent.lower()
            assert b.referer


def test_sessions_are_valid_lessons_with_milestones_and_completes_where_they_belong() -> None:
    rounds = _rounds(40, live.MAX_BEACONS + 20, phase=False)
    sessions: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
    for beacons in rounds:
        for b in beacons:
            for e in b.events:
                parse_event(e, now_ms=NOW)  # raises if the contract or the ts window is broken
            sessions[b.events[0]["session_id"]].append(b.events)
    completed = 0
    for beacons in sessions.values():
        events = [e for beacon in beacons for e in beacon]
        assert len(beacons) <= live.MAX_BEACONS
        assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
        assert [e["type"] for e in beacons[0]] == ["session_start", "play"]
        duration = events[0]["duration_s"]
        end = 0.0
        for beacon in beacons[1:]:
            first = beacon[0]
            assert first["type"] == "progress"
            ((start, stop),) = first["played"]
            assert start == end
            assert stop <= duration
            end = stop
            for e in beacon[1:]:
                if e["type"] == "milestone":  # in the beacon whose range crosses it
                    assert start < duration * e["milestone"] / 100 <= stop + 1e-9
                elif e["type"] == "complete":
                    completed += 1
                    assert stop == duration
                    assert beacon is beacons[-1]
                else:
                    assert e["type"] == "session_end"
                    assert beacon is beacons[-1]
        if any(e["type"] == "complete" for e in events):
            assert sorted(e["milestone"] for e in events if e["type"] == "milestone") == [
                25,
                50,
                75,
                90,
            ]
    assert completed > 0


def test_long_sessions_are_240_beacons() -> None:
    rounds = _rounds(5, live.MAX_BEACONS, phase=False, long_only=True)
    per_session: dict[str, int] = defaultdict(int)
    for beacons in rounds:
        for b in beacons:
            per_session[b.events[0]["session_id"]] += 1
    assert list(per_session.values()) == [live.MAX_BEACONS] * 5
    assert rounds[-1][0].events[-1]["type"] == "complete"
