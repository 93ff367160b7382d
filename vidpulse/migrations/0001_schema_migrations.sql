-- Version 1: release 0.1, whose tables a database made before versions were recorded
-- already has, plus the table that records the versions from now on.
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
