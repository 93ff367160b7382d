"""Live-shaped traffic: many concurrent lesson sessions, one beacon each per batch window.

A live server does not see one session's events back to back: thousands of viewers
watch at once, and each browser's tracker posts a beacon (one request, its events of
the last 1.5 s) about every 15 s while the video plays. So consecutive stream entries
belong to different sessions, and a processor's batch of 1,000 entries touches about
850 sessions (a beacon holds 1.2 events on average).

Here `sessions` slots each play one lesson session after another. A session is a
`session_start` and `play` (one beacon), then a `progress` beacon every 15 s carrying
the played range `[t, t + 15]` and the position, a `milestone` 25/50/75/90 in the
beacon whose range crosses that share of the video, and, for the sessions that watch to
the end, a `complete` with the last progress; most of the others end with a
`session_end`. Sessions are at most 240 beacons long (an hour-long lesson); their
lengths follow from the video watched (from 1-minute clips to 1-hour lessons) and how
much of it the viewer watches. Every event passes the contract with a client `ts` of
its beacon's time, and each beacon carries its session's browser User-Agent and
Referer.

`rounds()` yields the traffic round by round (each slot's next beacon, slots in
round-robin order): the backlog shape. `timeline()` gives each beacon its own send time
within the round (each slot beacons at its own offset in the 15 s): the request shape.
Everything is drawn from the seed.
"""

from __future__ import annotations

import bisect
import math
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tools.audience import REFERRERS, USER_AGENTS, zipf_cumulative
from vidpulse.events import MAX_PAST_MS

BEACON_MS = 15_000  # the tracker's progress period, media seconds at rate 1
MAX_BEACONS = 240  # an hour-long lesson: a start beacon and 239 progress beacons
LONGEST_S = (MAX_BEACONS - 1) * BEACON_MS / 1000  # 3,585 s
MILESTONES = (25, 50, 75, 90)
VIDEOS = 2_000
VIEWERS = 200_000
# Browsers only: bots' events are left out of the aggregates, live viewers are people.
BROWSERS = tuple(ua for ua in USER_AGENTS if "bot" not in ua.lower())
REFERERS = tuple(r for r in REFERRERS if r)


@dataclass(frozen=True, slots=True)
class Beacon:
    """One request of one session: its events (1 or 2, rarely 3) and its headers."""

    events: list[dict[str, Any]]
    user_agent: str
    referer: str
    offset_ms: int  # when in its round it is sent (the slot's phase)


@dataclass
class _Session:
    session_id: str
    video_id: str
    viewer_id: str
    duration_s: float
    beacons: int  # how many beacons it sends in all (2..MAX_BEACONS)
    finishes: bool
    ends_cleanly: bool
    user_agent: str
    referer: str
    course_id: str
    next_beacon: int = 0
    milestones: set[int] = field(default_factory=set)


def lesson_catalogue(videos: int = VIDEOS) -> list[float]:
    """Durations (s) of the lesson videos: a third hour-long lessons, the rest 1 to 40 min."""
    out: list[float] = []
    for i in range(videos):
        own = random.Random(f"lesson-{i:05d}")
        if own.random() < 0.33:
            out.append(LONGEST_S)
        else:
            out.append(round(min(2400.0, max(60.0, own.lognormvariate(math.log(480), 0.8))), 3))
    return out


class LiveTraffic:
    """Concurrent lesson sessions in `slots`, beacon by beacon (see the module doc).

    `phase`: slots start mid-session (a steady state, as a server sees at any moment);
    without it every slot starts a new session at round 0. `long_only`: every session
    is a full hour-long lesson of MAX_BEACONS beacons (for costs late in long sessions).
    """

    def __init__(
        self,
        slots: int,
        *,
        seed: int,
        start_ms: int,
        phase: bool = True,
        long_only: bool = False,
    ) -> None:
        if slots < 1:
            raise ValueError("slots must be positive")
        self.rng = random.Random(seed)
        self.start_ms = start_ms
        self.long_only = long_only
        self.durations = lesson_catalogue()
        self.video_cum = zipf_cumulative(len(self.durations), 0.9)
        self.made = 0
        self.lengths: list[int] = []  # beacons of every session started
        self.offsets = [self.rng.randrange(BEACON_MS) for _ in range(slots)]
        self.current = [self._new_session() for _ in range(slots)]
        if phase:
            for s in self.current:
                s.next_beacon = self.rng.randrange(s.beacons)
                s.milestones = {m for m in MILESTONES if s.next_beacon > self._beacon_of(s, m)}

    @property
    def slots(self) -> int:
        return len(self.current)

    def _new_session(self) -> _Session:
        rng = self.rng
        if self.long_only:
            video = VIDEOS  # one id past the catalogue: the long lesson
            duration = LONGEST_S
        else:
            video = bisect.bisect_left(self.video_cum, rng.random() * self.video_cum[-1])
            video = min(video, len(self.durations) - 1)
            duration = self.durations[video]
        full = 1 + math.ceil(duration * 1000 / BEACON_MS)  # start beacon + progress to the end
        u = rng.random()
        if self.long_only or u < 0.45:
            beacons, finishes = full, True
        elif u < 0.75:  # leaves early
            beacons, finishes = max(2, round(full * rng.uniform(0.02, 0.3))), False
        else:
            beacons, finishes = max(2, round(full * rng.uniform(0.3, 0.95))), False
        beacons = min(beacons, full)
        self.made += 1
        self.lengths.append(beacons)
        return _Session(
            session_id=f"live-{self.made:08d}-{rng.getrandbits(32):08x}",
            video_id=f"lesson-{video:05d}",
            viewer_id=f"viewer-{rng.randrange(VIEWERS):06d}",
            duration_s=duration,
            beacons=beacons,
            finishes=finishes,
            ends_cleanly=finishes or rng.random() < 0.8,
            user_agent=rng.choice(BROWSERS),
            referer=rng.choice(REFERERS),
            course_id=f"course-{video // 8:04d}",
        )

    @staticmethod
    def _beacon_of(s: _Session, milestone: int) -> int:
        """The progress beacon whose range crosses `milestone` % of the video."""
        at = s.duration_s * milestone / 100
        return max(1, math.ceil(at * 1000 / BEACON_MS))

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _beacon(self, s: _Session, ts: int, offset_ms: int) -> Beacon:
        j = s.next_beacon
        d = s.duration_s
        base: dict[str, Any] = {
            "video_id": s.video_id,
            "session_id": s.session_id,
            "viewer_id": s.viewer_id,
            "course_id": s.course_id,
            "lesson_id": s.video_id,
        }

        def event(type: str, at: int, **fields: Any) -> dict[str, Any]:
            return {"event_id": self._uuid(), "type": type, "ts": at, **base, **fields}

        if j == 0:
            events = [
                event("session_start", ts, position_s=0.0, duration_s=d),
                event("play", ts + self.rng.randrange(200, 1200), position_s=0.0),
            ]
        else:
            start = round(min(d, (j - 1) * BEACON_MS / 1000), 3)
            end = round(min(d, j * BEACON_MS / 1000), 3)
            events = [event("progress", ts, position_s=end, duration_s=d, played=[[start, end]])]
            for m in MILESTONES:
                if m not in s.milestones and j >= self._beacon_of(s, m):
                    s.milestones.add(m)
                    events.append(event("milestone", ts + 1, milestone=m, position_s=end))
            if j == s.beacons - 1:
                if s.finishes:
                    events.append(event("complete", ts + 2, position_s=end, duration_s=d))
                elif s.ends_cleanly:
                    events.append(event("session_end", ts + 2, position_s=end, duration_s=d))
        s.next_beacon += 1
        return Beacon(events, s.user_agent, s.referer, offset_ms)

    def round(self, r: int) -> list[Beacon]:
        """Round `r`: each slot's next beacon, slots in order; a finished session's slot
        starts a new one in the next round."""
        out: list[Beacon] = []
        round_ms = self.start_ms + r * BEACON_MS
        for i, s in enumerate(self.current):
            if s.next_beacon >= s.beacons:
                s = self.current[i] = self._new_session()
            offset = self.offsets[i]
            out.append(self._beacon(s, round_ms + offset, offset))
        return out

    def rounds(self, count: int) -> Iterator[list[Beacon]]:
        for r in range(count):
            yield self.round(r)

    def timeline(self, count: int) -> Iterator[Beacon]:
        """`count` rounds' beacons in send order (by each slot's offset within its round)."""
        for r in range(count):
            yield from sorted(self.round(r), key=lambda b: b.offset_ms)


def backlog_start_ms(now_ms: int, rounds: int) -> int:
    """A start for `rounds` rounds that ends before `now_ms`, within the ingest's ts window."""
    start = now_ms - (rounds + 1) * BEACON_MS
    if now_ms - start > MAX_PAST_MS // 2:
        raise ValueError(f"{rounds} rounds of {BEACON_MS} ms reach too far into the past")
    return start


def entries(beacons: Iterator[Beacon]) -> Iterator[tuple[dict[str, Any], str, str]]:
    """(event, user agent, referer) in stream order, as `bench.traffic.stream_entries` takes."""
    for b in beacons:
        for e in b.events:
            yield e, b.user_agent, b.referer


def length_summary(lengths: list[int]) -> dict[str, Any]:
    """Quantiles of session lengths (beacons) and the share of hour-long ones."""
    if not lengths:
        return {}
    ordered = sorted(lengths)

    def q(p: float) -> int:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    return {
        "sessions": len(ordered),
        "p10": q(0.1),
        "p50": q(0.5),
        "p90": q(0.9),
        "max": ordered[-1],
        "share_240": round(sum(1 for n in ordered if n == MAX_BEACONS) / len(ordered), 3),
    }
