"""sw/golden/fastpq.py: the numba kernels give exactly the NumPy references' codes and scores.

References: ``pq._assign_numpy`` (float; ``pq.encode`` and k-means run on the kernel now),
``intmodel.encode`` (integer), ``bench.lut_scan`` (float LUT, NumPy ``take`` per row) and
``intmodel.lut_accumulate`` (integer LUT). Data: random,
clustered, near-ties built so that float32 vs float64, the expanded form and the summation
order each change some codes, and exact ties (duplicated centroids).
"""

from __future__ import annotations

import numpy as np
import pytest
from aqpim.commands import bench
from aqpim.sw.golden import fastpq, intmodel, pq

from aqpim.numerics import Numerics


def _ref(x: np.ndarray, cb: np.ndarray) -> np.ndarray:
    """Codes from pq's plain NumPy assignment (direct form, first minimum)."""
    codes, _ = pq._assign_numpy(pq._split(x, cb.shape[0]), cb)
    return codes.T


def _random(n: int, m: int, k: int, d: int, seed: int, dtype: type) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((n, m * d)).astype(dtype),
        rng.standard_normal((m, k, d)).astype(dtype),
    )


def _clustered(n: int, m: int, k: int, d: int, seed: int, dtype: type) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((12, m * d)) * 4
    x = centres[rng.integers(0, 12, n)] + 0.3 * rng.standard_normal((n, m * d))
    cb = pq.train_codebooks(x[:600], subspaces=m, centroids=k, iters=3, seed=seed)
    return x.astype(dtype), cb.astype(dtype)


def _near_ties(n: int, m: int, k: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Float32 points on the bisector of two centroids, 1e-6 off: rounding decides the code."""
    rng = np.random.default_rng(seed)
    cb = rng.standard_normal((m, k, d)) * 10
    a = rng.integers(0, k, (n, m))
    b = (a + 1 + rng.integers(0, k - 1, (n, m))) % k
    ca, cb_ = cb[np.arange(m), a], cb[np.arange(m), b]
    u = cb_ - ca
    u /= np.linalg.norm(u, axis=2, keepdims=True)
    v = rng.standard_normal((n, m, d))
    v -= np.sum(v * u, axis=2, keepdims=True) * u
    x = (ca + cb_) / 2 + 0.1 * v + 1e-6 * rng.standard_normal((n, m, d))
    return x.reshape(n, m * d).astype(np.float32), cb.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# float encode
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [_random, _clustered])
@pytest.mark.parametrize(("m", "k", "d"), [(64, 16, 2), (32, 256, 4)])
def test_encode_equals_pq_encode(make, m: int, k: int, d: int, dtype: type) -> None:
    # 1000 points: the last block of 128 is partial.
    x, cb = make(1000, m, k, d, seed=m + k, dtype=dtype)
    ref_codes, ref_dist = pq._assign_numpy(pq._split(x, m), cb)
    codes, dist = fastpq.nearest(x, cb)
    assert np.array_equal(codes, ref_codes.T)
    assert dist.dtype == ref_dist.dtype and np.array_equal(dist, ref_dist.T)
    assert np.array_equal(fastpq.encode(x, cb), codes)
    assert np.array_equal(pq.encode(x, cb), codes)  # pq.encode runs on the kernel


def test_encode_odd_sub_dim_and_mixed_dtypes() -> None:
    x, cb = _random(300, 8, 16, 3, seed=5, dtype=np.float64)
    assert np.array_equal(fastpq.encode(x, cb), _ref(x, cb))
    # float32 data against float64 centroids is computed in float64, as NumPy does.
    x32 = x.astype(np.float32)
    assert np.array_equal(fastpq.encode(x32, cb), _ref(x32, cb))


@pytest.mark.parametrize("d", [2, 4])
def test_encode_near_ties_round_like_numpy(d: int) -> None:
    x, cb = _near_ties(2000, 8, 16, d, seed=d)
    c32 = _ref(x, cb)
    x64, cb64 = x.astype(np.float64), cb.astype(np.float64)
    c64 = _ref(x64, cb64)
    # The data must be sensitive: float64 arithmetic and the expanded form change codes.
    assert np.count_nonzero(c32 != c64) > 20
    xs = x.reshape(-1, 8, d)
    expanded = (
        np.einsum("nmd,nmd->nm", xs, xs)[:, :, None]
        - 2 * np.einsum("nmd,mkd->nmk", xs, cb)
        + np.einsum("mkd,mkd->mk", cb, cb)[None]
    ).argmin(axis=2)
    assert np.count_nonzero(expanded != c32) > 20
    assert np.array_equal(fastpq.encode(x, cb), c32)
    assert np.array_equal(fastpq.encode(x64, cb64), c64)


def test_encode_near_ties_sum_in_index_order() -> None:
    # d = 4: summing the squares pairwise instead of in index order changes some codes.
    x, cb = _near_ties(2000, 8, 16, 4, seed=4)
    sq = (x.reshape(-1, 8, 1, 4) - cb[None]) ** 2
    pairwise = ((sq[..., 0] + sq[..., 1]) + (sq[..., 2] + sq[..., 3])).argmin(axis=2)
    ref = _ref(x, cb)
    assert np.count_nonzero(pairwise != ref) > 20
    assert np.array_equal(fastpq.encode(x, cb), ref)


def test_encode_exact_ties_take_lowest_index() -> None:
    rng = np.random.default_rng(0)
    cb = rng.integers(-2, 3, size=(8, 16, 2)).astype(np.float32)
    cb[:, 9] = cb[:, 3]
    cb[:, 15] = cb[:, 0]
    x = rng.integers(-2, 3, size=(700, 16)).astype(np.float32)
    codes = fastpq.encode(x, cb)
    assert np.array_equal(codes, _ref(x, cb))
    assert np.any(codes == 3) and np.any(codes == 0)
    assert not np.any(codes == 9) and not np.any(codes == 15)


@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_training_on_the_kernel_equals_numpy_training(init: str, monkeypatch) -> None:
    x, _ = _clustered(800, 8, 16, 2, seed=9, dtype=np.float64)
    fast = pq.train_codebooks(x, subspaces=8, centroids=16, iters=6, seed=1, init=init)
    monkeypatch.setattr(pq, "_assign", pq._assign_numpy)
    slow = pq.train_codebooks(x, subspaces=8, centroids=16, iters=6, seed=1, init=init)
    assert np.array_equal(fast, slow)


def test_encode_empty_and_single() -> None:
    x, cb = _random(1, 4, 16, 2, seed=1, dtype=np.float32)
    assert np.array_equal(fastpq.encode(x, cb), _ref(x, cb))
    assert fastpq.encode(x[:0], cb).shape == (0, 4)


# ----------------------------------------------------------------------------------------------
# integer encode
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "num",
    [
        Numerics(head_dim=16, subspaces=8, centroids=16, token_capacity=64),
        Numerics(head_dim=128, subspaces=32, centroids=256, elem_bits=16),
    ],
)
def test_encode_int_equals_intmodel(num: Numerics) -> None:
    rng = np.random.default_rng(num.centroids)
    shape_cb = (num.subspaces, num.centroids, num.sub_dim)
    cb = rng.integers(num.elem_min, num.elem_max + 1, size=shape_cb)
    cb[:, -1] = cb[:, 1]  # exact ties: the lowest index must win
    x = rng.integers(num.elem_min, num.elem_max + 1, size=(300, num.subspaces, num.sub_dim))
    x[:50] = cb[:, 1][None]  # points on the duplicated centroid
    x[50:60] = num.elem_min  # range ends: the largest distances
    codes = fastpq.encode_int(x, cb)
    assert np.array_equal(codes, intmodel.encode(x, cb, num))
    assert not np.any(codes[:50] == num.centroids - 1)


def test_encode_int_small_dtypes_and_ties() -> None:
    num = Numerics(head_dim=16, subspaces=8, centroids=16, token_capacity=64)
    rng = np.random.default_rng(3)
    cb = rng.integers(-4, 5, size=(8, 16, 2)).astype(np.int8)
    cb[:, 11] = cb[:, 4]
    x = rng.integers(-4, 5, size=(500, 8, 2)).astype(np.int16)
    codes = fastpq.encode_int(x, cb)
    assert np.array_equal(codes, intmodel.encode(x, cb, num))
    assert not np.any(codes == 11)


# ----------------------------------------------------------------------------------------------
# LUT scan
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tokens", [0, 5, 64, 1001])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("m", "k"), [(32, 256), (64, 16)])
def test_scan_float_equals_numpy(m: int, k: int, dtype: type, tokens: int) -> None:
    rng = np.random.default_rng(tokens + m)
    table = (rng.standard_normal((m, k)) * 100).astype(dtype)
    codes = rng.integers(0, k, (m, tokens)).astype(np.uint8)
    ref = bench.lut_scan(table, codes)
    got = fastpq.lut_scan(table, codes)
    assert got.dtype == ref.dtype and np.array_equal(got, ref)
    # Codes in a wider dtype give the same scores.
    assert np.array_equal(fastpq.lut_scan(table, codes.astype(np.int64)), ref)


@pytest.mark.parametrize(("m", "k"), [(32, 256), (64, 16), (8, 16)])
def test_scan_int_equals_lut_accumulate(m: int, k: int) -> None:
    num = Numerics(head_dim=128, subspaces=m, centroids=k)
    rng = np.random.default_rng(m * k)
    lut = rng.integers(num.lut_min, num.lut_max + 1, size=(m, k))
    lut[:, 0], lut[:, -1] = num.lut_min, num.lut_max  # both range ends get summed
    codes = rng.integers(0, k, size=(777, m))
    codes[:3], codes[3:6] = 0, k - 1
    ref = intmodel.lut_accumulate(lut, codes, num)
    got = fastpq.lut_scan(lut.astype(np.int16), codes.T.astype(np.uint8))
    assert got.dtype == np.int64 and np.array_equal(got, ref)
    if k == 16:
        packed = fastpq.pack_pairs(codes.T)
        assert np.array_equal(packed, bench.pack_pairs(codes.T))
        assert np.array_equal(fastpq.lut_scan_packed(lut.astype(np.int16), packed), ref)
        # The NumPy reference widens too: int16 pair sums must not wrap.
        assert np.array_equal(bench.lut_scan(bench.pair_lut(lut.astype(np.int16)), packed), ref)


def test_scan_packed_float_equals_numpy_pair_tables() -> None:
    rng = np.random.default_rng(7)
    table = rng.standard_normal((64, 16)).astype(np.float32)
    packed = fastpq.pack_pairs(rng.integers(0, 16, (64, 999)))
    ref = bench.lut_scan(bench.pair_lut(table), packed)
    assert np.array_equal(fastpq.lut_scan_packed(table, packed), ref)
    assert np.array_equal(fastpq.pair_lut(table), bench.pair_lut(table))


def test_scan_byte_kernel_equals_word_kernel() -> None:
    # The big-endian fallback, run here directly so that it is tested on this host too.
    rng = np.random.default_rng(2)
    table = rng.standard_normal((32, 256))
    codes = rng.integers(0, 256, (32, 1030)).astype(np.uint8)
    scores = np.zeros(1030)
    fastpq._scan_kernel_bytes(table, codes, scores)
    assert np.array_equal(scores, fastpq.lut_scan(table, codes))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ip_table_sums_in_index_order(dtype: type) -> None:
    rng = np.random.default_rng(4)
    q = rng.standard_normal(128).astype(dtype)
    cb = rng.standard_normal((32, 256, 4)).astype(dtype)
    ref = np.empty((32, 256), dtype=dtype)  # scalar loop, NumPy scalars of the same dtype
    for m in range(32):
        for j in range(256):
            s = q[4 * m] * cb[m, j, 0]
            for i in range(1, 4):
                s = s + q[4 * m + i] * cb[m, j, i]
            ref[m, j] = s
    got = fastpq.ip_table(q, cb)
    assert got.dtype == dtype and np.array_equal(got, ref)
    with pytest.raises(ValueError, match="D = 127"):
        fastpq.ip_table(q[:127], cb)


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------
def test_encode_bad_input() -> None:
    x, cb = _random(10, 4, 16, 2, seed=0, dtype=np.float32)
    with pytest.raises(TypeError, match="list"):
        fastpq.encode(x.tolist(), cb)
    with pytest.raises(TypeError, match="int64"):
        fastpq.encode(x.astype(np.int64), cb)
    with pytest.raises(TypeError, match="float16"):
        fastpq.encode(x.astype(np.float16), cb.astype(np.float16))
    bad = x.copy()
    bad[3, 5] = np.nan
    with pytest.raises(ValueError, match=r"nan at index \(3, 5\)"):
        fastpq.encode(bad, cb)
    inf_cb = cb.copy()
    inf_cb[1, 2, 0] = -np.inf
    with pytest.raises(ValueError, match=r"-inf at index \(1, 2, 0\)"):
        fastpq.encode(x, inf_cb)
    with pytest.raises(ValueError, match="D = 8"):
        fastpq.encode(x, cb[:3])
    with pytest.raises(ValueError, match="power of two"):
        fastpq.encode(x, cb[:, :12])
    with pytest.raises(ValueError, match="2 dimensions"):
        fastpq.encode(x[0], cb)


def test_encode_int_bad_input() -> None:
    cb = np.zeros((4, 16, 2), dtype=np.int64)
    with pytest.raises(TypeError, match="float"):
        fastpq.encode_int(np.zeros((3, 4, 2)), cb)
    with pytest.raises(ValueError, match=r"\(N, 4, 2\)"):
        fastpq.encode_int(np.zeros((3, 4, 3), dtype=np.int64), cb)
    huge = np.full((1, 4, 2), 1 << 40, dtype=np.int64)
    with pytest.raises(ValueError, match="overflows int64"):
        fastpq.encode_int(huge, cb)


def test_scan_bad_input() -> None:
    table = np.zeros((4, 16), dtype=np.float32)
    codes = np.zeros((4, 9), dtype=np.uint8)
    with pytest.raises(TypeError, match="list"):
        fastpq.lut_scan(table.tolist(), codes)
    with pytest.raises(TypeError, match="complex"):
        fastpq.lut_scan(table.astype(np.complex64), codes)
    with pytest.raises(TypeError, match="float"):
        fastpq.lut_scan(table, codes.astype(np.float32))
    with pytest.raises(ValueError, match="4 rows"):
        fastpq.lut_scan(table, codes[:3])
    with pytest.raises(ValueError, match="value 16 outside"):
        fastpq.lut_scan(table, codes + 16)
    with pytest.raises(ValueError, match="value -1 outside"):
        fastpq.lut_scan(table, codes.astype(np.int64) - 1)
    with pytest.raises(ValueError, match="K = 512"):
        fastpq.lut_scan(np.zeros((4, 512)), codes)
    nan_table = table.copy()
    nan_table[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"nan at index \(1, 2\)"):
        fastpq.lut_scan(nan_table, codes)
    with pytest.raises(ValueError, match="2\\^47"):
        fastpq.lut_scan(np.full((4, 16), 1 << 50), codes)
    with pytest.raises(TypeError, match="uint8"):
        fastpq.lut_scan_packed(table, codes.astype(np.int16))
    with pytest.raises(ValueError, match="even M"):
        fastpq.pair_lut(table[:3])
    with pytest.raises(ValueError, match="even M"):
        fastpq.pack_pairs(codes[:3])
    with pytest.raises(ValueError, match="value 16 outside"):
        fastpq.pack_pairs(codes + 16)


def test_warm_up_reports_jit_cost() -> None:
    info = fastpq.warm_up((2,))
    assert info["seconds"] >= 0.0
    assert info["cache_hits"] + info["cache_misses"] >= 4  # 2 scan + 2 float + 1 int encode
