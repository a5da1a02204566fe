-- Each scene's prompt as the latest run was started (JSON [[scene, prompt], ...]): a resume needs no prompts.
ALTER TABLE preview_runs ADD COLUMN prompts TEXT NOT NULL DEFAULT '[]';
