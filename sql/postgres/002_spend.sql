-- What each scene's image cost, and when it was paid for (the daily budget cap sums these).
ALTER TABLE preview_scenes ADD COLUMN IF NOT EXISTS cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE preview_scenes ADD COLUMN IF NOT EXISTS cost_known BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE preview_scenes ADD COLUMN IF NOT EXISTS paid_at_ms BIGINT NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS preview_scenes_paid ON preview_scenes (paid_at_ms);
