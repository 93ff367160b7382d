-- vidpulse database schema: the single source of the database shape.
-- Applied idempotently by `vidpulse migrate`. Analysts read the comments:
-- table and column names and meanings are a stable public interface.
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
