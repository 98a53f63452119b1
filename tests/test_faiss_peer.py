"""FAISS as the peer: same codes from the same centroids, comparable k-means distortion."""

from __future__ import annotations

# FAISS is a dev dependency: a missing FAISS must fail the suite, not skip the peer check.
import faiss
import numpy as np
import pytest
from aqpim.sw import pq

pytestmark = pytest.mark.faiss

D = 64


def _faiss_codes(p: object, x: np.ndarray, m: int, nbits: int) -> np.ndarray:
    raw = p.compute_codes(x)
    if nbits == 8:
        return raw.astype(np.int64)
    out = np.empty((x.shape[0], m), dtype=np.int64)
    out[:, 0::2], out[:, 1::2] = raw & 15, raw >> 4  # FAISS packs the low bits first
    return out


def _data(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.standard_normal((n, D)).astype(np.float32)
    centres = rng.standard_normal((20, D)) * 4
    return (centres[rng.integers(0, 20, n)] + 0.3 * rng.standard_normal((n, D))).astype(
        np.float32
    )


@pytest.mark.parametrize("kind", ["random", "clustered"])
@pytest.mark.parametrize(("m", "nbits"), [(32, 4), (16, 4), (8, 4), (16, 8), (8, 8)])
def test_encode_equals_faiss_codes(kind: str, m: int, nbits: int) -> None:
    x = _data(kind, 3000, seed=m * nbits)
    p = faiss.ProductQuantizer(D, m, nbits)
    p.cp.niter = 4
    p.cp.max_points_per_centroid = 8  # the centroids only need to be FAISS's, not good
    p.cp.min_points_per_centroid = 1
    p.train(x)
    cb = faiss.vector_to_array(p.centroids).reshape(m, 1 << nbits, D // m)
    assert np.array_equal(pq.encode(x, cb), _faiss_codes(p, x, m, nbits))


def test_exact_ties_go_to_lowest_index_like_faiss() -> None:
    m, nbits = 8, 4
    rng = np.random.default_rng(0)
    cb = rng.integers(-2, 3, size=(m, 16, D // m)).astype(np.float32)
    cb[:, 9] = cb[:, 3]  # duplicated centroid: every point near it is an exact tie
    x = rng.integers(-2, 3, size=(2000, D)).astype(np.float32)
    p = faiss.ProductQuantizer(D, m, nbits)
    faiss.copy_array_to_vector(cb.ravel(), p.centroids)
    ours, theirs = pq.encode(x, cb), _faiss_codes(p, x, m, nbits)
    assert np.array_equal(ours, theirs)
    assert np.any(ours == 3) and not np.any(ours == 9)


@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_kmeans_distortion_close_to_faiss(kind: str) -> None:
    m, nbits, iters = 16, 4, 25
    x = _data(kind, 4096, seed=1)
    p = faiss.ProductQuantizer(D, m, nbits)
    p.cp.niter = iters
    p.train(x)
    cb_faiss = faiss.vector_to_array(p.centroids).reshape(m, 16, -1).astype(np.float64)
    cb_ours = pq.train_codebooks(x.astype(np.float64), subspaces=m, centroids=16, iters=iters)
    ours, theirs = pq.distortion(x, cb_ours), pq.distortion(x, cb_faiss)
    assert ours <= 1.03 * theirs, (ours, theirs)
