-- Spend held for images being paid for right now (ReserveSpend): recorded spend plus open
-- holds stay within each cap. A hold ends when released or at expires_at_ms.
CREATE TABLE IF NOT EXISTS preview_spend_holds (
  id TEXT PRIMARY KEY,
  video_id TEXT NOT NULL,
  owner TEXT NOT NULL DEFAULT '',
  usd REAL NOT NULL,
  expires_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS preview_spend_holds_expires ON preview_spend_holds (expires_at_ms);
