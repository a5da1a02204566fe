"""The Supabase fake's tables are the ones `sql/postgres` makes. The fake refuses a column,
a type or a function parameter it does not know, as PostgREST does; that only protects the
Supabase store if what the fake knows is what the migrations declare. Here the migrations
run on a real PostgreSQL and its catalogue is compared with the fake's: a column added,
renamed or dropped in `sql/`, a default or a key changed, fails this test until the fake
follows."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from services.status.stores.postgres import PostgresStore
from tests.fakes import supabase_fake as fake

pytestmark = pytest.mark.postgres

PYTHON_TYPE = {"text": str, "integer": int, "bigint": int, "boolean": bool, "double precision": float}


def default_value(declared: str, kind: type) -> object:
    """A column default as PostgreSQL shows it ("'draft'::text", "0", "false") as a value."""
    literal = declared.split("::", 1)[0]
    if literal.startswith("'") and literal.endswith("'"):
        return literal[1:-1].replace("''", "'")
    if kind is bool:
        return {"true": True, "false": False}[literal]
    return kind(literal)


@pytest.fixture
def catalogue(pg_dsn: str) -> dict[str, list[tuple[str, str, str | None]]]:
    async def migrate() -> None:
        store = PostgresStore(pg_dsn)
        try:
            await store.migrate()
        finally:
            await store.close()

    asyncio.run(migrate())
    with psycopg.connect(pg_dsn) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, data_type, column_default FROM information_schema.columns"
            " WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
        ).fetchall()
        keys = conn.execute(
            "SELECT tc.table_name, kcu.column_name FROM information_schema.table_constraints tc"
            " JOIN information_schema.key_column_usage kcu USING (constraint_schema, constraint_name)"
            " WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = 'public'"
            " ORDER BY tc.table_name, kcu.ordinal_position"
        ).fetchall()
        functions = conn.execute(
            "SELECT proname, pg_get_function_identity_arguments(oid) FROM pg_proc"
            " WHERE pronamespace = 'public'::regnamespace"
        ).fetchall()
    tables: dict[str, list[tuple[str, str, str | None]]] = {}
    for table, column, kind, default in columns:
        tables.setdefault(table, []).append((column, kind, default))
    tables["(keys)"] = [(table, column, None) for table, column in keys]
    tables["(functions)"] = [(name, arguments, None) for name, arguments in functions]
    return tables


def test_the_fake_has_every_table_and_column_with_its_type(
    catalogue: dict[str, list[tuple[str, str, str | None]]],
) -> None:
    tables = {t for t in catalogue if not t.startswith("(") and t != "preview_schema_migrations"}
    assert set(fake.SCHEMA) == tables
    for table in tables:
        declared = {column: PYTHON_TYPE[kind] for column, kind, _ in catalogue[table]}
        assert fake.SCHEMA[table] == declared, table


def test_the_fake_fills_in_the_defaults_the_migrations_declare(
    catalogue: dict[str, list[tuple[str, str, str | None]]],
) -> None:
    for table in fake.SCHEMA:
        declared = {
            column: default_value(default, PYTHON_TYPE[kind])
            for column, kind, default in catalogue[table]
            if default is not None
        }
        assert fake.DEFAULTS.get(table, {}) == declared, table


def test_the_fake_keys_rows_and_takes_parameters_as_the_migrations_do(
    catalogue: dict[str, list[tuple[str, str, str | None]]],
) -> None:
    keys: dict[str, tuple[str, ...]] = {table: () for table in fake.SCHEMA}
    for table, column, _ in catalogue["(keys)"]:
        if table in keys:
            keys[table] += (column,)
    assert keys == fake.PRIMARY_KEYS
    functions = {name: arguments for name, arguments, _ in catalogue["(functions)"]}
    assert set(fake.FUNCTIONS) == set(functions)
    for name, parameters in fake.FUNCTIONS.items():
        declared = [argument.split(" ", 1) for argument in functions[name].split(", ")]
        assert {p: PYTHON_TYPE[kind] for p, kind in declared} == parameters, name
