"""Sequence orders: invertible permutations of the token grid, checked against hand-computed small cases."""
import pytest
import torch

from genvpt.generators.orders import ORDERS, Order, order_indices

pytestmark = pytest.mark.usefixtures("one_thread")


# 4x4 raster indices:
#  0  1  2  3
#  4  5  6  7
#  8  9 10 11
# 12 13 14 15
HAND_4x4 = {
    "row_major": list(range(16)),
    "alternate": [0, 1, 2, 3, 7, 6, 5, 4, 8, 9, 10, 11, 15, 14, 13, 12],
    # taming SpiralOut: start (2,1), then up 1, right 1, down 2, left 2, up 3, right 3, down 3
    "spiral_out": [9, 5, 6, 10, 14, 13, 12, 8, 4, 0, 1, 2, 3, 7, 11, 15],
    "spiral_in": [15, 11, 7, 3, 2, 1, 0, 4, 8, 12, 13, 14, 10, 6, 5, 9],
    # Morton: 2x2 blocks in Z order, each block in Z order
    "z_curve": [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15],
    # coarse to fine: the stride-2 grid first (0,2,8,10), then its shifted copies
    "subsample": [0, 2, 8, 10, 1, 3, 9, 11, 4, 6, 12, 14, 5, 7, 13, 15],
}


@pytest.mark.parametrize("name", sorted(HAND_4x4))
def test_hand_computed_4x4(name):
    assert order_indices(name, 4).tolist() == HAND_4x4[name]


def test_small_hand_cases():
    assert order_indices("spiral_out", 2).tolist() == [2, 0, 1, 3]  # taming SpiralOut(2, 2)
    assert order_indices("spiral_out", 3).tolist() == [4, 1, 2, 5, 8, 7, 6, 3, 0]  # odd grid: from the centre
    assert order_indices("alternate", 2, 3).tolist() == [0, 1, 2, 5, 4, 3]
    assert order_indices("z_curve", 2).tolist() == [0, 1, 2, 3]
    assert order_indices("subsample", 2).tolist() == [0, 1, 2, 3]


def test_subsample_prefixes_are_subsampled_grids():
    idx = order_indices("subsample", 8)
    first = sorted(idx[:4].tolist())
    assert first == [0, 4, 32, 36]  # stride-4 grid of an 8x8 map
    assert sorted(idx[:16].tolist()) == sorted(r * 8 + c for r in range(0, 8, 2) for c in range(0, 8, 2))


@pytest.mark.parametrize("name", sorted(ORDERS))
@pytest.mark.parametrize("hw", [(1, 1), (3, 5), (4, 4), (8, 8), (7, 6)])
def test_every_order_is_an_invertible_permutation(name, hw):
    h, w = hw
    order = Order(name, h, w)
    x = torch.randint(0, 1000, (3, h * w, 2))
    seq = order.to_sequence(x)
    assert torch.equal(order.to_raster(seq), x)
    assert sorted(order.forward_idx.tolist()) == list(range(h * w))
    if h * w > 2 and name != "row_major":
        assert order.forward_idx.tolist() != list(range(h * w))


def test_order_buffers_are_not_saved():
    assert Order("spiral_in", 4).state_dict() == {}


def test_unknown_order_lists_allowed():
    with pytest.raises(ValueError, match="allowed: row_major"):
        order_indices("diagonal", 4)
