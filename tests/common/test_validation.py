"""The edge's rules name what is wrong: a size of the right form but the wrong range says
so, rather than that it is not WIDTHxHEIGHT."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.common.validation import image_size


@pytest.mark.parametrize("size", ["99999x1", "1x1", "64x4097", "123456789x64", "0064x8"])
def test_a_size_of_the_right_form_out_of_range_says_the_range(size: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        image_size(size)
    assert refused.value.reason == "SIZE_OUT_OF_RANGE"
    assert "between 64 and 4096 pixels" in str(refused.value)


@pytest.mark.parametrize("size", ["", "1024", "1024x", "x1024", "1024*1024", "1024x1024x3", "1" * 40 + "x64", "auto"])
def test_a_size_not_of_the_form_shows_the_form(size: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        image_size(size)
    assert refused.value.reason == "SIZE_INVALID"
    assert "for example '1024x1024'" in str(refused.value)


def test_a_size_in_range_is_its_two_sides() -> None:
    assert image_size("64x4096") == (64, 4096)
    assert image_size("1536x1024") == (1536, 1024)
