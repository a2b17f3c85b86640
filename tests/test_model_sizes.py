"""A model whose embedding table cannot fit in memory is refused at once, with the size."""

import pytest

import esmm_np


@pytest.mark.parametrize("make", [
    lambda: esmm_np.ESMM([2**40]),
    lambda: esmm_np.TowerModel([3, 2**38], embed_dim=16),
    lambda: esmm_np.ESMM([3], bag_dims={"210": 2**40}),
])
def test_a_table_too_large_for_memory_is_refused_naming_its_size(make):
    with pytest.raises(MemoryError, match=r"embedding table would have .* GiB to create"):
        make()


def test_the_refusal_is_also_a_value_error():
    """Callers that catch ValueError for bad options catch this one too."""
    with pytest.raises(ValueError):
        esmm_np.ESMM([2**40])
