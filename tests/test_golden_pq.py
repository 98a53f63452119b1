"""Float PQ (sw/golden/pq.py): k-means training, encode, decode, bad input."""

from __future__ import annotations

import time

import numpy as np
import pytest
from aqpim.sw.golden import pq


def _brute_encode(x: np.ndarray, cb: np.ndarray) -> np.ndarray:
    """Plain-Python nearest centroid, lowest index on ties (strict <)."""
    m, k, d = cb.shape
    out = np.zeros((x.shape[0], m), dtype=np.int64)
    for n in range(x.shape[0]):
        for s in range(m):
            best, arg = None, 0
            for j in range(k):
                dist = sum((float(x[n, s * d + i]) - float(cb[s, j, i])) ** 2 for i in range(d))
                if best is None or dist < best:
                    best, arg = dist, j
            out[n, s] = arg
    return out


def test_encode_matches_brute_force_with_ties() -> None:
    rng = np.random.default_rng(3)
    # Small integers make exact ties frequent; duplicate centroids force them.
    cb = rng.integers(-3, 4, size=(4, 8, 2)).astype(np.float64)
    cb[:, 5] = cb[:, 2]
    x = rng.integers(-3, 4, size=(200, 8)).astype(np.float64)
    codes = pq.encode(x, cb)
    assert np.array_equal(codes, _brute_encode(x, cb))
    assert not np.any(codes == 5)  # the duplicate of centroid 2 never wins a tie


def test_decode_encode_round_trip_on_centroids() -> None:
    rng = np.random.default_rng(0)
    cb = rng.standard_normal((8, 16, 4))
    codes = rng.integers(0, 16, size=(50, 8))
    x = pq.decode(codes, cb)
    assert x.shape == (50, 32)
    assert np.array_equal(pq.encode(x, cb), codes)
    assert np.array_equal(pq.decode(pq.encode(x, cb), cb), x)


def test_training_is_deterministic_and_seeded() -> None:
    x = np.random.default_rng(1).standard_normal((600, 16))
    a = pq.train_codebooks(x, subspaces=8, centroids=16, seed=5)
    b = pq.train_codebooks(x, subspaces=8, centroids=16, seed=5)
    c = pq.train_codebooks(x, subspaces=8, centroids=16, seed=6)
    assert a.shape == (8, 16, 2) and a.dtype == np.float64
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeanspp_finds_separated_clusters(seed: int) -> None:
    # k-means++ seeds one centroid per far-apart cluster with high probability; a random
    # init often puts two in one cluster, which Lloyd iterations cannot undo (why k-means++).
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((4, 8, 3)) * 100.0  # (M, K, d), far apart
    pick = rng.integers(0, 8, size=(400, 4))
    x = centres[np.arange(4), pick].reshape(400, 12) + 0.01 * rng.standard_normal((400, 12))
    cb = pq.train_codebooks(x, subspaces=4, centroids=8, seed=seed)
    # Every true centre has a learned centroid next to it; distortion is the noise floor.
    for s in range(4):
        gap = np.linalg.norm(centres[s][:, None] - cb[s][None], axis=2).min(axis=1)
        assert gap.max() < 0.1
    assert pq.distortion(x, cb) < 12 * 0.01**2 * 2


def test_empty_clusters_are_reseeded() -> None:
    # 16 distinct locations, each twice: a random init that picks both copies of one
    # location leaves a centroid empty; re-seeding must still cover every location.
    rng = np.random.default_rng(4)
    loc = rng.standard_normal((16, 2)) * 10
    x = np.concatenate([loc, loc])
    hits = 0
    for seed in range(20):
        cb = pq.train_codebooks(x, subspaces=1, centroids=16, init="random", seed=seed, iters=30)
        assert pq.distortion(x, cb) == pytest.approx(0.0, abs=1e-20)
        hits += 1
    assert hits == 20
    # Direct check of the rule: the empty centroid lands on the farthest point.
    xs = np.array([[[0.0], [1.0], [10.0]]])
    cs = np.array([[[0.0], [5.0]]])
    counts = np.array([[3, 0]])
    dist = np.array([[0.0, 1.0, 100.0]])
    assert pq._reseed_empty(xs, cs, counts, dist) == 1
    assert cs[0, 1, 0] == 10.0


def test_empty_cluster_reseed_is_needed() -> None:
    # Without the re-seed (break it on purpose), the duplicate-location data above keeps an
    # empty centroid for some seed: this shows the test above can fail.
    rng = np.random.default_rng(4)
    loc = rng.standard_normal((16, 2)) * 10
    x = np.concatenate([loc, loc])
    orig = pq._reseed_empty
    try:
        pq._reseed_empty = lambda *a: 0  # type: ignore[assignment]
        worst = max(
            pq.distortion(x, pq.train_codebooks(x, subspaces=1, centroids=16, init="random",
                                                seed=s, iters=30))
            for s in range(20)
        )
    finally:
        pq._reseed_empty = orig
    assert worst > 0.0


def test_training_speed() -> None:
    x = np.random.default_rng(0).standard_normal((4096, 128))
    t = time.perf_counter()
    pq.train_codebooks(x, subspaces=64, centroids=16)
    assert time.perf_counter() - t < 4.0  # ~0.7 s alone; slack for a shared 2-core runner


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"x": np.zeros((8, 4))}, ValueError, "N = 8 < K = 16"),
        ({"x": np.full((32, 4), np.nan)}, ValueError, "non-finite value nan"),
        ({"x": np.array([[np.inf] * 4] * 32)}, ValueError, "non-finite value inf"),
        ({"x": np.zeros((32, 5))}, ValueError, "D = 5 is not divisible by subspaces = 2"),
        ({"x": np.zeros((32, 4), dtype=np.int32)}, TypeError, "floating dtype, got int32"),
        ({"x": [[0.0] * 4] * 32}, TypeError, "numpy array, got list"),
        ({"x": np.zeros(32)}, ValueError, "2 dimensions"),
        ({"centroids": 12}, ValueError, "power of two, got 12"),
        ({"centroids": 1}, ValueError, "centroids must be >= 2, got 1"),
        ({"subspaces": 0}, ValueError, "subspaces must be >= 1, got 0"),
        ({"subspaces": 2.0}, TypeError, "subspaces must be an int, got 2.0"),
        ({"iters": -1}, ValueError, "iters must be >= 0, got -1"),
        ({"init": "kmeans"}, ValueError, "'kmeans'"),
    ],
)
def test_train_bad_input(kwargs: dict, exc: type, match: str) -> None:
    args = {"x": np.zeros((32, 4)), "subspaces": 2, "centroids": 16} | kwargs
    x = args.pop("x")
    with pytest.raises(exc, match=match):
        pq.train_codebooks(x, **args)


def test_encode_decode_bad_input() -> None:
    cb = np.zeros((2, 4, 2))
    with pytest.raises(ValueError, match="D = 5"):
        pq.encode(np.zeros((3, 5)), cb)
    with pytest.raises(ValueError, match="power of two >= 2, got 3"):
        pq.encode(np.zeros((3, 4)), np.zeros((2, 3, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        pq.encode(np.array([[0.0, np.nan, 0.0, 0.0]]), cb)
    with pytest.raises(TypeError, match="integer dtype"):
        pq.decode(np.zeros((3, 2)), cb)
    with pytest.raises(ValueError, match="value 4 outside"):
        pq.decode(np.array([[0, 4]]), cb)
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        pq.decode(np.array([[0, 1, 2]]), cb)
