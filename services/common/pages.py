"""One page of a list answer: `page_size` items from the place `page_token` names. The token
is opaque to callers (an offset, base64) and refused clearly when it was not ours."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import TypeVar

from services.common.errors import InvalidArgument

T = TypeVar("T")
MAX_PAGE = 1000


def page(items: Sequence[T], page_size: int, page_token: str, default: int) -> tuple[list[T], str]:
    """(this page, the next page's token or "")."""
    if page_size < 0 or page_size > MAX_PAGE:
        raise InvalidArgument(f"page_size must be between 0 and {MAX_PAGE}; got {page_size}", field="page_size")
    size = page_size or default
    start = 0
    if page_token:
        try:
            start = int(base64.urlsafe_b64decode(page_token.encode()).decode().removeprefix("offset:"))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise InvalidArgument(
                "page_token is not one this service gave; pass the previous answer's next_page_token",
                field="page_token",
                reason="PAGE_TOKEN_INVALID",
            ) from None
        if start < 0:
            raise InvalidArgument("page_token is out of range", field="page_token", reason="PAGE_TOKEN_INVALID")
    chunk = list(items[start : start + size])
    more = start + size < len(items)
    return chunk, base64.urlsafe_b64encode(f"offset:{start + size}".encode()).decode() if more else ""
