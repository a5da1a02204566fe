"""PostgreSQL for tests: the machine's server on 127.0.0.1:5432. Each test gets its own
database, dropped afterwards. With CI=true a missing server fails the test (never skips)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.ci import IN_CI

ADMIN_DSN = os.environ.get("TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def pg_reachable() -> str | None:
    try:
        with psycopg.connect(ADMIN_DSN, connect_timeout=3):
            return None
    except psycopg.OperationalError as exc:
        return str(exc).splitlines()[0]


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    problem = pg_reachable()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"CI=true and PostgreSQL is not reachable at {ADMIN_DSN}: {problem}")
        pytest.skip(f"no PostgreSQL at {ADMIN_DSN} ({problem}); CI runs these")
    name = f"storyshort_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield dsn
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
