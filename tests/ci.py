"""Whether the tests run in CI (CI=true): there, tests that need a server or a tool fail
instead of skipping when it is missing."""

from __future__ import annotations

import os

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
