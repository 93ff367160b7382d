-- Bounded sessions: binding to (video, viewer), credited media, "latest" by
-- (event time, stream order), refused-event counters, sums in whole milliseconds.
-- Runs in one transaction; the views over the changed columns are dropped and made
-- again (their comments come back with schema.sql).

DROP VIEW IF EXISTS video_analytics_summary;
DROP VIEW IF EXISTS popular_videos;
DROP VIEW IF EXISTS video_sessions;

-- progress: order columns instead of event ids, credit and history counters.
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
    ADD COLUMN IF NOT EXISTS referrer_order numeric,
    DROP COLUMN IF EXISTS first_event,
    DROP COLUMN IF EXISTS last_event,
    DROP COLUMN IF EXISTS course_event,
    DROP COLUMN IF EXISTS lesson_event,
    DROP COLUMN IF EXISTS duration_event,
    DROP COLUMN IF EXISTS position_event,
    DROP COLUMN IF EXISTS user_agent_event,
    DROP COLUMN IF EXISTS referrer_event;
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
    ADD COLUMN IF NOT EXISTS duration_order numeric,
    DROP COLUMN IF EXISTS position_event,
    DROP COLUMN IF EXISTS duration_event;
-- A session id seen with several videos keeps the row of the smallest video id.
DELETE FROM heatmap_sessions a USING heatmap_sessions b
WHERE a.session_id = b.session_id AND a.video_id > b.video_id;
UPDATE heatmap_sessions h
SET viewer_id = p.viewer_id, span_lo = p.span_lo, span_hi = p.span_hi, granted = p.granted
FROM progress_sessions p
WHERE p.session_id = h.session_id AND h.viewer_id IS NULL;
ALTER TABLE heatmap_sessions DROP CONSTRAINT IF EXISTS heatmap_sessions_pkey;
ALTER TABLE heatmap_sessions ADD PRIMARY KEY (session_id);

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
