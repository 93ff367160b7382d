-- Bounded sessions: each aggregating processor binds a session to a (video, viewer),
-- credits it at most 16 x its span + 30 s of played media, orders "latest" by
-- (min(ts, received_at), stream order), counts the events it refuses, and stores sums of
-- seconds in whole milliseconds. Only adds (the *_event columns stay, unused), so that
-- processes of the previous release keep working until they are replaced. The views over
-- the columns whose type changes are made again, with their comments.

DROP VIEW IF EXISTS video_analytics_summary;
DROP VIEW IF EXISTS popular_videos;
DROP VIEW IF EXISTS video_sessions;

-- progress: credit, order columns, history counter.
ALTER TABLE progress_sessions
    ADD COLUMN IF NOT EXISTS span_lo bigint,
    ADD COLUMN IF NOT EXISTS span_hi bigint,
    ADD COLUMN IF NOT EXISTS granted double precision NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS history_ranges integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS course_order numeric,
    ADD COLUMN IF NOT EXISTS lesson_order numeric,
    ADD COLUMN IF NOT EXISTS duration_order numeric,
    ADD COLUMN IF NOT EXISTS position_order numeric,
    ADD COLUMN IF NOT EXISTS user_agent_order numeric,
    ADD COLUMN IF NOT EXISTS referrer_order numeric;
-- Sessions under way keep the allowance their events so far have earned.
UPDATE progress_sessions
SET span_lo = first_ts, span_hi = last_ts, granted = watch_seconds
WHERE span_lo IS NULL AND first_ts IS NOT NULL;
UPDATE progress_sessions p
SET history_ranges = least(2049, h.n)
FROM (SELECT session_id, sum(array_length(ranges, 1) / 2)::int AS n
      FROM progress_played GROUP BY session_id) h
WHERE h.session_id = p.session_id AND p.history_ranges = 0;
ALTER TABLE progress_sessions
    ALTER COLUMN watch_seconds TYPE numeric(18, 3) USING round(watch_seconds::numeric, 3),
    ALTER COLUMN unique_seconds TYPE numeric(18, 3) USING round(unique_seconds::numeric, 3);

-- heatmap: one row per session, bound to its viewer too.
ALTER TABLE heatmap_sessions
    ADD COLUMN IF NOT EXISTS viewer_id text,
    ADD COLUMN IF NOT EXISTS span_lo bigint,
    ADD COLUMN IF NOT EXISTS span_hi bigint,
    ADD COLUMN IF NOT EXISTS granted double precision NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS position_order numeric,
    ADD COLUMN IF NOT EXISTS duration_order numeric;
-- A session id seen with several videos keeps the row of the smallest video id.
DELETE FROM heatmap_sessions a USING heatmap_sessions b
WHERE a.session_id = b.session_id AND a.video_id > b.video_id;
UPDATE heatmap_sessions h
SET viewer_id = p.viewer_id, span_lo = p.span_lo, span_hi = p.span_hi, granted = p.granted
FROM progress_sessions p
WHERE p.session_id = h.session_id AND h.viewer_id IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS heatmap_sessions_session_idx ON heatmap_sessions (session_id);

ALTER TABLE video_heatmap
    ALTER COLUMN watch_seconds TYPE numeric(18, 3) USING round(watch_seconds::numeric, 3);

-- metrics: per-session state, seeded from what progress knows of sessions under way.
CREATE TABLE IF NOT EXISTS metrics_sessions (
    session_id     text             PRIMARY KEY,
    video_id       text             NOT NULL,
    viewer_id      text             NOT NULL,
    span_lo        bigint,
    span_hi        bigint,
    granted        double precision NOT NULL DEFAULT 0,
    started        boolean          NOT NULL DEFAULT false,
    complete_days  date[]           NOT NULL DEFAULT '{}'
);
INSERT INTO metrics_sessions (session_id, video_id, viewer_id, span_lo, span_hi, granted, started)
SELECT p.session_id, p.video_id, p.viewer_id, p.span_lo, p.span_hi, p.granted,
       EXISTS (SELECT 1 FROM metrics_members m
               WHERE m.video_id = p.video_id AND m.kind = 'view' AND m.member = p.session_id)
FROM progress_sessions p
WHERE p.video_id IS NOT NULL AND p.viewer_id IS NOT NULL
ON CONFLICT (session_id) DO NOTHING;

ALTER TABLE video_metrics
    ALTER COLUMN watch_seconds TYPE numeric(18, 3) USING round(watch_seconds::numeric, 3);
ALTER TABLE video_metrics_daily
    ALTER COLUMN watch_seconds TYPE numeric(18, 3) USING round(watch_seconds::numeric, 3);

CREATE TABLE IF NOT EXISTS processor_refusals (
    processor  text        NOT NULL,
    reason     text        NOT NULL,
    events     bigint      NOT NULL DEFAULT 0,
    last_at    timestamptz,
    PRIMARY KEY (processor, reason)
);

-- The views, as in schema.sql.
CREATE OR REPLACE VIEW video_sessions AS
SELECT session_id, video_id, viewer_id, course_id, lesson_id, is_preview, started_at, last_event_at,
       duration_s, position_s, max_position_s, watch_seconds, unique_seconds, completion_pct,
       completed, completed_at, plays, pauses, seeks, user_agent, device_type, browser, os, referrer
FROM progress_sessions;
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
CREATE OR REPLACE VIEW popular_videos AS
SELECT video_id, watched_50_count, views, unique_viewers, completions, unique_completers,
       watch_seconds, last_event_at
FROM video_metrics
ORDER BY watched_50_count DESC, views DESC, video_id;

-- Comments, as in schema.sql.
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
COMMENT ON COLUMN progress_sessions.device_type IS 'desktop, mobile, tablet, bot or other, from user_agent.';
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
COMMENT ON TABLE processor_refusals IS
    'Events a processor refused to count, per processor and reason. They stay in video_events.';
COMMENT ON COLUMN processor_refusals.processor IS 'The processor (heatmap, progress, metrics).';
COMMENT ON COLUMN processor_refusals.reason IS
    'session_taken: the event names a session that belongs to another video or viewer (the one of '
    'the first of its events the processor applied).';
COMMENT ON COLUMN processor_refusals.events IS 'How many events were refused for that reason.';
COMMENT ON COLUMN processor_refusals.last_at IS 'When the last of them was refused (server time).';
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
COMMENT ON COLUMN video_sessions.device_type IS 'desktop, mobile, tablet, bot or other (parsed from user_agent with ua-parser).';
COMMENT ON COLUMN video_sessions.browser IS 'Browser family, e.g. Chrome, Mobile Safari, Firefox (ua-parser).';
COMMENT ON COLUMN video_sessions.os IS 'Operating-system family, e.g. Windows, Mac OS X, iOS, Android (ua-parser).';
COMMENT ON COLUMN video_sessions.referrer IS 'Referer header of the session''s first request carrying one.';
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
COMMENT ON TABLE metrics_members IS
    'Working state of processor metrics: who was already counted in each distinct count of video_metrics, '
    'so that each counts once. Not meant for analysts.';
COMMENT ON COLUMN metrics_members.video_id IS 'The video.';
COMMENT ON COLUMN metrics_members.kind IS
    'Which count: view (session_id with a session_start), viewer (viewer_id), m25/m50/m75/m90 (viewer_id '
    'with that milestone), completion (session_id with a session_start and a complete event), '
    'completer (viewer_id of such a session).';
COMMENT ON COLUMN metrics_members.member IS 'The session_id or viewer_id counted.';
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
