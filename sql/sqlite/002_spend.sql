-- What each scene's image cost, and when it was paid for (the daily budget cap sums these).
ALTER TABLE preview_scenes ADD COLUMN cost_usd REAL NOT NULL DEFAULT 0;
ALTER TABLE preview_scenes ADD COLUMN cost_known INTEGER NOT NULL DEFAULT 1;
ALTER TABLE preview_scenes ADD COLUMN paid_at_ms INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS preview_scenes_paid ON preview_scenes (paid_at_ms);
