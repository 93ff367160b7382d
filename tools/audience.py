"""A deterministic audience: tracker-like beacon traffic for simulations, tests and benchmarks.

Viewers watch videos in sessions the way the bundled tracker reports them:
`session_start`, `play`, a `progress` beacon every ~15 s of playing carrying the media
ranges played since the previous beacon, pauses, seeks forward and back (so parts get
rewatched), rate and quality changes, `milestone` 25/50/75/90 of the video's seconds
covered (once per session), `complete` once coverage reaches the threshold, and
`session_end` (missing now and then, as when a tab dies). Some sessions resume an
earlier one of the same viewer on the same video, hours later, where it stopped.

Everything is drawn from the `random.Random` passed in, so one seed gives the same
traffic (event ids included) every time. Every event passes `vidpulse.events.parse_event`
for a `now_ms` at or after the one given (within a few days).
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from dataclasses import dataclass, field
from typing import Any

PROGRESS_EVERY_MS = 15_000
MILESTONES = (25, 50, 75, 90)
_HOUR_MS = 3_600_000
_DAY_MS = 24 * _HOUR_MS

USER_AGENTS: tuple[str, ...] = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
)
_UA_WEIGHTS = (30, 14, 6, 20, 16, 6, 7, 1)
REFERRERS: tuple[str | None, ...] = (
    None,
    "https://learn.example.com/courses",
    "https://www.google.com/",
    "https://news.ycombinator.com/",
    "https://learn.example.com/search?q=intro",
)


@dataclass(frozen=True)
class Video:
    """One video of the catalogue."""

    video_id: str
    duration_s: float
    course_id: str | None
    lesson_id: str | None
    is_preview: bool


@dataclass
class Session:
    """One playback session: its events in client order and its request headers."""

    events: list[dict[str, Any]]
    user_agent: str
    referer: str | None


def catalogue(videos: int) -> list[Video]:
    """`videos` videos, from 20-second clips to hour-long lectures (median about 4 min).

    Each video's duration and context depend on its id alone, so that
    separate runs (say, two `vidpulse simulate`) describe the same catalogue.
    """
    out: list[Video] = []
    for i in range(videos):
        own = random.Random(f"video-{i:05d}")
        duration = round(min(3600.0, max(20.0, own.lognormvariate(math.log(240), 0.9))), 3)
        course = own.random() < 0.7
        out.append(
            Video(
                video_id=f"video-{i:05d}",
                duration_s=duration,
                course_id=f"course-{i // 8:04d}" if course else None,
                lesson_id=f"lesson-{i:05d}" if course else None,
                is_preview=course and i % 8 == 0,
            )
        )
    return out


def generate_audience(
    rng: random.Random,
    *,
    videos: int,
    viewers: int,
    sessions: int,
    now_ms: int,
    completion_threshold: float = 0.9,
    resume_share: float = 0.15,
    span_ms: int | None = None,
) -> list[Session]:
    """`sessions` sessions of `viewers` viewers on `videos` videos, ending before `now_ms`.

    Popular videos and heavy viewers get more sessions (Zipf-like). Sessions start
    between three days and six hours before `now_ms`, or, with `span_ms`, within the
    last `span_ms` (a short span gives many sessions at once, like live traffic); a
    share `resume_share` of them continue an earlier session of the same viewer and
    video. The catalogue is the same in every call (see `catalogue`).
    """
    if videos < 1 or viewers < 1 or sessions < 0:
        raise ValueError("videos and viewers must be positive, sessions not negative")
    catalog = catalogue(videos)
    video_cum = zipf_cumulative(videos, 1.0)
    viewer_cum = zipf_cumulative(viewers, 0.6)
    # (viewer, video) -> (end position, end ts) of its latest session so far
    history: dict[tuple[int, int], tuple[float, int]] = {}
    pairs: list[tuple[int, int]] = []
    out: list[Session] = []
    for n in range(sessions):
        viewer = min(bisect.bisect_left(viewer_cum, rng.random() * viewer_cum[-1]), viewers - 1)
        video_index = min(bisect.bisect_left(video_cum, rng.random() * video_cum[-1]), videos - 1)
        start_pos = 0.0
        if span_ms is None:
            start_ms = now_ms - rng.randint(6 * _HOUR_MS, 3 * _DAY_MS)
        else:
            start_ms = now_ms - rng.randint(0, span_ms)
        if pairs and rng.random() < resume_share:
            # The viewer comes back to a video later and resumes where they stopped.
            viewer, video_index = rng.choice(pairs)
            end_pos, end_ms = history[(viewer, video_index)]
            if end_pos < catalog[video_index].duration_s - 5:
                start_pos = end_pos
                start_ms = end_ms + rng.randint(10 * 60_000, 12 * _HOUR_MS)
        video = catalog[video_index]
        player = _Player(
            rng,
            video=video,
            session_id=f"s{n:07d}-{rng.getrandbits(32):08x}",
            viewer_id=f"viewer-{viewer:06d}",
            start_ms=start_ms,
            position=start_pos,
            threshold=completion_threshold,
        )
        events = player.watch()
        overshoot = events[-1]["ts"] - (now_ms - 1000)
        if overshoot > 0:
            for event in events:
                event["ts"] -= overshoot
        if (viewer, video_index) not in history:
            pairs.append((viewer, video_index))
        history[(viewer, video_index)] = (player.position, events[-1]["ts"])
        ua = rng.choices(USER_AGENTS, _UA_WEIGHTS)[0]
        out.append(Session(events=events, user_agent=ua, referer=rng.choice(REFERRERS)))
    return out


def generate_sessions(
    rng: random.Random,
    *,
    videos: int,
    viewers: int,
    sessions: int,
    now_ms: int,
    completion_threshold: float = 0.9,
    span_ms: int | None = None,
) -> list[list[dict[str, Any]]]:
    """Like `generate_audience`, only the events: one list per session, in client order."""
    return [
        s.events
        for s in generate_audience(
            rng,
            videos=videos,
            viewers=viewers,
            sessions=sessions,
            now_ms=now_ms,
            completion_threshold=completion_threshold,
            span_ms=span_ms,
        )
    ]


def flatten(sessions: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """All events in the order a live server would receive them: by ts, sessions interleaved.

    Each session's own order is kept (its events are already in ts order).
    """
    return list(heapq.merge(*sessions, key=lambda e: e["ts"]))


def zipf_cumulative(n: int, s: float) -> list[float]:
    """Cumulative weights of ranks 1..n under Zipf's law with exponent `s`."""
    total = 0.0
    out: list[float] = []
    for k in range(1, n + 1):
        total += 1.0 / k**s
        out.append(total)
    return out


@dataclass
class _Player:
    """One session of one viewer: plays, pauses, seeks and beacons like the tracker."""

    rng: random.Random
    video: Video
    session_id: str
    viewer_id: str
    start_ms: int
    position: float
    threshold: float
    rate: float = 1.0
    clock_ms: float = 0.0
    since_beacon_ms: float = 0.0
    played: list[list[float]] = field(default_factory=list)
    coverage: list[list[float]] = field(default_factory=list)
    covered: float = 0.0
    milestones_sent: set[int] = field(default_factory=set)
    completed: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)

    def watch(self) -> list[dict[str, Any]]:
        rng, d = self.rng, self.video.duration_s
        self.clock_ms = float(self.start_ms)
        # Sometimes the player's first duration is the rounded metadata value.
        first_duration = float(round(d)) if rng.random() < 0.1 and round(d) > 0 else d
        self._emit("session_start", duration_s=first_duration)
        self._wait(rng.uniform(200, 3000))
        self._emit("play")
        budget = self._budget()
        while budget > 0 and self.position < d:
            chunk = min(rng.expovariate(1 / 90), budget, d - self.position)
            self._play(chunk)
            budget -= chunk
            if self.position >= d:
                break
            self._act()
        if self.position >= d:
            self._emit("pause", played=self._flush())
        if rng.random() < 0.9:
            self._wait(rng.uniform(100, 5000))
            self._emit("session_end", played=self._flush())
        return self.events

    def _budget(self) -> float:
        """Media seconds this viewer will play: many leave early, many watch it all."""
        d, u = self.video.duration_s, self.rng.random()
        if u < 0.3:
            return d * self.rng.uniform(0.02, 0.3)
        if u < 0.55:
            return d * self.rng.uniform(0.3, 0.85)
        return d * self.rng.uniform(0.9, 1.6)

    def _act(self) -> None:
        rng, d = self.rng, self.video.duration_s
        u = rng.random()
        if u < 0.3:
            self._emit("pause", played=self._flush())
            self._wait(rng.expovariate(1 / 20_000))
            self._emit("play")
        elif u < 0.5:
            to = min(d, self.position + rng.expovariate(1 / 60))
            self._seek(to)
        elif u < 0.65:
            to = max(0.0, self.position - rng.expovariate(1 / 30))
            self._seek(to)
        elif u < 0.73:
            self.rate = rng.choice((0.75, 1.0, 1.25, 1.5, 2.0))
            self._emit("rate_change", rate=self.rate, duration_s=None)
        elif u < 0.77:
            quality = rng.choice(("360p", "480p", "720p", "1080p"))
            self._emit("quality_change", quality=quality, duration_s=None)

    def _seek(self, to: float) -> None:
        from_s = self.position
        self.position = to
        self._emit("seek", from_s=_r(from_s), to_s=_r(to), played=self._flush())

    def _play(self, seconds: float) -> None:
        """Play `seconds` of media, beaconing every 15 s of wall time and on thresholds."""
        d = self.video.duration_s
        while seconds > 1e-9:
            wall_left = max(0.0, PROGRESS_EVERY_MS - self.since_beacon_ms)
            step = min(seconds, wall_left / 1000 * self.rate)
            start = self.position
            end = min(d, start + step)
            seconds -= step
            self._wait(step / self.rate * 1000)
            self.since_beacon_ms += step / self.rate * 1000
            self.position = end
            if end == d and self.rng.random() < 0.2:
                end = d + self.rng.uniform(0.0, 0.5)  # players overshoot the end a little
            self._record(start, end)
            if self.since_beacon_ms >= PROGRESS_EVERY_MS - 1e-6:
                self._emit("progress", played=self._flush())
            self._check_thresholds()

    def _record(self, start: float, end: float) -> None:
        start, end = _r(start), _r(end)
        if end - start < 0.001:
            return
        if self.played and abs(self.played[-1][1] - start) < 1e-9:
            self.played[-1][1] = end
        else:
            self.played.append([start, end])
        self._cover(start, min(end, self.video.duration_s))

    def _cover(self, start: float, end: float) -> None:
        if end <= start:
            return
        merged: list[list[float]] = []
        placed = False
        for a, b in self.coverage:
            if b < start or a > end:
                if a > end and not placed:
                    merged.append([start, end])
                    placed = True
                merged.append([a, b])
            else:
                start, end = min(a, start), max(b, end)
        if not placed:
            merged.append([start, end])
        merged.sort()
        self.coverage = merged
        self.covered = sum(b - a for a, b in merged)

    def _check_thresholds(self) -> None:
        d = self.video.duration_s
        share = self.covered / d
        for m in MILESTONES:
            if m not in self.milestones_sent and share * 100 >= m:
                self.milestones_sent.add(m)
                extra: dict[str, Any] = {"duration_s": None, "position_s": None}
                if self.rng.random() < 0.5:  # some integrations send the playhead too
                    extra["position_s"] = _r(min(self.position, d))
                self._emit("milestone", milestone=m, **extra)
        if not self.completed and share >= self.threshold:
            self.completed = True
            self._emit("complete", played=self._flush())

    def _flush(self) -> list[list[float]]:
        played, self.played = self.played, []
        self.since_beacon_ms = 0.0
        return played

    def _wait(self, ms: float) -> None:
        self.clock_ms += ms

    def _emit(self, type: str, **fields: Any) -> None:
        v = self.video
        event: dict[str, Any] = {
            "event_id": _uuid4(self.rng),
            "type": type,
            "ts": int(self.clock_ms),
            "video_id": v.video_id,
            "session_id": self.session_id,
            "viewer_id": self.viewer_id,
            "position_s": _r(min(self.position, v.duration_s)),
            "duration_s": v.duration_s,
        }
        if v.course_id is not None:
            event["course_id"] = v.course_id
            event["lesson_id"] = v.lesson_id
        if v.is_preview:
            event["is_preview"] = True
        for key, value in fields.items():
            if value is None:
                del event[key]
            else:
                event[key] = value
        self.events.append(event)


def _uuid4(rng: random.Random) -> str:
    """A version-4 UUID string drawn from `rng` (so it repeats with the seed)."""
    n = (rng.getrandbits(128) & ~(0xF000 << 64) & ~(0xC000 << 48)) | (0x4000 << 64) | (0x8000 << 48)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _r(x: float) -> float:
    return round(x, 3)
