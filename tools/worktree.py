"""A commit checked out in a throwaway git worktree (tools/mutants.py, bench/paired.py)."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tools.processes import ROOT


@contextmanager
def scratch_worktree(rev: str = "HEAD", prefix: str = "storyshort-") -> Iterator[Path]:
    """``rev`` in a worktree of a temporary directory, removed (and unregistered) after."""
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        tree = Path(scratch) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), rev], cwd=ROOT, check=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
