-- Who a video belongs to (the owner its first start named; an existing StoryShort
-- database's own owner column wins), and each user's starts, counted for per-user limits.
ALTER TABLE preview_runs ADD COLUMN IF NOT EXISTS owner TEXT NOT NULL DEFAULT '';
CREATE TABLE IF NOT EXISTS preview_user_starts (
  owner TEXT NOT NULL,
  video_id TEXT NOT NULL,
  scenes INTEGER NOT NULL,
  at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS preview_user_starts_owner_at ON preview_user_starts (owner, at_ms);
CREATE INDEX IF NOT EXISTS preview_runs_owner ON preview_runs (owner);
