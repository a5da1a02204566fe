"""`make migrate` says what is wrong in one line: a database that does not exist, or a
DATABASE_URL that STATUS_STORE does not name (which would have migrated SQLite instead)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.pg import ADMIN_DSN
from tools.processes import ROOT


def migrate(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("STATUS_STORE", "DATABASE_URL")}
    return subprocess.run(
        [sys.executable, "-m", "services.status.migrate"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.postgres
def test_a_database_that_does_not_exist_is_named_with_the_way_out(pg_dsn: str) -> None:
    missing = f"storyshort_missing_{uuid.uuid4().hex[:8]}"
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{missing}"
    done = migrate({"STATUS_STORE": "postgres", "DATABASE_URL": dsn})
    assert done.returncode != 0
    assert f'database "{missing}" does not exist' in done.stderr
    assert "Create the database first" in done.stderr and "Traceback" not in done.stderr


def test_database_url_without_status_store_is_refused(tmp_path: Path) -> None:
    done = migrate({"DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test", "DATA_DIR": str(tmp_path)})
    assert done.returncode != 0
    assert "DATABASE_URL is set but STATUS_STORE is not" in done.stderr
    assert not (tmp_path / "status.sqlite3").exists()  # nothing migrated by mistake


@pytest.mark.postgres
def test_the_named_database_is_migrated(pg_dsn: str) -> None:
    done = migrate({"STATUS_STORE": "postgres", "DATABASE_URL": pg_dsn})
    assert done.returncode == 0, done.stderr
    assert "status schema applied" in done.stderr
