"""What the aggregating processors (heatmap, progress, metrics) grant a session's events.

Each of them applies these rules on its own, with its own copy of the session's
state (they are independent consumer groups), and all three get the same answers:

- **Binding.** A session belongs to the (video, viewer) of the first of its events
  the processor applies, whatever its ts. A later event naming the session with
  another video or viewer is refused: it counts nowhere, and the refusal is counted
  in `processor_refusals`.
- **Credit.** A session is credited at most 16 x its span + 30 s of played media,
  the span being the distance between its smallest and greatest ts. Each
  event, as it is applied, is granted the first seconds (in media order) of its
  played ranges that fit in the allowance left: 16 x the span of the events applied
  so far, this one included, + 30 s, minus what was granted before. Only granted
  ranges count anywhere (watch seconds, coverage, views, completion).
- **Order.** "Latest" compares (event time, stream order), where the event time is
  min(ts, received_at): a ts ahead of the server's clock counts as the moment the
  server received the event, so a forged future ts cannot outrank the viewer's own
  later events. (The span keeps the plain ts: a client whose clock runs ahead may send
  a whole queued session in one request, and the ingest accepts ts up to 7 days old
  anyway.) Equal times go to the event the ingest appended later, which is the
  later request, and within one request the later event of the array.

See docs/processors.md for why honest traffic is never cut by the credit rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from processors import intervals
from processors.base import Entry
from processors.intervals import Range
from processors.store import EventKey, Field

RATE_CAP = 16.0  # the greatest playback rate the contract accepts
GRACE_SECONDS = 30.0  # what a session's first event may carry with no span yet
MAX_COVERAGE_RANGES = 512  # a session's stored coverage; beyond, its narrowest gaps fill

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def event_ms(entry: Entry) -> int:
    """The event's time for "latest": its ts, at most the moment the server received it."""
    return min(entry.event.ts, (entry.received_at - _EPOCH) // _MS)


def stream_order(stream_id: str) -> int:
    """A stream entry id `ms-seq` as one integer that orders like the id."""
    ms, _, seq = stream_id.partition("-")
    return (int(ms) << 64) | int(seq or 0)


def key(entry: Entry) -> EventKey:
    """What "latest" compares: (event time, stream order)."""
    return (event_ms(entry), stream_order(entry.stream_id))


def millis(seconds: float) -> int:
    """Seconds rounded to whole milliseconds: the unit every stored sum of seconds adds."""
    return round(seconds * 1000)


def seconds(ms: int) -> Decimal:
    """Whole milliseconds as an exact decimal number of seconds."""
    return Decimal(ms).scaleb(-3)


@dataclass
class Binding:
    """Who a session belongs to; None until the processor applies its first event."""

    video_id: str | None = None
    viewer_id: str | None = None

    def admits(self, entry: Entry) -> bool:
        """Bind an unbound session to the event's (video, viewer); else whether they match."""
        e = entry.event
        if self.video_id is None or self.viewer_id is None:
            self.video_id, self.viewer_id = e.video_id, e.viewer_id
            return True
        return (e.video_id, e.viewer_id) == (self.video_id, self.viewer_id)

    def admit(self, entries: list[Entry]) -> tuple[list[Entry], int]:
        """The entries the session admits, in order, and how many it refuses."""
        kept = [entry for entry in entries if self.admits(entry)]
        return kept, len(entries) - len(kept)


@dataclass
class Credit:
    """How much played media a session was granted, and over which span of event times."""

    lo_ms: int | None = None
    hi_ms: int | None = None
    granted: float = 0.0

    def grant(self, at_ms: int, ranges: list[Range]) -> list[Range]:
        """The part of one event's merged ranges (its ts `at_ms`) the allowance still covers."""
        self.lo_ms = at_ms if self.lo_ms is None else min(self.lo_ms, at_ms)
        self.hi_ms = at_ms if self.hi_ms is None else max(self.hi_ms, at_ms)
        if not ranges:
            return ranges
        allowance = RATE_CAP * (self.hi_ms - self.lo_ms) / 1000 + GRACE_SECONDS - self.granted
        out = intervals.take(ranges, allowance)
        self.granted += intervals.total(out)
        return out

    def grant_event(self, entry: Entry) -> list[Range]:
        """The part of the event's played ranges (clipped, merged) the session is credited."""
        e = entry.event
        return self.grant(e.ts, intervals.played(e.played, e.duration_s))

    def columns(self) -> tuple[int | None, int | None, float]:
        return (self.lo_ms, self.hi_ms, self.granted)


def cover(old: list[Range], new: list[Range]) -> list[Range]:
    """A session's stored coverage with `new` ranges added, at most MAX_COVERAGE_RANGES long."""
    return intervals.coarsen(intervals.union(old, new), MAX_COVERAGE_RANGES)


# How Binding and Credit are kept in a session store (processors/store.py). The
# binding is set when the row is created (from the first event naming the session).
BINDING = Field(
    "binding",
    (("video_id", "text"), ("viewer_id", "text")),
    lambda videos, viewers: list(map(Binding, videos, viewers)),
    saved=False,
)
CREDIT = Field(
    "credit",
    (("span_lo", "bigint"), ("span_hi", "bigint"), ("granted", "float8")),
    lambda lo, hi, granted: list(map(Credit, lo, hi, granted)),
    lambda credits: [
        [c.lo_ms for c in credits],
        [c.hi_ms for c in credits],
        [c.granted for c in credits],
    ],
)
CREATED = (("video_id", "text"), ("viewer_id", "text"))


def created(entry: Entry) -> tuple[str, str]:
    """The columns of a new session row: the (video, viewer) of its first event."""
    return (entry.event.video_id, entry.event.viewer_id)
