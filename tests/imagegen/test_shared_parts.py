"""Each replica's part of a shared limit while Redis is down: the parts add up to the limit."""

from __future__ import annotations

import pytest

from services.imagegen.shared import part_of


@pytest.mark.parametrize("replicas", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 6, 7, 16])
def test_the_parts_of_every_replica_add_up_to_the_limit(replicas: int, size: int) -> None:
    names = sorted(f"host-{i}:{100 + i}" for i in range(replicas))
    parts = [part_of(size, names, name) for name in names]
    assert sum(parts) == size
    assert max(parts) - min(parts) <= 1


def test_with_fewer_places_than_replicas_the_first_ones_get_one_each() -> None:
    names = ["a:1", "b:2", "c:3"]
    assert [part_of(2, names, n) for n in names] == [1, 1, 0]
