"""The gateway's HTTP routes, one module per concern."""

from __future__ import annotations

from typing import Any

from gateway.schemas import ErrorOut

NO_STORE = {"Cache-Control": "no-store"}
# Errors are JSON on every route, the HTML page's included.
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "content": {"application/json": {}}}
    for code in (400, 401, 404, 409, 413, 429, 500, 503, 504)
}
