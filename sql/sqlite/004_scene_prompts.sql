-- The prompt each scene's image was made from (a changed prompt regenerates the scene), and
-- whether the image was re-encoded to fit the bucket's size limit.
ALTER TABLE preview_scenes ADD COLUMN prompt TEXT NOT NULL DEFAULT '';
ALTER TABLE preview_scenes ADD COLUMN reencoded INTEGER NOT NULL DEFAULT 0;
