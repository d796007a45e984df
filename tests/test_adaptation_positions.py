"""Frame-prompt positions (genvpt/adaptation/positions.py) against hand-computed cases."""
from __future__ import annotations

import pytest
import torch

from genvpt.adaptation.positions import (
    VARIANTS,
    corner_first,
    frame_budget,
    frame_index,
    outermost_positions,
    prompt_positions,
    scale_positions,
)


def flat(S, pts):
    return sorted(y * S + x for y, x in pts)


def ring(S):
    return flat(S, [(y, x) for y in range(S) for x in range(S) if y in (0, S - 1) or x in (0, S - 1)])


def test_s16_tau20_is_four_l_shapes_of_five():
    # a = floor((20-4)/8) = 2: each corner plus 2 tokens along each of its edges = 5 tokens, 20 in all
    e = 15
    expected = flat(16, [
        (0, 0), (0, 1), (0, 2), (1, 0), (2, 0),
        (0, e), (0, e - 1), (0, e - 2), (1, e), (2, e),
        (e, 0), (e, 1), (e, 2), (e - 1, 0), (e - 2, 0),
        (e, e), (e, e - 1), (e, e - 2), (e - 1, e), (e - 2, e),
    ])
    assert outermost_positions(16, 20) == expected
    assert scale_positions(16, 20).tolist() == expected
    assert frame_budget(16, 20) == 20


def test_s5_is_the_16_token_ring():
    pos = scale_positions(5, 20).tolist()
    assert len(pos) == 16 and pos == ring(5)
    assert pos == [0, 1, 2, 3, 4, 5, 9, 10, 14, 15, 19, 20, 21, 22, 23, 24]


def test_small_and_threshold_cases():
    assert scale_positions(1, 20).tolist() == [0]  # 1 token at S = 1
    assert scale_positions(2, 4).tolist() == [0, 1, 2, 3]  # ring of 4 = tau: kept
    assert scale_positions(3, 4).tolist() == [0, 2, 6, 8]  # ring 8 > 4: a = 0, the four corners
    assert scale_positions(6, 20).tolist() == ring(6)  # 4*6-4 = 20 = tau: the full ring
    assert scale_positions(8, 28).tolist() == ring(8)  # 28 <= 28
    # S = 8, tau = 12: a = 1, corners plus one token each way = 12
    assert scale_positions(8, 12).tolist() == flat(8, [
        (0, 0), (0, 1), (1, 0), (0, 7), (0, 6), (1, 7), (7, 0), (7, 1), (6, 0), (7, 7), (7, 6), (6, 7)])
    assert [frame_budget(S, 20) for S in (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)] == [1, 4, 8, 12, 16, 20, 20, 20, 20, 20]
    assert frame_budget(16, 28) == 28 and frame_budget(16, 36) == 36 and frame_budget(16, 27) == 20


def test_var256_counts_and_first_scale():
    pn = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    off = prompt_positions(pn, 20)
    on = prompt_positions(pn, 20, first_scale=True)
    assert [len(p) for p in off] == [0, 4, 8, 12, 16, 20, 20, 20, 20, 20]
    # 4+8+12+16+5*20 = 140 (the method sheet's "160" is an arithmetic slip)
    assert sum(len(p) for p in off) == 140 and sum(len(p) for p in on) == 141
    assert on[0].tolist() == [0]
    # the embedded default's 32 px scales
    assert [len(p) for p in prompt_positions((1, 2, 3, 4, 6, 8), 20)] == [0, 4, 8, 12, 20, 20]
    assert [len(p) for p in prompt_positions((1, 2, 3, 4, 6, 8), 4)] == [0, 4, 4, 4, 4, 4]


def test_corner_first_rule_gives_the_l_shapes():
    for S in range(3, 20):
        for tau in (4, 12, 20, 28, 36, 44):
            b = frame_budget(S, tau)
            assert sorted(corner_first(S, 0)[:b]) == outermost_positions(S, tau), (S, tau)


@pytest.mark.parametrize("variant", VARIANTS)
def test_variants_keep_the_budget(variant):
    pn = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    for tau in (4, 12, 20, 28):
        ref = prompt_positions(pn, tau, first_scale=True)
        got = prompt_positions(pn, tau, variant, first_scale=True, seed=3)
        for S, r, p in zip(pn, ref, got):
            assert len(p) == len(r), (variant, tau, S)
            assert p.unique().numel() == len(p) and int(p.min()) >= 0 and int(p.max()) < S * S
            assert torch.equal(p, p.sort().values)


def test_variant_hand_cases():
    # innermost on 5x5 (budget 16): centre (frame 2), frame 1 (8 tokens), then 7 corner-first tokens of frame 0
    inner = set(scale_positions(5, 20, "innermost").tolist())
    fi = frame_index(5).reshape(-1)
    assert {i for i in range(25) if fi[i] >= 1} <= inner and len(inner - {i for i in range(25) if fi[i] >= 1}) == 7
    assert {0, 4, 20, 24} <= inner  # the corners of the partial frame come first
    # centre-to-outer on 8x8 (budget 20): frame 3 (the 2x2 centre, 4), then 16 corner-first tokens of frame 1
    # (side 6, 20 tokens); frames 2 and 0 are skipped
    c2o = set(scale_positions(8, 20, "center_to_outer").tolist())
    fi8 = frame_index(8).reshape(-1)
    f = lambda n: {i for i in range(64) if fi8[i] == n}  # noqa: E731
    assert f(3) <= c2o and c2o <= f(3) | f(1) and len(c2o & f(1)) == 16
    assert set(flat(8, [(1, 1), (1, 6), (6, 1), (6, 6)])) <= c2o
    # 4x4 (budget 12): frame 1 (4) holds less than the budget, so the skipped frame 0 follows: its corners, then
    # the token clockwise of each corner
    assert scale_positions(4, 12, "center_to_outer").tolist() == sorted([5, 6, 9, 10, 0, 3, 15, 12, 1, 7, 14, 8])
    # sub-outermost on 6x6 (budget 20): frame 1 (12) + the corners and 4 neighbours of frame 0
    sub = set(scale_positions(6, 20, "sub_outermost").tolist())
    fi6 = frame_index(6).reshape(-1)
    assert {i for i in range(36) if fi6[i] == 1} <= sub and not any(fi6[i] == 2 for i in sub)
    assert {0, 5, 30, 35} <= sub
    # on 2x2 every variant is the whole map; on 8x8 they all differ from the outermost frame
    for v in VARIANTS:
        assert scale_positions(2, 20, v).tolist() == [0, 1, 2, 3]
        if v != "outermost":
            assert scale_positions(8, 20, v, seed=0).tolist() != scale_positions(8, 20).tolist()


def test_random_is_seeded():
    a = scale_positions(16, 20, "random", seed=1, scale_index=9)
    assert torch.equal(a, scale_positions(16, 20, "random", seed=1, scale_index=9))
    assert not torch.equal(a, scale_positions(16, 20, "random", seed=2, scale_index=9))
    assert not torch.equal(a, scale_positions(16, 20, "random", seed=1, scale_index=8))


def test_bad_arguments():
    with pytest.raises(ValueError, match="tau"):
        frame_budget(8, 3)
    with pytest.raises(ValueError, match="allowed"):
        scale_positions(8, 20, "diagonal")
    with pytest.raises(ValueError, match="positive"):
        frame_budget(0, 20)
