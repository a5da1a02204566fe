-- Spend held for images being paid for right now (ReserveSpend), so every gateway and
-- worker sees what the others are about to spend: recorded spend plus open holds stay
-- within each cap. A hold ends when released (its cost recorded, or nothing was paid) or
-- at expires_at_ms (its holder died).
CREATE TABLE IF NOT EXISTS preview_spend_holds (
  id TEXT PRIMARY KEY,
  video_id TEXT NOT NULL,
  owner TEXT NOT NULL DEFAULT '',
  usd DOUBLE PRECISION NOT NULL,
  expires_at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS preview_spend_holds_expires ON preview_spend_holds (expires_at_ms);

-- The check and the hold in one transaction, as one function so that PostgREST (the
-- Supabase store) runs it as the PostgreSQL store does. A NULL cap is no cap. Answers what
-- was granted (0: nothing held) and each given cap's room before this hold. A second call
-- with the same id answers the hold it made (a retried call holds once).
CREATE OR REPLACE FUNCTION reserve_preview_spend(
  p_id TEXT,
  p_video_id TEXT,
  p_owner TEXT,
  p_usd DOUBLE PRECISION,
  p_since_ms BIGINT,
  p_daily_usd DOUBLE PRECISION,
  p_video_usd DOUBLE PRECISION,
  p_owner_usd DOUBLE PRECISION,
  p_ttl_ms BIGINT
) RETURNS TABLE (
  granted_usd DOUBLE PRECISION,
  daily_left_usd DOUBLE PRECISION,
  video_left_usd DOUBLE PRECISION,
  owner_left_usd DOUBLE PRECISION
)
LANGUAGE plpgsql AS $$
DECLARE
  at_ms BIGINT := (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT;
  existing DOUBLE PRECISION;
BEGIN
  -- One hold at a time across every status replica: the sums below must not move
  -- between the read and the insert.
  PERFORM pg_advisory_xact_lock(7410265);
  DELETE FROM preview_spend_holds h WHERE h.expires_at_ms <= at_ms;
  IF p_daily_usd IS NOT NULL THEN
    daily_left_usd := p_daily_usd
      - (SELECT COALESCE(SUM(s.cost_usd), 0) FROM preview_scenes s WHERE s.paid_at_ms >= p_since_ms)
      - (SELECT COALESCE(SUM(h.usd), 0) FROM preview_spend_holds h WHERE h.id <> p_id);
  END IF;
  IF p_video_usd IS NOT NULL THEN
    video_left_usd := p_video_usd
      - (SELECT COALESCE(SUM(s.cost_usd), 0) FROM preview_scenes s WHERE s.video_id = p_video_id)
      - (SELECT COALESCE(SUM(h.usd), 0) FROM preview_spend_holds h WHERE h.video_id = p_video_id AND h.id <> p_id);
  END IF;
  IF p_owner_usd IS NOT NULL AND p_owner <> '' THEN
    owner_left_usd := p_owner_usd
      - (SELECT COALESCE(SUM(s.cost_usd), 0) FROM preview_scenes s
         WHERE s.paid_at_ms >= p_since_ms
           AND s.video_id IN (SELECT r.video_id FROM preview_runs r WHERE r.owner = p_owner))
      - (SELECT COALESCE(SUM(h.usd), 0) FROM preview_spend_holds h WHERE h.owner = p_owner AND h.id <> p_id);
  END IF;
  SELECT h.usd INTO existing FROM preview_spend_holds h WHERE h.id = p_id;
  IF existing IS NOT NULL THEN
    granted_usd := existing;
  ELSE
    -- LEAST and GREATEST skip NULLs: a cap not given does not bound the hold.
    granted_usd := GREATEST(0, LEAST(p_usd, daily_left_usd, video_left_usd, owner_left_usd));
    IF granted_usd > 0 THEN
      INSERT INTO preview_spend_holds (id, video_id, owner, usd, expires_at_ms)
      VALUES (p_id, p_video_id, p_owner, granted_usd, at_ms + p_ttl_ms);
    END IF;
  END IF;
  RETURN NEXT;
END;
$$;

-- PostgREST (Supabase) serves a new function once its schema cache is reloaded; Supabase
-- does this on DDL by itself, and a plain PostgreSQL has no listener (a no-op there).
NOTIFY pgrst, 'reload schema';
