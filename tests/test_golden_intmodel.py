"""Integer model (sw/golden/intmodel.py) unit checks against brute-force Python, extremes, bad
input."""

from __future__ import annotations

import numpy as np
import pytest
from aqpim.commands import bench
from aqpim.sw.golden import intmodel

from aqpim.geometry import Geometry
from aqpim.numerics import Numerics, exp2_weight, signed_width, unsigned_width

SMALL = Numerics(head_dim=16, subspaces=8, centroids=16, token_capacity=64)


def test_encode_brute_force_with_ties() -> None:
    num = SMALL
    rng = np.random.default_rng(0)
    cb = rng.integers(-4, 5, size=(num.subspaces, num.centroids, num.sub_dim))
    cb[:, 11] = cb[:, 4]  # duplicates: exact ties, the lowest index must win
    x = rng.integers(-4, 5, size=(300, num.subspaces, num.sub_dim))
    codes = intmodel.encode(x, cb, num)
    for n in range(x.shape[0]):
        for s in range(num.subspaces):
            dist = [sum((int(a) - int(b)) ** 2 for a, b in zip(x[n, s], cb[s, j], strict=True))
                    for j in range(num.centroids)]
            assert codes[n, s] == dist.index(min(dist))
    assert not np.any(codes == 11)


def test_encode_extremes_fit_dist_bits() -> None:
    num = Numerics(head_dim=16, subspaces=4, centroids=2, elem_bits=8)
    x = np.full((1, 4, 4), num.elem_min)
    cb = np.stack([np.full((4, 4), num.elem_max), np.full((4, 4), num.elem_max - 1)], axis=1)
    assert np.all(intmodel.encode(x, cb, num) == 1)
    worst = num.sub_dim * (num.elem_max - num.elem_min) ** 2
    assert worst < 1 << num.dist_bits


@pytest.mark.parametrize(("m", "k"), [(64, 16), (32, 256), (16, 16), (8, 256), (32, 16),
                                      (64, 256), (128, 256)])
def test_pack_unpack_round_trip(m: int, k: int) -> None:
    num = Numerics(head_dim=128, subspaces=m, centroids=k)
    codes = np.random.default_rng(m).integers(0, k, size=(37, m))
    cols = intmodel.pack_columns(codes, num)
    side = Geometry(num).key
    assert len(cols) == -(-37 // side.tokens_per_column) * side.columns_per_token
    assert all(0 <= c < 1 << 256 for c in cols)
    assert np.array_equal(intmodel.unpack_columns(cols, 37, num), codes)


def test_pack_columns_bit_positions() -> None:
    # By hand: code m of token t at bit (t*M + m)*b of the column stream.
    few = Numerics(head_dim=64, subspaces=8, centroids=256)  # 64 bits: 4 tokens per column
    codes = np.zeros((5, 8), dtype=np.int64)
    codes[1, 2] = 0xAB
    codes[4, 0] = 0x01
    assert intmodel.pack_columns(codes, few) == [0xAB << ((1 * 8 + 2) * 8), 0x01]
    wide = Numerics(head_dim=128, subspaces=64, centroids=256)  # 512 bits: 2 columns per token
    codes = np.zeros((2, 64), dtype=np.int64)
    codes[0, 33] = 7  # bit 264: column 0's second half -> column 1, bit 8
    codes[1, 0] = 9  # token 1 opens column 2
    assert intmodel.pack_columns(codes, wide) == [0, 7 << 8, 9, 0]


def test_lut_accumulate_brute_force_and_fast_scans() -> None:
    num = Numerics(head_dim=128, subspaces=64, centroids=16)
    rng = np.random.default_rng(1)
    lut = rng.integers(num.lut_min, num.lut_max + 1, size=(64, 16))
    codes = rng.integers(0, 16, size=(500, 64))
    ref = intmodel.lut_accumulate(lut, codes, num)
    brute = [sum(int(lut[m, codes[t, m]]) for m in range(64)) for t in range(500)]
    assert ref.tolist() == brute
    # The benchmark's scans (codes stored (M, T); 4-bit pair tables) are the same function.
    assert np.array_equal(bench.lut_scan(lut, codes.T.copy()), ref)
    packed = bench.pack_pairs(codes.T.copy())
    assert np.array_equal(bench.lut_scan(bench.pair_lut(lut), packed), ref)


@pytest.mark.parametrize("entry", ["lut_min", "lut_max"])
def test_scores_at_lut_extremes_fit_score_bits(entry: str) -> None:
    num = Numerics(head_dim=128, subspaces=64, centroids=16)
    lut = np.full((64, 16), getattr(num, entry))
    s = intmodel.lut_accumulate(lut, np.zeros((3, 64), dtype=np.int64), num)
    assert np.all(s == 64 * getattr(num, entry))
    assert signed_width(int(s.min()), int(s.max())) <= num.score_bits
    mx, w = intmodel.softmax_weights(np.array([num.score_min, num.score_max]), num)
    assert mx == num.score_max and w.tolist() == [0, num.weight_one]  # delta at its maximum
    assert unsigned_width(num.score_max - num.score_min) <= num.delta_bits


def test_softmax_weights_brute_force_and_range_ends() -> None:
    num = SMALL
    f, p = num.lut_frac_bits, num.exp_bits
    one = 1 << f
    # Range ends: delta 0, the last f of n = P, the first delta with n > P.
    deltas = [0, 1, one - 1, one, p * one, (p + 1) * one - 1, (p + 1) * one, (p + 1) * one + 1]
    deltas += list(np.random.default_rng(2).integers(0, 40 * one, 200))
    top = 1000
    scores = np.array([top - d for d in deltas] + [top])
    mx, w = intmodel.softmax_weights(scores, num)
    assert mx == top
    ref = [exp2_weight(int(d), f, p, num.exp_rom) for d in deltas]
    brute = [int(np.floor(num.exp_rom[d % one] / 2 ** (d // one))) if d // one <= p else 0
             for d in deltas]
    assert w[:-1].tolist() == ref == brute
    assert w[0] == num.weight_one and w[-1] == num.weight_one
    assert w[deltas.index((p + 1) * one)] == 0
    assert w[deltas.index((p + 1) * one - 1)] == num.exp_rom[one - 1] >> p
    # The ROM is 2^P * 2^(-f/2^F) rounded; the float value is never near a rounding boundary.
    exact = num.weight_one * 2.0 ** (-np.arange(one) / one)
    assert np.max(np.abs(np.array(num.exp_rom) - exact)) <= 0.5
    assert np.min(np.abs(exact - np.floor(exact) - 0.5)) > 1e-6


def test_histogram_and_value_product_brute_force() -> None:
    num = SMALL
    rng = np.random.default_rng(3)
    w = rng.integers(0, num.weight_one + 1, size=50)
    vc = rng.integers(0, num.centroids, size=(50, num.subspaces))
    cv = rng.integers(num.elem_min, num.elem_max + 1, size=(num.subspaces, num.centroids, 2))
    hist = intmodel.histogram(w, vc, num)
    brute = np.zeros_like(hist)
    for t in range(50):
        for s in range(num.subspaces):
            brute[s, vc[t, s]] += w[t]
    assert np.array_equal(hist, brute)
    out = intmodel.hist_times_centroids(hist, cv, num)
    ref = [sum(int(hist[s, j]) * int(cv[s, j, i]) for j in range(num.centroids))
           for s in range(num.subspaces) for i in range(2)]
    assert out.tolist() == ref


@pytest.mark.parametrize("elem", ["elem_min", "elem_max"])
def test_weights_at_capacity_fit_sum_hist_out_bits(elem: str) -> None:
    num = Numerics(head_dim=128, subspaces=64, centroids=16)  # default T_cap = 4096
    t = num.token_capacity
    lut = np.full((64, 16), num.lut_max)
    codes = np.zeros((t, 64), dtype=np.int64)  # every token scores the max: weight 2^P each
    cv = np.full((64, 16, 2), getattr(num, elem))
    p = intmodel.bank_partial(lut, codes, codes, cv, num)
    assert p.sum == t * num.weight_one < 1 << num.sum_bits
    assert p.sum >= 1 << (num.sum_bits - 1)  # the width is tight, not generous
    assert np.all(p.out == t * num.weight_one * getattr(num, elem))
    assert signed_width(int(p.out.min()), int(p.out.max())) <= num.out_bits


def test_host_merge_against_float_formula() -> None:
    num = SMALL
    rng = np.random.default_rng(4)
    parts = [
        intmodel.BankPartial(max=int(rng.integers(-3000, 3000)), sum=int(rng.integers(1, 10**6)),
                             out=rng.integers(-10**6, 10**6, size=16))
        for _ in range(3)
    ]
    empty = intmodel.BankPartial(max=num.score_min, sum=0, out=np.zeros(16, dtype=np.int64))
    scales = rng.uniform(0.01, 0.1, size=8)
    got = intmodel.host_merge([*parts, empty], scales, num)
    f = 1 << num.lut_frac_bits
    g = max(p.max for p in parts) / f
    a = [2.0 ** (p.max / f - g) for p in parts]
    sd = np.repeat(scales, 2)
    ref = sum(ai * p.out * sd for ai, p in zip(a, parts, strict=True)) / sum(
        ai * p.sum for ai, p in zip(a, parts, strict=True))
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    with pytest.raises(ValueError, match="every partial is empty"):
        intmodel.host_merge([empty], scales, num)


def test_intmodel_bad_input() -> None:
    num = SMALL
    with pytest.raises(TypeError, match="integer dtype, got float64"):
        intmodel.encode(np.zeros((1, 8, 2)), np.zeros((8, 16, 2), dtype=np.int64), num)
    with pytest.raises(ValueError, match="value 128 outside"):
        intmodel.encode(np.full((1, 8, 2), 128), np.zeros((8, 16, 2), dtype=np.int64), num)
    with pytest.raises(ValueError, match="non-finite value nan"):
        intmodel.quantize(np.full((2, 16), np.nan), np.ones(8), num)
    with pytest.raises(ValueError, match="value 16 outside"):
        intmodel.lut_accumulate(np.zeros((8, 16), dtype=np.int64), np.full((1, 8), 16), num)
    with pytest.raises(ValueError, match="M\\*b = 48\\*3 = 144 bits"):
        Geometry(Numerics(head_dim=96, subspaces=48, centroids=8))
    with pytest.raises(ValueError, match="power of two in \\[2, 256\\], got 12"):
        Numerics(centroids=12)
    with pytest.raises(ValueError, match="elem_bits must be in \\[4, 16\\], got 20"):
        Numerics(elem_bits=20)
    with pytest.raises(ValueError, match="table \\(M, K\\) and codes"):
        bench.lut_scan(np.zeros((8, 16)), np.zeros((4, 3), dtype=np.uint8))
