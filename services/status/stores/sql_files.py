"""The schema files in sql/, applied in name order and recorded, so migrating twice is safe."""

from __future__ import annotations

from pathlib import Path

SQL_ROOT = Path(__file__).resolve().parents[3] / "sql"


def migrations(dialect: str) -> list[tuple[str, str]]:
    """(version, sql) for each file of sql/<dialect>/, in order."""
    return [(p.stem, p.read_text()) for p in sorted((SQL_ROOT / dialect).glob("*.sql"))]
