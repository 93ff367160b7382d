"""The API's answers as pydantic models: the source of the OpenAPI document's schemas.

The data functions build plain dicts; tests validate real answers against the
schemas generated from these models, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Error(_Strict):
    error: str = Field(description="What was wrong, in one line.")


class DailyTotals(_Strict):
    day: str = Field(description="UTC day, YYYY-MM-DD.")
    views: int
    watch_seconds: float
    completions: int


class CompletionBuckets(_Strict):
    above_75: int = Field(description="Videos with a completion rate above 75 %.")
    from_50_to_75: int = Field(description="Videos with a completion rate from 50 % to 75 %.")
    below_50: int = Field(description="Videos with a completion rate below 50 %.")


class Overview(_Strict):
    videos: int = Field(description="Videos with any event.")
    catalogued_videos: int = Field(description="Entries of the catalogue.")
    views: int
    unique_viewers: int = Field(description="Distinct viewers across all videos.")
    watch_seconds: float
    watch_hours: float
    completions: int
    avg_completion_rate_pct: float | None = Field(
        description="Mean of the videos' completion rates (completions / views), in %."
    )
    completion_buckets: CompletionBuckets
    from_: str = Field(alias="from")
    to: str
    daily: list[DailyTotals]


class VideoRow(_Strict):
    video_id: str
    title: str | None
    course_id: str | None
    course_title: str | None
    catalogued: bool
    is_preview: bool
    views: int
    unique_viewers: int
    watch_seconds: float
    avg_watch_seconds_per_view: float | None
    plays: int
    pauses: int
    seeks: int
    watched_25_count: int
    watched_50_count: int
    watched_75_count: int
    watched_90_count: int
    completions: int
    unique_completers: int
    completion_rate_pct: float | None
    sessions: int
    avg_completion_pct: float | None
    first_event_at: str | None
    last_event_at: str | None


class VideoList(_Strict):
    rows: list[VideoRow]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page.")
    sort: str
    order: str
    limit: int


class PopularRow(_Strict):
    video_id: str
    title: str | None
    course_id: str | None
    course_title: str | None
    watched_50_count: int
    views: int
    unique_viewers: int
    completions: int
    unique_completers: int
    watch_seconds: float
    last_event_at: str | None


class PopularList(_Strict):
    rows: list[PopularRow]
    limit: int


class VideoSummary(VideoRow):
    duration_s: float | None


class FunnelStep(_Strict):
    milestone: int
    viewers: int
    pct_of_viewers: float | None


class Segment(_Strict):
    start_s: float
    end_s: float
    views: int
    watch_seconds: float
    drop_offs: int
    retention_pct: float | None = Field(description="Segment views / video views x 100.")
    rewatch: float | None = Field(description="watch_seconds / (views x segment length).")


class KeyMoments(_Strict):
    most_rewatched: list[Segment]
    most_drop_offs: list[Segment]


class VideoDaily(_Strict):
    day: str
    views: int
    unique_viewers: int
    watch_seconds: float
    completions: int


class DeviceShare(_Strict):
    device_type: str
    sessions: int
    pct: float | None


class VideoDetail(_Strict):
    video_id: str
    summary: VideoSummary
    funnel: list[FunnelStep]
    segments: list[Segment]
    key_moments: KeyMoments
    from_: str = Field(alias="from")
    to: str
    daily: list[VideoDaily]
    devices: list[DeviceShare]


class CatalogueRow(_Strict):
    video_id: str
    title: str
    course_id: str | None
    course_title: str | None
    duration_s: float | None
    is_preview: bool
    updated_at: str


class ProgressRow(_Strict):
    video_id: str
    title: str | None
    position_s: float | None
    duration_s: float | None
    progress_pct: float | None
    completed: bool
    first_watched_at: str | None
    last_watched_at: str | None
    completed_at: str | None
    course_id: str | None
    lesson_id: str | None


class ViewerProgress(_Strict):
    viewer_id: str
    rows: list[ProgressRow]


class GroupStatus(_Strict):
    group: str
    consumers: int
    pending: int
    lag: int | None
    oldest_pending_age_s: float | None
    dead_letters: int
    last_delivered_id: str


class Pipeline(_Strict):
    stream: str
    length: int
    dead_letters: int
    groups: list[GroupStatus]
