-- 0002: the catalogue of videos (titles, courses, previews) for the dashboard.

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
