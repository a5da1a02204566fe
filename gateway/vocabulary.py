"""The words the gateway reads and writes in status answers and scene results, named once
(they are the status service's: services/status/model.py and status.proto)."""

from __future__ import annotations

from typing import Final

# A video's status.
DRAFT: Final = "draft"
QUEUED: Final = "queued"  # waiting its turn in this gateway's line (answers only)
GENERATING: Final = "generating_images"
DONE: Final = "assets_generated"
FAILED: Final = "failed"
PROCESSING: Final = "processing"  # nothing is known (the status service cannot answer)

# A run's final status, and the statuses in which an answer may still change by itself.
FINAL: Final = (DONE, FAILED)
RUNNING: Final = (GENERATING, QUEUED)

# A scene result's state.
SCENE_STORED: Final = "stored"
SCENE_FAILED: Final = "failed"
SCENE_GENERATING: Final = "generating"  # a preview and no result yet
