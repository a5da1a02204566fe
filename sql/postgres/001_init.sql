-- StoryShort status schema (PostgreSQL / Supabase). Applied by `make migrate`; safe to run twice.
-- An existing StoryShort database already has `videos`: it is used as it is, never altered.

CREATE TABLE IF NOT EXISTS videos (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL DEFAULT 'draft',
    image_upload_progress INTEGER NOT NULL DEFAULT 0
);

-- Our own data about a video's preview-image run, keyed by the video id.
CREATE TABLE IF NOT EXISTS preview_runs (
    video_id TEXT PRIMARY KEY,
    scene_count INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    summary TEXT NOT NULL DEFAULT '{}',
    updated_at_ms BIGINT NOT NULL
);

-- One row per scene, written as each scene finishes, so a run can resume.
CREATE TABLE IF NOT EXISTS preview_scenes (
    video_id TEXT NOT NULL,
    scene INTEGER NOT NULL,
    state TEXT NOT NULL,
    url TEXT NOT NULL DEFAULT '',
    path TEXT NOT NULL DEFAULT '',
    content_type TEXT NOT NULL DEFAULT '',
    placeholder BOOLEAN NOT NULL DEFAULT FALSE,
    provider TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    generate_ms BIGINT NOT NULL DEFAULT 0,
    upload_ms BIGINT NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (video_id, scene)
);

CREATE INDEX IF NOT EXISTS preview_runs_updated ON preview_runs (updated_at_ms);
