-- Bot events: flagged in the raw log, counted apart in the metrics, left out of every aggregate.
-- Forgotten viewers: what `vidpulse forget` leaves so that in-flight events of theirs are dropped.

ALTER TABLE video_events ADD COLUMN IF NOT EXISTS is_bot boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN video_events.is_bot IS
    'True when the request''s User-Agent is a bot''s (crawler, headless browser, HTTP library): '
    'such events are kept here and counted in video_metrics.bot_events, and in no other table.';

COMMENT ON COLUMN progress_sessions.device_type IS 'desktop, mobile, tablet or other, from user_agent (bots'' events make no session).';
COMMENT ON COLUMN video_sessions.device_type IS
    'desktop, mobile, tablet or other (parsed from user_agent with ua-parser); bots'' events make no session.';

ALTER TABLE video_metrics ADD COLUMN IF NOT EXISTS bot_events bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN video_metrics.bot_events IS
    'Events of the video sent by bots (video_events.is_bot): left out of every other counter here, '
    'of video_sessions, video_watch_progress and video_heatmap.';

ALTER TABLE video_metrics_daily ADD COLUMN IF NOT EXISTS bot_events bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN video_metrics_daily.bot_events IS 'Events of the video sent by bots that day.';

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
