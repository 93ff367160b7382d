-- The processors' session tables and the resume rows are updated in place once per
-- batch that touches them: pages left 40% free let PostgreSQL keep each new row
-- version on its page (a HOT update, no index entries to add). Pages written from
-- now on are filled to 60%; existing pages get the room as they are rewritten.

ALTER TABLE heatmap_sessions SET (fillfactor = 60);
ALTER TABLE progress_sessions SET (fillfactor = 60);
ALTER TABLE metrics_sessions SET (fillfactor = 60);
ALTER TABLE video_watch_progress SET (fillfactor = 60);
