-- Who a video belongs to, and each user's starts, counted for per-user limits.
ALTER TABLE preview_runs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
CREATE TABLE IF NOT EXISTS preview_user_starts (
  owner TEXT NOT NULL,
  video_id TEXT NOT NULL,
  scenes INTEGER NOT NULL,
  at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS preview_user_starts_owner_at ON preview_user_starts (owner, at_ms);
CREATE INDEX IF NOT EXISTS preview_runs_owner ON preview_runs (owner);
