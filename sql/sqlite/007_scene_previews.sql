-- A scene still being made: its latest preview (a partial image's public URL) and that
-- partial's index; cleared when the scene's result is reported or a new run starts.
ALTER TABLE preview_scenes ADD COLUMN preview_url TEXT NOT NULL DEFAULT '';
ALTER TABLE preview_scenes ADD COLUMN preview_index INTEGER NOT NULL DEFAULT 0;
