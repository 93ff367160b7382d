-- vidpulse database schema: the single source of the database shape.
-- `vidpulse migrate` applies it to an empty database (and records every migration
-- of vidpulse/migrations/ as applied); an existing database gets the migrations it
-- lacks instead. A change here is also written as the next numbered migration.
-- Analysts read the comments: table and column names and meanings are a stable
-- public interface.
--
-- Conventions: every processor writes only its own tables. Each processor keeps
-- a ledger `<processor>_applied` of the event ids it has applied, so that a
-- redelivered or retried event never counts twice.

-- ---------------------------------------------------------------------------
-- processor `raw`: the raw event log
-- ---------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS video_events (
    event_id     uuid             NOT NULL,
    type         text             NOT NULL,
    video_id     text             NOT NULL,
    session_id   text             NOT NULL,
    viewer_id    text             NOT NULL,
    ts           timestamptz      NOT NULL,
    received_at  timestamptz      NOT NULL,
    position_s   double precision,
    duration_s   double precision,
    payload      jsonb            NOT NULL,
    is_bot       boolean          NOT NULL DEFAULT false,
    PRIMARY KEY (event_id, ts)
) PARTITION BY RANGE (ts);

COMMENT ON TABLE video_events IS
    'Raw event log: one row per distinct event_id, exactly as accepted by the ingest. '
    'Partitioned by month of ts (partitions video_events_yYYYYmMM, created as needed).';
COMMENT ON COLUMN video_events.event_id IS 'Client-generated idempotency key of the event (or made by the ingest when absent).';
COMMENT ON COLUMN video_events.type IS 'Event type: session_start, progress, play, pause, seek, rate_change, quality_change, milestone, complete, session_end.';
COMMENT ON COLUMN video_events.video_id IS 'The video the event is about.';
COMMENT ON COLUMN video_events.session_id IS 'One playback session (one view) of one video on one page view.';
COMMENT ON COLUMN video_events.viewer_id IS 'Logged-in user id, else the tracker''s anonymous viewer id.';
COMMENT ON COLUMN video_events.ts IS 'Client time of the event.';
COMMENT ON COLUMN video_events.received_at IS 'Server time at which the ingest accepted the event.';
COMMENT ON COLUMN video_events.position_s IS 'Playhead in seconds when the event happened (NULL for milestone events without one).';
COMMENT ON COLUMN video_events.duration_s IS 'Media duration in seconds as the player reported it, when the event carried it.';
COMMENT ON COLUMN video_events.payload IS 'The whole validated event as JSON, plus user_agent and referer of the request when sent.';
COMMENT ON COLUMN video_events.is_bot IS
    'True when the request''s User-Agent is a bot''s (crawler, headless browser, HTTP library): '
    'such events are kept here and counted in video_metrics.bot_events, and in no other table.';

CREATE INDEX IF NOT EXISTS video_events_video_ts_idx ON video_events (video_id, ts);
CREATE INDEX IF NOT EXISTS video_events_session_idx ON video_events (session_id);

CREATE TABLE IF NOT EXISTS raw_applied (
    event_id    uuid        PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE raw_applied IS 'Ledger of processor raw: event ids already applied (kept at least 7 days).';
COMMENT ON COLUMN raw_applied.event_id IS 'An applied event.';
COMMENT ON COLUMN raw_applied.applied_at IS 'When it was applied; rows older than the retention are purged.';
CREATE INDEX IF NOT EXISTS raw_applied_at_idx ON raw_applied USING brin (applied_at);

-- ---------------------------------------------------------------------------
-- processor `heatmap`: per-segment engagement of each video
-- ---------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS video_heatmap (
    video_id       text             NOT NULL,
    segment_start  integer          NOT NULL,
    segment_end    integer          NOT NULL,
    views          bigint           NOT NULL DEFAULT 0,
    watch_seconds  numeric(18, 3)   NOT NULL DEFAULT 0,
    drop_offs      bigint           NOT NULL DEFAULT 0,
    PRIMARY KEY (video_id, segment_start)
);
COMMENT ON TABLE video_heatmap IS
    'Engagement per segment of each video: segment k covers media seconds [k*S, (k+1)*S), '
    'S = VIDPULSE_SEGMENT_SECONDS (10 by default). Only segments something touched have a row; '
    'a missing row means zero. Played ranges are clipped to the event''s duration_s.';
COMMENT ON COLUMN video_heatmap.video_id IS 'The video.';
COMMENT ON COLUMN video_heatmap.segment_start IS 'Start of the segment, in media seconds (k*S).';
COMMENT ON COLUMN video_heatmap.segment_end IS 'End of the segment, in media seconds ((k+1)*S, exclusive).';
COMMENT ON COLUMN video_heatmap.views IS
    'Sessions whose coverage (union of all their played ranges) overlaps the segment by more than 0 seconds.';
COMMENT ON COLUMN video_heatmap.watch_seconds IS
    'Seconds played inside the segment, over all sessions, rewatches included; each event''s '
    'share of the segment rounded to the millisecond. Only media granted to the session counts '
    '(at most 16 * its span + 30 s, see video_sessions.watch_seconds).';
COMMENT ON COLUMN video_heatmap.drop_offs IS
    'Sessions whose latest position (playhead of their latest event carrying one) lies in this segment; '
    'a position at or past the session''s latest duration counts in the video''s last segment. '
    'Kept current: it moves while a session is still going.';

CREATE TABLE IF NOT EXISTS heatmap_sessions (
    video_id        text             NOT NULL,
    session_id      text             NOT NULL,
    viewer_id       text,
    span_lo         bigint,
    span_hi         bigint,
    granted         double precision NOT NULL DEFAULT 0,
    coverage        double precision[] NOT NULL DEFAULT '{}',
    position_s      double precision,
    position_ts     bigint,
    position_order  numeric,
    duration_s      double precision,
    duration_ts     bigint,
    duration_order  numeric,
    drop_segment    integer,
    position_event  uuid,
    duration_event  uuid,
    PRIMARY KEY (video_id, session_id)
) WITH (fillfactor = 60);
COMMENT ON TABLE heatmap_sessions IS
    'Working state of processor heatmap, one row per session (session_id is unique): what it needs to keep '
    'video_heatmap exact whatever the order events arrive in. Not meant for analysts.';
COMMENT ON COLUMN heatmap_sessions.session_id IS 'The session.';
COMMENT ON COLUMN heatmap_sessions.video_id IS
    'The video the session belongs to: that of the first of its events this processor applied. '
    'Events naming the session with another video or viewer are refused (processor_refusals).';
COMMENT ON COLUMN heatmap_sessions.viewer_id IS 'The viewer the session belongs to (as video_id).';
COMMENT ON COLUMN heatmap_sessions.span_lo IS 'Smallest ts (ms) of the session''s applied events.';
COMMENT ON COLUMN heatmap_sessions.span_hi IS 'Greatest ts (ms) of the session''s applied events.';
COMMENT ON COLUMN heatmap_sessions.granted IS
    'Seconds of played media granted to the session so far: at most 16 * (span_hi - span_lo) / 1000 + 30.';
COMMENT ON COLUMN heatmap_sessions.coverage IS
    'The session''s coverage so far as merged ranges, flattened: {start1, end1, start2, end2, ...}; '
    'at most 512 ranges (beyond, the narrowest gaps are filled).';
COMMENT ON COLUMN heatmap_sessions.position_s IS 'Position of the latest event carrying one.';
COMMENT ON COLUMN heatmap_sessions.position_ts IS
    'Event time (ms, min(ts, received_at)) of that event; with position_order, what "latest" compares.';
COMMENT ON COLUMN heatmap_sessions.position_order IS
    'Stream order of that event (entry id ms * 2^64 + seq): breaks ties in event time.';
COMMENT ON COLUMN heatmap_sessions.duration_s IS 'Duration of the latest event carrying one.';
COMMENT ON COLUMN heatmap_sessions.duration_ts IS 'Event time (ms) of that event.';
COMMENT ON COLUMN heatmap_sessions.duration_order IS 'Stream order of that event.';
COMMENT ON COLUMN heatmap_sessions.drop_segment IS
    'Segment number (k) in which this session currently counts as a drop-off; NULL before any position.';
COMMENT ON COLUMN heatmap_sessions.position_event IS 'Unused since migration 0003; kept so that processes of an earlier release keep working during an upgrade.';
COMMENT ON COLUMN heatmap_sessions.duration_event IS 'Unused since migration 0003; kept so that processes of an earlier release keep working during an upgrade.';
CREATE UNIQUE INDEX IF NOT EXISTS heatmap_sessions_session_idx ON heatmap_sessions (session_id);

CREATE TABLE IF NOT EXISTS heatmap_applied (
    event_id    uuid        PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE heatmap_applied IS 'Ledger of processor heatmap: event ids already applied (kept at least 7 days).';
COMMENT ON COLUMN heatmap_applied.event_id IS 'An applied event.';
COMMENT ON COLUMN heatmap_applied.applied_at IS 'When it was applied; rows older than the retention are purged.';
CREATE INDEX IF NOT EXISTS heatmap_applied_at_idx ON heatmap_applied USING brin (applied_at);

-- ---------------------------------------------------------------------------
-- processor `progress`: sessions, and resume positions per viewer and video
-- ---------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS progress_sessions (
    session_id        text             PRIMARY KEY,
    video_id          text,
    viewer_id         text,
    first_ts          bigint,
    started_at        timestamptz,
    last_ts           bigint,
    last_event_at     timestamptz,
    span_lo           bigint,
    span_hi           bigint,
    granted           double precision NOT NULL DEFAULT 0,
    course_id         text,
    course_ts         bigint,
    course_order      numeric,
    lesson_id         text,
    lesson_ts         bigint,
    lesson_order      numeric,
    is_preview        boolean          NOT NULL DEFAULT false,
    duration_s        double precision,
    duration_ts       bigint,
    duration_order    numeric,
    position_s        double precision,
    position_ts       bigint,
    position_order    numeric,
    max_position_s    double precision,
    watch_seconds     numeric(18, 3)   NOT NULL DEFAULT 0,
    coverage          double precision[] NOT NULL DEFAULT '{}',
    unique_seconds    numeric(18, 3)   NOT NULL DEFAULT 0,
    completion_pct    numeric(5, 2),
    complete_ts       bigint,
    completed         boolean          NOT NULL DEFAULT false,
    completed_at      timestamptz,
    history_ranges    integer          NOT NULL DEFAULT 0,
    plays             integer          NOT NULL DEFAULT 0,
    pauses            integer          NOT NULL DEFAULT 0,
    seeks             integer          NOT NULL DEFAULT 0,
    user_agent        text,
    user_agent_ts     bigint,
    user_agent_order  numeric,
    device_type       text,
    browser           text,
    os                text,
    referrer          text,
    referrer_ts       bigint,
    referrer_order    numeric,
    first_event       uuid,
    last_event        uuid,
    course_event      uuid,
    lesson_event      uuid,
    duration_event    uuid,
    position_event    uuid,
    user_agent_event  uuid,
    referrer_event    uuid
) WITH (fillfactor = 60);
COMMENT ON TABLE progress_sessions IS
    'Working state of processor progress, one row per session: the columns of video_sessions plus '
    'the (event time, stream order) of the event each "latest"/"first" value came from, so that late '
    'events change nothing they should not. Analysts read video_sessions.';
COMMENT ON COLUMN progress_sessions.session_id IS 'The session.';
COMMENT ON COLUMN progress_sessions.video_id IS
    'The video the session belongs to: that of the first of its events this processor applied. '
    'Events naming the session with another video or viewer are refused (processor_refusals).';
COMMENT ON COLUMN progress_sessions.viewer_id IS 'The viewer the session belongs to (as video_id).';
COMMENT ON COLUMN progress_sessions.first_ts IS 'Smallest ts (ms) of the session''s events.';
COMMENT ON COLUMN progress_sessions.started_at IS 'Smallest ts of the session''s events.';
COMMENT ON COLUMN progress_sessions.last_ts IS 'Greatest ts (ms) of the session''s events.';
COMMENT ON COLUMN progress_sessions.last_event_at IS 'Greatest ts of the session''s events.';
COMMENT ON COLUMN progress_sessions.span_lo IS 'Smallest ts (ms) of the session''s events.';
COMMENT ON COLUMN progress_sessions.span_hi IS 'Greatest ts (ms) of the session''s events.';
COMMENT ON COLUMN progress_sessions.granted IS
    'Seconds of played media granted to the session so far: at most 16 * (span_hi - span_lo) / 1000 + 30.';
COMMENT ON COLUMN progress_sessions.course_id IS 'course_id of the latest event carrying one.';
COMMENT ON COLUMN progress_sessions.course_ts IS
    'Event time (ms, min(ts, received_at)) of that event; with course_order, what "latest" compares.';
COMMENT ON COLUMN progress_sessions.course_order IS
    'Stream order of that event (entry id ms * 2^64 + seq): breaks ties in event time.';
COMMENT ON COLUMN progress_sessions.lesson_id IS 'lesson_id of the latest event carrying one.';
COMMENT ON COLUMN progress_sessions.lesson_ts IS 'Event time (ms) of that event.';
COMMENT ON COLUMN progress_sessions.lesson_order IS 'Stream order of that event.';
COMMENT ON COLUMN progress_sessions.is_preview IS 'True when any event of the session says is_preview.';
COMMENT ON COLUMN progress_sessions.duration_s IS 'duration_s of the latest event carrying one.';
COMMENT ON COLUMN progress_sessions.duration_ts IS 'Event time (ms) of that event.';
COMMENT ON COLUMN progress_sessions.duration_order IS 'Stream order of that event.';
COMMENT ON COLUMN progress_sessions.position_s IS 'position_s of the latest event carrying one.';
COMMENT ON COLUMN progress_sessions.position_ts IS 'Event time (ms) of that event.';
COMMENT ON COLUMN progress_sessions.position_order IS 'Stream order of that event.';
COMMENT ON COLUMN progress_sessions.max_position_s IS 'Greatest position_s or granted played-range end.';
COMMENT ON COLUMN progress_sessions.watch_seconds IS 'See video_sessions.watch_seconds.';
COMMENT ON COLUMN progress_sessions.coverage IS
    'Union of all granted played ranges, merged and flattened: {start1, end1, ...}; at most 512 ranges '
    '(beyond, the narrowest gaps are filled).';
COMMENT ON COLUMN progress_sessions.unique_seconds IS 'Length of coverage, rounded to the millisecond.';
COMMENT ON COLUMN progress_sessions.completion_pct IS '100 * length of coverage / duration_s, at most 100, 2 decimals.';
COMMENT ON COLUMN progress_sessions.complete_ts IS 'Smallest ts (ms) of the session''s complete events, if any.';
COMMENT ON COLUMN progress_sessions.completed IS 'See video_sessions.completed.';
COMMENT ON COLUMN progress_sessions.completed_at IS 'See video_sessions.completed_at.';
COMMENT ON COLUMN progress_sessions.history_ranges IS
    'Played ranges of the session kept in progress_played; past 2048 none are kept any more and the '
    'value is 2049 (completed_at is then no longer moved earlier by late events).';
COMMENT ON COLUMN progress_sessions.plays IS 'Number of play events.';
COMMENT ON COLUMN progress_sessions.pauses IS 'Number of pause events.';
COMMENT ON COLUMN progress_sessions.seeks IS 'Number of seek events.';
COMMENT ON COLUMN progress_sessions.user_agent IS 'User-Agent of the first event whose request carried one.';
COMMENT ON COLUMN progress_sessions.user_agent_ts IS 'Event time (ms) of that event.';
COMMENT ON COLUMN progress_sessions.user_agent_order IS 'Stream order of that event.';
COMMENT ON COLUMN progress_sessions.device_type IS 'desktop, mobile, tablet or other, from user_agent (bots'' events make no session).';
COMMENT ON COLUMN progress_sessions.browser IS 'Browser family from user_agent.';
COMMENT ON COLUMN progress_sessions.os IS 'Operating-system family from user_agent.';
COMMENT ON COLUMN progress_sessions.referrer IS 'Referer of the first event whose request carried one.';
COMMENT ON COLUMN progress_sessions.referrer_ts IS 'Event time (ms) of that event.';
COMMENT ON COLUMN progress_sessions.referrer_order IS 'Stream order of that event.';
COMMENT ON COLUMN progress_sessions.first_event IS 'Unused since migration 0003; kept so that processes of an earlier release keep working during an upgrade.';
COMMENT ON COLUMN progress_sessions.last_event IS 'Unused since migration 0003; kept so that processes of an earlier release keep working during an upgrade.';
COMMENT ON COLUMN progress_sessions.course_event IS 'Unused since migration 0003; kept so that processes of an earlier release keep working during an upgrade.';
COMMENT ON COLUMN progress_sessions.lesson_event IS 'Unused since migration 0003; kept so that processes of an earlier release keep working during an upgrade.';
COMMENT ON COLUMN progress_sessions.duration_event IS 'Unused since migration 0003; kept so that processes of an earlier release keep working during an upgrade.';
COMMENT ON COLUMN progress_sessions.position_event IS 'Unused since migration 0003; kept so that processes of an earlier release keep working during an upgrade.';
COMMENT ON COLUMN progress_sessions.user_agent_event IS 'Unused since migration 0003; kept so that processes of an earlier release keep working during an upgrade.';
COMMENT ON COLUMN progress_sessions.referrer_event IS 'Unused since migration 0003; kept so that processes of an earlier release keep working during an upgrade.';
CREATE INDEX IF NOT EXISTS progress_sessions_viewer_video_idx ON progress_sessions (viewer_id, video_id);
CREATE INDEX IF NOT EXISTS progress_sessions_video_idx ON progress_sessions (video_id);

CREATE TABLE IF NOT EXISTS progress_played (
    session_id  text               NOT NULL,
    ts          bigint             NOT NULL,
    ranges      double precision[] NOT NULL
);
COMMENT ON TABLE progress_played IS
    'Working state of processor progress: the played ranges of each event (clipped, merged, flattened), '
    'read only to place completed_at exactly when events arrive out of order. Not meant for analysts.';
COMMENT ON COLUMN progress_played.session_id IS 'The session.';
COMMENT ON COLUMN progress_played.ts IS 'ts (ms) of the event.';
COMMENT ON COLUMN progress_played.ranges IS 'Its played ranges: {start1, end1, start2, end2, ...}.';
CREATE INDEX IF NOT EXISTS progress_played_session_idx ON progress_played (session_id);

CREATE OR REPLACE VIEW video_sessions AS
SELECT session_id, video_id, viewer_id, course_id, lesson_id, is_preview, started_at, last_event_at,
       duration_s, position_s, max_position_s, watch_seconds, unique_seconds, completion_pct,
       completed, completed_at, plays, pauses, seeks, user_agent, device_type, browser, os, referrer
FROM progress_sessions;
COMMENT ON VIEW video_sessions IS
    'One row per playback session (session_id): one view of one video. Values are exact whatever the '
    'order events arrive in; "latest" means greatest (min(ts, received_at), stream order), see '
    'docs/processors.md. (A view over progress_sessions, which also keeps what the processor needs '
    'to stay exact.)';
COMMENT ON COLUMN video_sessions.session_id IS 'The playback session (client-generated, one per page view of a video).';
COMMENT ON COLUMN video_sessions.video_id IS
    'The video watched: that of the first of the session''s events the processor applied; later events '
    'naming the session with another video or viewer are refused.';
COMMENT ON COLUMN video_sessions.viewer_id IS 'The viewer (as video_id).';
COMMENT ON COLUMN video_sessions.course_id IS 'course_id of the latest event carrying one.';
COMMENT ON COLUMN video_sessions.lesson_id IS 'lesson_id of the latest event carrying one.';
COMMENT ON COLUMN video_sessions.is_preview IS 'True when any event of the session says is_preview.';
COMMENT ON COLUMN video_sessions.started_at IS 'Smallest ts (client time) of the session''s events.';
COMMENT ON COLUMN video_sessions.last_event_at IS 'Greatest ts (client time) of the session''s events.';
COMMENT ON COLUMN video_sessions.duration_s IS 'Media duration in seconds, of the latest event carrying one.';
COMMENT ON COLUMN video_sessions.position_s IS 'Playhead in seconds, of the latest event carrying one.';
COMMENT ON COLUMN video_sessions.max_position_s IS 'Furthest point reached: the greatest position_s or played-range end.';
COMMENT ON COLUMN video_sessions.watch_seconds IS
    'Seconds played, rewatches included (sum over events of their merged, clipped ranges, each rounded to '
    'the millisecond). A session is credited at most 16 * its span (greatest minus smallest ts) '
    '+ 30 s of played media; each event gets what of its ranges still fits when it is applied.';
COMMENT ON COLUMN video_sessions.unique_seconds IS
    'Distinct media seconds played: length of the union of all credited played ranges (coverage), '
    'rounded to the millisecond.';
COMMENT ON COLUMN video_sessions.completion_pct IS
    '100 * unique_seconds / duration_s, at most 100, rounded half up to 2 decimals; NULL without a duration. '
    'Seeking to the end does not raise it: only played seconds count.';
COMMENT ON COLUMN video_sessions.completed IS
    'completion_pct >= 100 * VIDPULSE_COMPLETION_THRESHOLD, or the session sent a complete event.';
COMMENT ON COLUMN video_sessions.completed_at IS
    'When the session became completed, in client time: the smallest ts t such that the session''s events '
    'with ts <= t complete it (a complete event among them, or their coverage reaching the threshold of '
    'the session''s duration_s). NULL when not completed. Independent of arrival order.';
COMMENT ON COLUMN video_sessions.plays IS 'Number of play events.';
COMMENT ON COLUMN video_sessions.pauses IS 'Number of pause events.';
COMMENT ON COLUMN video_sessions.seeks IS 'Number of seek events.';
COMMENT ON COLUMN video_sessions.user_agent IS 'User-Agent header of the session''s first request carrying one.';
COMMENT ON COLUMN video_sessions.device_type IS
    'desktop, mobile, tablet or other (parsed from user_agent with ua-parser); bots'' events make no session.';
COMMENT ON COLUMN video_sessions.browser IS 'Browser family, e.g. Chrome, Mobile Safari, Firefox (ua-parser).';
COMMENT ON COLUMN video_sessions.os IS 'Operating-system family, e.g. Windows, Mac OS X, iOS, Android (ua-parser).';
COMMENT ON COLUMN video_sessions.referrer IS 'Referer header of the session''s first request carrying one.';

CREATE TABLE IF NOT EXISTS video_watch_progress (
    viewer_id         text             NOT NULL,
    video_id          text             NOT NULL,
    position_s        double precision,
    duration_s        double precision,
    progress_pct      numeric(5, 2),
    completed         boolean          NOT NULL DEFAULT false,
    first_watched_at  timestamptz,
    last_watched_at   timestamptz,
    completed_at      timestamptz,
    course_id         text,
    lesson_id         text,
    PRIMARY KEY (viewer_id, video_id)
) WITH (fillfactor = 60);
COMMENT ON TABLE video_watch_progress IS
    'Resume state, one row per (viewer_id, video_id), over all the viewer''s sessions of the video. '
    'A late, older event never moves the resume position backwards.';
COMMENT ON COLUMN video_watch_progress.viewer_id IS 'The viewer.';
COMMENT ON COLUMN video_watch_progress.video_id IS 'The video.';
COMMENT ON COLUMN video_watch_progress.position_s IS
    'Where to resume: position_s of the viewer''s latest event on the video carrying a position '
    '(latest = greatest (min(ts, received_at), stream order)).';
COMMENT ON COLUMN video_watch_progress.duration_s IS 'duration_s of the viewer''s latest event on the video carrying one.';
COMMENT ON COLUMN video_watch_progress.progress_pct IS
    '100 * position_s / duration_s, at most 100, rounded half up to 2 decimals; NULL when either is unknown.';
COMMENT ON COLUMN video_watch_progress.completed IS 'True when any of the viewer''s sessions of the video is completed (sticky).';
COMMENT ON COLUMN video_watch_progress.first_watched_at IS 'Smallest ts of the viewer''s events on the video.';
COMMENT ON COLUMN video_watch_progress.last_watched_at IS 'Greatest ts of the viewer''s events on the video.';
COMMENT ON COLUMN video_watch_progress.completed_at IS 'Earliest completed_at of the viewer''s completed sessions of the video.';
COMMENT ON COLUMN video_watch_progress.course_id IS 'course_id of the viewer''s latest event on the video carrying one.';
COMMENT ON COLUMN video_watch_progress.lesson_id IS 'lesson_id of the viewer''s latest event on the video carrying one.';
CREATE INDEX IF NOT EXISTS video_watch_progress_video_idx ON video_watch_progress (video_id);

CREATE TABLE IF NOT EXISTS progress_applied (
    event_id    uuid        PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE progress_applied IS 'Ledger of processor progress: event ids already applied (kept at least 7 days).';
COMMENT ON COLUMN progress_applied.event_id IS 'An applied event.';
COMMENT ON COLUMN progress_applied.applied_at IS 'When it was applied; rows older than the retention are purged.';
CREATE INDEX IF NOT EXISTS progress_applied_at_idx ON progress_applied USING brin (applied_at);

-- ---------------------------------------------------------------------------
-- processor `metrics`: counters per video, all time and per UTC day
-- ---------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS video_metrics (
    video_id           text             PRIMARY KEY,
    views              bigint           NOT NULL DEFAULT 0,
    unique_viewers     bigint           NOT NULL DEFAULT 0,
    watch_seconds      numeric(18, 3)   NOT NULL DEFAULT 0,
    plays              bigint           NOT NULL DEFAULT 0,
    pauses             bigint           NOT NULL DEFAULT 0,
    seeks              bigint           NOT NULL DEFAULT 0,
    watched_25_count   bigint           NOT NULL DEFAULT 0,
    watched_50_count   bigint           NOT NULL DEFAULT 0,
    watched_75_count   bigint           NOT NULL DEFAULT 0,
    watched_90_count   bigint           NOT NULL DEFAULT 0,
    completions        bigint           NOT NULL DEFAULT 0,
    unique_completers  bigint           NOT NULL DEFAULT 0,
    first_event_at     timestamptz,
    last_event_at      timestamptz,
    bot_events         bigint           NOT NULL DEFAULT 0
);
COMMENT ON TABLE video_metrics IS
    'Counters per video over all time. Exact: every event counts once, distinct counts are kept with '
    'membership rows (metrics_members), whatever the retries, redeliveries and arrival order.';
COMMENT ON COLUMN video_metrics.video_id IS 'The video.';
COMMENT ON COLUMN video_metrics.views IS 'Distinct sessions with a session_start event.';
COMMENT ON COLUMN video_metrics.unique_viewers IS 'Distinct viewers with any event.';
COMMENT ON COLUMN video_metrics.watch_seconds IS
    'Seconds played over all events, rewatches included (each event''s ranges clipped to its duration '
    'and merged, rounded to the millisecond); only media granted to the session counts (at most '
    '16 * its span + 30 s, see video_sessions.watch_seconds).';
COMMENT ON COLUMN video_metrics.plays IS 'Number of play events.';
COMMENT ON COLUMN video_metrics.pauses IS 'Number of pause events.';
COMMENT ON COLUMN video_metrics.seeks IS 'Number of seek events.';
COMMENT ON COLUMN video_metrics.watched_25_count IS 'Distinct viewers with a milestone 25 event (25% of the video''s seconds covered in a session).';
COMMENT ON COLUMN video_metrics.watched_50_count IS 'Distinct viewers with a milestone 50 event.';
COMMENT ON COLUMN video_metrics.watched_75_count IS 'Distinct viewers with a milestone 75 event.';
COMMENT ON COLUMN video_metrics.watched_90_count IS 'Distinct viewers with a milestone 90 event.';
COMMENT ON COLUMN video_metrics.completions IS 'Distinct sessions with both a session_start and a complete event.';
COMMENT ON COLUMN video_metrics.unique_completers IS 'Distinct viewers of those sessions.';
COMMENT ON COLUMN video_metrics.first_event_at IS 'Smallest ts (client time) of the video''s events.';
COMMENT ON COLUMN video_metrics.last_event_at IS 'Greatest ts (client time) of the video''s events.';
COMMENT ON COLUMN video_metrics.bot_events IS
    'Events of the video sent by bots (video_events.is_bot): left out of every other counter here, '
    'of video_sessions, video_watch_progress and video_heatmap.';

CREATE TABLE IF NOT EXISTS video_metrics_daily (
    video_id           text             NOT NULL,
    day                date             NOT NULL,
    views              bigint           NOT NULL DEFAULT 0,
    unique_viewers     bigint           NOT NULL DEFAULT 0,
    watch_seconds      numeric(18, 3)   NOT NULL DEFAULT 0,
    plays              bigint           NOT NULL DEFAULT 0,
    pauses             bigint           NOT NULL DEFAULT 0,
    seeks              bigint           NOT NULL DEFAULT 0,
    watched_25_count   bigint           NOT NULL DEFAULT 0,
    watched_50_count   bigint           NOT NULL DEFAULT 0,
    watched_75_count   bigint           NOT NULL DEFAULT 0,
    watched_90_count   bigint           NOT NULL DEFAULT 0,
    completions        bigint           NOT NULL DEFAULT 0,
    unique_completers  bigint           NOT NULL DEFAULT 0,
    first_event_at     timestamptz,
    last_event_at      timestamptz,
    bot_events         bigint           NOT NULL DEFAULT 0,
    PRIMARY KEY (video_id, day)
);
COMMENT ON TABLE video_metrics_daily IS
    'The counters of video_metrics per video and UTC day of the event''s ts. Distinct counts are '
    'distinct within the day, so they do not add up to the all-time ones.';
COMMENT ON COLUMN video_metrics_daily.video_id IS 'The video.';
COMMENT ON COLUMN video_metrics_daily.day IS 'UTC date of the events'' ts (client time).';
COMMENT ON COLUMN video_metrics_daily.views IS 'Distinct sessions with a session_start event that day.';
COMMENT ON COLUMN video_metrics_daily.unique_viewers IS 'Distinct viewers with any event that day.';
COMMENT ON COLUMN video_metrics_daily.watch_seconds IS 'Seconds played by the day''s events, rewatches included.';
COMMENT ON COLUMN video_metrics_daily.plays IS 'Number of play events that day.';
COMMENT ON COLUMN video_metrics_daily.pauses IS 'Number of pause events that day.';
COMMENT ON COLUMN video_metrics_daily.seeks IS 'Number of seek events that day.';
COMMENT ON COLUMN video_metrics_daily.watched_25_count IS 'Distinct viewers with a milestone 25 event that day.';
COMMENT ON COLUMN video_metrics_daily.watched_50_count IS 'Distinct viewers with a milestone 50 event that day.';
COMMENT ON COLUMN video_metrics_daily.watched_75_count IS 'Distinct viewers with a milestone 75 event that day.';
COMMENT ON COLUMN video_metrics_daily.watched_90_count IS 'Distinct viewers with a milestone 90 event that day.';
COMMENT ON COLUMN video_metrics_daily.completions IS
    'Distinct sessions with a complete event that day and a session_start (any day).';
COMMENT ON COLUMN video_metrics_daily.unique_completers IS 'Distinct viewers of those sessions.';
COMMENT ON COLUMN video_metrics_daily.first_event_at IS 'Smallest ts of the video''s events that day.';
COMMENT ON COLUMN video_metrics_daily.last_event_at IS 'Greatest ts of the video''s events that day.';
COMMENT ON COLUMN video_metrics_daily.bot_events IS 'Events of the video sent by bots that day.';
CREATE INDEX IF NOT EXISTS video_metrics_daily_day_idx ON video_metrics_daily (day);

CREATE TABLE IF NOT EXISTS metrics_members (
    video_id  text NOT NULL,
    kind      text NOT NULL,
    member    text NOT NULL,
    PRIMARY KEY (video_id, kind, member)
);
COMMENT ON TABLE metrics_members IS
    'Working state of processor metrics: who was already counted in each distinct count of video_metrics, '
    'so that each counts once. Not meant for analysts.';
COMMENT ON COLUMN metrics_members.video_id IS 'The video.';
COMMENT ON COLUMN metrics_members.kind IS
    'Which count: view (session_id with a session_start), viewer (viewer_id), m25/m50/m75/m90 (viewer_id '
    'with that milestone), completion (session_id with a session_start and a complete event), '
    'completer (viewer_id of such a session).';
COMMENT ON COLUMN metrics_members.member IS 'The session_id or viewer_id counted.';

CREATE TABLE IF NOT EXISTS metrics_daily_members (
    video_id  text NOT NULL,
    day       date NOT NULL,
    kind      text NOT NULL,
    member    text NOT NULL,
    PRIMARY KEY (video_id, day, kind, member)
);
COMMENT ON TABLE metrics_daily_members IS 'metrics_members per UTC day, for video_metrics_daily. Not meant for analysts.';
COMMENT ON COLUMN metrics_daily_members.video_id IS 'The video.';
COMMENT ON COLUMN metrics_daily_members.day IS 'UTC date of the events'' ts.';
COMMENT ON COLUMN metrics_daily_members.kind IS 'Which count, as in metrics_members.kind.';
COMMENT ON COLUMN metrics_daily_members.member IS 'The session_id or viewer_id counted.';

CREATE TABLE IF NOT EXISTS metrics_sessions (
    session_id     text             PRIMARY KEY,
    video_id       text             NOT NULL,
    viewer_id      text             NOT NULL,
    span_lo        bigint,
    span_hi        bigint,
    granted        double precision NOT NULL DEFAULT 0,
    started        boolean          NOT NULL DEFAULT false,
    complete_days  date[]           NOT NULL DEFAULT '{}'
) WITH (fillfactor = 60);
COMMENT ON TABLE metrics_sessions IS
    'Working state of processor metrics, one row per session: who it belongs to, the media it was '
    'granted, and what makes it a completion. Not meant for analysts.';
COMMENT ON COLUMN metrics_sessions.session_id IS 'The session.';
COMMENT ON COLUMN metrics_sessions.video_id IS
    'The video the session belongs to: that of the first of its events this processor applied. '
    'Events naming the session with another video or viewer are refused (processor_refusals).';
COMMENT ON COLUMN metrics_sessions.viewer_id IS 'The viewer the session belongs to (as video_id).';
COMMENT ON COLUMN metrics_sessions.span_lo IS 'Smallest ts (ms) of the session''s events.';
COMMENT ON COLUMN metrics_sessions.span_hi IS 'Greatest ts (ms) of the session''s events.';
COMMENT ON COLUMN metrics_sessions.granted IS
    'Seconds of played media granted to the session so far: at most 16 * (span_hi - span_lo) / 1000 + 30.';
COMMENT ON COLUMN metrics_sessions.started IS 'Whether the session sent a session_start event.';
COMMENT ON COLUMN metrics_sessions.complete_days IS 'UTC days of the session''s complete events.';

CREATE TABLE IF NOT EXISTS metrics_applied (
    event_id    uuid        PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE metrics_applied IS 'Ledger of processor metrics: event ids already applied (kept at least 7 days).';
COMMENT ON COLUMN metrics_applied.event_id IS 'An applied event.';
COMMENT ON COLUMN metrics_applied.applied_at IS 'When it was applied; rows older than the retention are purged.';
CREATE INDEX IF NOT EXISTS metrics_applied_at_idx ON metrics_applied USING brin (applied_at);

-- ---------------------------------------------------------------------------
-- `vidpulse forget`: viewers whose data was erased
-- ---------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS forgotten_viewers (
    viewer_hash   text        PRIMARY KEY,
    forgotten_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE forgotten_viewers IS
    'Viewers erased by `vidpulse forget`, so that events of theirs still in flight (read by a '
    'processor, or being appended by the ingest) are dropped rather than written back. Rows older '
    'than the ledger retention are purged: no event from before the erasure can arrive any more.';
COMMENT ON COLUMN forgotten_viewers.viewer_hash IS 'Hex SHA-256 of the viewer_id (the id itself is not kept).';
COMMENT ON COLUMN forgotten_viewers.forgotten_at IS
    'When the viewer was erased: their events with ts up to 5 minutes later (the ingest''s clock '
    'tolerance) are dropped; later ones are new activity.';

-- ---------------------------------------------------------------------------
-- events the processors refused
-- ---------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS processor_refusals (
    processor  text        NOT NULL,
    reason     text        NOT NULL,
    events     bigint      NOT NULL DEFAULT 0,
    last_at    timestamptz,
    PRIMARY KEY (processor, reason)
);
COMMENT ON TABLE processor_refusals IS
    'Events a processor refused to count, per processor and reason. They stay in video_events.';
COMMENT ON COLUMN processor_refusals.processor IS 'The processor (heatmap, progress, metrics).';
COMMENT ON COLUMN processor_refusals.reason IS
    'session_taken: the event names a session that belongs to another video or viewer (the one of '
    'the first of its events the processor applied).';
COMMENT ON COLUMN processor_refusals.events IS 'How many events were refused for that reason.';
COMMENT ON COLUMN processor_refusals.last_at IS 'When the last of them was refused (server time).';

-- ---------------------------------------------------------------------------
-- views for analysts
-- ---------------------------------------------------------------------------

CREATE OR REPLACE VIEW video_analytics_summary AS
SELECT m.video_id,
       m.views,
       m.unique_viewers,
       m.watch_seconds,
       round((m.watch_seconds / NULLIF(m.views, 0))::numeric, 2)          AS avg_watch_seconds_per_view,
       m.plays,
       m.pauses,
       m.seeks,
       m.watched_25_count,
       m.watched_50_count,
       m.watched_75_count,
       m.watched_90_count,
       m.completions,
       m.unique_completers,
       round(100.0 * m.completions / NULLIF(m.views, 0), 2)               AS completion_rate_pct,
       s.sessions,
       round(s.avg_completion_pct, 2)                                      AS avg_completion_pct,
       m.first_event_at,
       m.last_event_at
FROM video_metrics m
LEFT JOIN (
    SELECT video_id, count(*) AS sessions, avg(completion_pct) AS avg_completion_pct
    FROM progress_sessions
    GROUP BY video_id
) s USING (video_id);
COMMENT ON VIEW video_analytics_summary IS
    'One row per video: the all-time counters of video_metrics with the usual ratios, and the '
    'average completion of its sessions (from video_sessions).';
COMMENT ON COLUMN video_analytics_summary.video_id IS 'The video.';
COMMENT ON COLUMN video_analytics_summary.views IS 'Distinct sessions with a session_start event.';
COMMENT ON COLUMN video_analytics_summary.unique_viewers IS 'Distinct viewers with any event.';
COMMENT ON COLUMN video_analytics_summary.watch_seconds IS 'Seconds played, rewatches included.';
COMMENT ON COLUMN video_analytics_summary.avg_watch_seconds_per_view IS 'watch_seconds / views, 2 decimals; NULL without views.';
COMMENT ON COLUMN video_analytics_summary.plays IS 'Number of play events.';
COMMENT ON COLUMN video_analytics_summary.pauses IS 'Number of pause events.';
COMMENT ON COLUMN video_analytics_summary.seeks IS 'Number of seek events.';
COMMENT ON COLUMN video_analytics_summary.watched_25_count IS 'Distinct viewers with a milestone 25 event.';
COMMENT ON COLUMN video_analytics_summary.watched_50_count IS 'Distinct viewers with a milestone 50 event.';
COMMENT ON COLUMN video_analytics_summary.watched_75_count IS 'Distinct viewers with a milestone 75 event.';
COMMENT ON COLUMN video_analytics_summary.watched_90_count IS 'Distinct viewers with a milestone 90 event.';
COMMENT ON COLUMN video_analytics_summary.completions IS 'Distinct sessions with both a session_start and a complete event.';
COMMENT ON COLUMN video_analytics_summary.unique_completers IS 'Distinct viewers of those sessions.';
COMMENT ON COLUMN video_analytics_summary.completion_rate_pct IS '100 * completions / views, 2 decimals; NULL without views.';
COMMENT ON COLUMN video_analytics_summary.sessions IS 'Sessions of the video known to video_sessions (with or without a session_start).';
COMMENT ON COLUMN video_analytics_summary.avg_completion_pct IS 'Average completion_pct of the video''s sessions, 2 decimals.';
COMMENT ON COLUMN video_analytics_summary.first_event_at IS 'Smallest ts of the video''s events.';
COMMENT ON COLUMN video_analytics_summary.last_event_at IS 'Greatest ts of the video''s events.';

CREATE OR REPLACE VIEW popular_videos AS
SELECT video_id, watched_50_count, views, unique_viewers, completions, unique_completers,
       watch_seconds, last_event_at
FROM video_metrics
ORDER BY watched_50_count DESC, views DESC, video_id;
COMMENT ON VIEW popular_videos IS
    'Videos by popularity: most distinct viewers past the half (watched_50_count) first, then most views.';
COMMENT ON COLUMN popular_videos.video_id IS 'The video.';
COMMENT ON COLUMN popular_videos.watched_50_count IS 'Distinct viewers with a milestone 50 event.';
COMMENT ON COLUMN popular_videos.views IS 'Distinct sessions with a session_start event.';
COMMENT ON COLUMN popular_videos.unique_viewers IS 'Distinct viewers with any event.';
COMMENT ON COLUMN popular_videos.completions IS 'Distinct sessions with both a session_start and a complete event.';
COMMENT ON COLUMN popular_videos.unique_completers IS 'Distinct viewers of those sessions.';
COMMENT ON COLUMN popular_videos.watch_seconds IS 'Seconds played, rewatches included.';
COMMENT ON COLUMN popular_videos.last_event_at IS 'Greatest ts of the video''s events.';

-- Upkeep: the processors purge working state older than the ledger retention by these.
CREATE INDEX IF NOT EXISTS progress_played_ts_idx ON progress_played USING brin (ts);
CREATE INDEX IF NOT EXISTS metrics_daily_members_day_idx ON metrics_daily_members USING brin (day);

-- ---------------------------------------------------------------------------
-- the catalogue: what the dashboard shows beside a video id
-- ---------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS videos (
    video_id      text             PRIMARY KEY,
    title         text             NOT NULL,
    course_id     text,
    course_title  text,
    duration_s    double precision CHECK (duration_s IS NULL OR duration_s > 0),
    is_preview    boolean          NOT NULL DEFAULT false,
    updated_at    timestamptz      NOT NULL DEFAULT now()
);
COMMENT ON TABLE videos IS
    'The catalogue: titles and courses of videos, filled by PUT /api/v1/videos/{video_id} and '
    '`vidpulse catalogue import FILE.csv`. Videos seen in events need not be in it.';
COMMENT ON COLUMN videos.video_id IS 'The video, as events name it.';
COMMENT ON COLUMN videos.title IS 'Title shown wherever the video is.';
COMMENT ON COLUMN videos.course_id IS 'The course the video belongs to.';
COMMENT ON COLUMN videos.course_title IS 'Title of that course.';
COMMENT ON COLUMN videos.duration_s IS 'Media duration in seconds, when known.';
COMMENT ON COLUMN videos.is_preview IS
    'A free preview: left out of popular lists and, by default, of the video list. For a video in '
    'the catalogue this flag decides; for one that is not, its events'' is_preview do.';
COMMENT ON COLUMN videos.updated_at IS 'When the entry was last written.';

-- The dashboard asks "has this video any preview session?" per listed video.
CREATE INDEX IF NOT EXISTS progress_sessions_preview_idx ON progress_sessions (video_id)
    WHERE is_preview;

-- ---------------------------------------------------------------------------
-- the schema's own version
-- ---------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer     PRIMARY KEY,
    name        text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE schema_migrations IS
    'The numbered migrations (vidpulse/migrations/NNNN_name.sql) this database has, one row each. '
    'Written by `vidpulse migrate`; a process that knows a migration the database lacks waits for it.';
COMMENT ON COLUMN schema_migrations.version IS 'The migration''s number (NNNN); 1 is release 0.1.';
COMMENT ON COLUMN schema_migrations.name IS 'The migration''s name (the file name without number and .sql).';
COMMENT ON COLUMN schema_migrations.applied_at IS 'When it was applied (or when a fresh database was made with it).';
