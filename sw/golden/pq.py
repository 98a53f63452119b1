"""Product quantization in floating point: k-means codebook training, encode and decode.

This is the float side of the golden model (the integer side is :mod:`aqpim.sw.golden.intmodel`).
A vector of dimension D is cut into M sub-vectors of d = D / M elements; subspace m has its own
codebook of K = 2^b centroids, trained by k-means on the sub-vectors of the training set.

Choices (docs/golden.md explains them):

* **Init**: k-means++ (Arthur & Vassilvitskii 2007), run for all M subspaces at once: the first
  centroid is a uniformly drawn training point, every further one is drawn with probability
  proportional to the squared distance to the nearest centroid chosen so far. ``init="random"``
  draws K distinct training points instead (what FAISS does).
* **Empty clusters**: after an assignment step, a centroid that received no point is re-seeded
  with the point that is farthest from its own centroid in that subspace (the worst-served
  point); several empty clusters take the next farthest points, skipping points equal to a
  centroid already in place, so re-seeded centroids never coincide.
* **Determinism**: every random draw comes from ``numpy.random.default_rng(seed)``, in a fixed
  order, so the same input and seed give the same codebooks on every machine.
* **Encode** computes ``sum_i (x_i - c_i)^2`` directly (not ``|x|^2 - 2 x.c + |c|^2``, which
  differs on float near-ties) in the input's precision, and ``argmin`` takes the lowest index
  on exact ties, as FAISS does.
"""

from __future__ import annotations

import numpy as np
from aqpim.sw.golden import fastpq

from aqpim.checks import check_int, float_array

__all__ = ["train_codebooks", "encode", "decode", "distortion", "check_codebooks"]

# Elements of one (subspaces x points x centroids) distance block: small enough to stay in
# cache (measured 2x faster than 4M-element blocks for M=64, K=16, N=4096) whatever M, N, K.
_BLOCK_ELEMS = 1 << 16


# ----------------------------------------------------------------------------------------------
# checks
# ----------------------------------------------------------------------------------------------
def check_codebooks(codebooks: object) -> np.ndarray:
    """Validate a codebook array of shape (M, K, d) and return it.

    Raises
    ------
    TypeError
        If it is not a floating NumPy array.
    ValueError
        If it is not 3-D, has a non-finite entry, or K is not a power of two >= 2.
    """
    cb = float_array("codebooks", codebooks, 3)
    k = cb.shape[1]
    if k < 2 or k & (k - 1):
        raise ValueError(f"centroids (codebooks.shape[1]) must be a power of two >= 2, got {k}")
    if cb.shape[0] < 1 or cb.shape[2] < 1:
        raise ValueError(f"codebooks has an empty dimension: shape {cb.shape}")
    return cb


def _split(x: np.ndarray, subspaces: int) -> np.ndarray:
    """(N, D) -> (M, N, d), contiguous, one slab per subspace."""
    n, dim = x.shape
    return np.ascontiguousarray(x.reshape(n, subspaces, dim // subspaces).transpose(1, 0, 2))


# ----------------------------------------------------------------------------------------------
# distances (direct form, vectorised over subspaces)
# ----------------------------------------------------------------------------------------------
def _sq_dist(xs: np.ndarray, cs: np.ndarray) -> np.ndarray:
    """Squared L2 distances, direct form, summed over d in index order.

    ``xs`` (G, N, d), ``cs`` (G, K, d) -> (G, N, K) in the common dtype. Summing one element at
    a time (rather than ``np.sum``, which may pair terms) fixes the rounding order.
    """
    diff = xs[:, :, None, 0] - cs[:, None, :, 0]
    dist = diff * diff
    for i in range(1, xs.shape[2]):
        diff = xs[:, :, None, i] - cs[:, None, :, i]
        dist += diff * diff
    return dist


def _assign(xs: np.ndarray, cs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid (lowest index on ties) and its distance, for every subspace and point.

    ``xs`` (M, N, d), ``cs`` (M, K, d) -> (codes int64 (M, N), dist (M, N)). Float32/float64
    work runs in the compiled kernel :func:`aqpim.sw.golden.fastpq.nearest_unchecked` (same codes
    and
    distances, bit for bit, 20-50x faster); other dtypes in :func:`_assign_numpy`.
    """
    if np.result_type(xs.dtype, cs.dtype) in (np.float32, np.float64):
        m, n, d = xs.shape
        codes, dist = fastpq.nearest_unchecked(xs.transpose(1, 0, 2).reshape(n, m * d), cs)
        return codes.T, dist.T
    return _assign_numpy(xs, cs)


def _assign_numpy(xs: np.ndarray, cs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plain NumPy form of :func:`_assign`: the reference the compiled kernel is tested against.

    ``xs`` (M, N, d), ``cs`` (M, K, d) -> (codes int64 (M, N), dist (M, N)).
    """
    m, n, _ = xs.shape
    k = cs.shape[1]
    codes = np.empty((m, n), dtype=np.int64)
    best = np.empty((m, n), dtype=np.result_type(xs.dtype, cs.dtype))
    # Block over subspaces first, then points, so the (G, N, K) temporary stays small.
    g = max(1, min(m, _BLOCK_ELEMS // max(1, n * k)))
    nb = n if g > 1 else max(1, min(n, _BLOCK_ELEMS // k))
    for m0 in range(0, m, g):
        for n0 in range(0, n, nb):
            dist = _sq_dist(xs[m0:m0 + g, n0:n0 + nb], cs[m0:m0 + g])
            idx = np.argmin(dist, axis=2)  # first minimum: lowest index on exact ties
            codes[m0:m0 + g, n0:n0 + nb] = idx
            best[m0:m0 + g, n0:n0 + nb] = np.take_along_axis(dist, idx[:, :, None], 2)[..., 0]
    return codes, best


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------
def _init_kmeanspp(xs: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding for all subspaces at once: (M, N, d) -> (M, K, d) float64."""
    m, n, d = xs.shape
    rows = np.arange(m)
    cs = np.empty((m, k, d), dtype=np.float64)
    first = rng.integers(0, n, size=m)
    cs[:, 0] = xs[rows, first]
    closest = np.sum((xs - cs[:, None, 0]) ** 2, axis=2)  # (M, N)
    for j in range(1, k):
        cum = np.cumsum(closest, axis=1)
        total = cum[:, -1]
        u = rng.random(m) * total
        pick = np.array([np.searchsorted(cum[i], u[i], side="right") for i in range(m)])
        # All remaining points coincide with chosen centroids (total == 0): any point will do.
        pick = np.where(total > 0, np.minimum(pick, n - 1), rng.integers(0, n, size=m))
        cs[:, j] = xs[rows, pick]
        closest = np.minimum(closest, np.sum((xs - cs[:, None, j]) ** 2, axis=2))
    return cs


def _init_random(xs: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """K distinct training points per subspace."""
    m, n, _ = xs.shape
    picks = np.stack([rng.choice(n, size=k, replace=False) for _ in range(m)])
    return np.take_along_axis(xs, picks[:, :, None], axis=1).astype(np.float64)


def _update(xs: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Centroid means per (subspace, cluster) and cluster sizes; bincount over M*K bins."""
    m, n, d = xs.shape
    flat = (codes + (np.arange(m) * k)[:, None]).reshape(-1)
    counts = np.bincount(flat, minlength=m * k).reshape(m, k)
    sums = np.empty((m, k, d), dtype=np.float64)
    for i in range(d):
        sums[:, :, i] = np.bincount(flat, weights=xs[:, :, i].reshape(-1), minlength=m * k).reshape(
            m, k
        )
    means = sums / np.maximum(counts, 1)[:, :, None]
    return means, counts


def _reseed_empty(
    xs: np.ndarray, cs: np.ndarray, counts: np.ndarray, dist: np.ndarray
) -> int:
    """Move each empty centroid onto the point farthest from its centroid; returns how many.

    Several empty clusters of one subspace take the next farthest points, skipping any point
    equal to a centroid already in place (duplicated data would otherwise seed two centroids
    on one spot, and the higher index would stay empty). Modifies ``cs`` in place.
    """
    moved = 0
    for s in np.flatnonzero((counts == 0).any(axis=1)):
        empties = list(np.flatnonzero(counts[s] == 0))
        # Farthest points first; a stable sort keeps the lowest point index among equals.
        for p in np.argsort(-dist[s], kind="stable"):
            if not empties:
                break
            if np.any(np.all(cs[s] == xs[s, p], axis=1)):
                continue
            cs[s, empties.pop(0)] = xs[s, p]
            moved += 1
    return moved


def train_codebooks(
    x: np.ndarray,
    *,
    subspaces: int,
    centroids: int,
    iters: int = 25,
    seed: int = 0,
    init: str = "kmeans++",
) -> np.ndarray:
    """Train one PQ codebook per subspace with k-means (Lloyd), all subspaces at once.

    Parameters
    ----------
    x:
        Training vectors, float, shape (N, D), finite. N must be at least ``centroids``.
    subspaces:
        M; D must be divisible by M.
    centroids:
        K, centroids per subspace: a power of two >= 2.
    iters:
        Lloyd iterations (assignment + update) after the init; stops earlier once no
        assignment changes (further iterations would be no-ops). 0 returns the init.
    seed:
        Seed of ``numpy.random.default_rng``; same input and seed give the same codebooks.
    init:
        ``"kmeans++"`` (default) or ``"random"`` (K distinct training points, as FAISS).

    Returns
    -------
    codebooks:
        float64, shape (M, K, d) with d = D / M.

    Raises
    ------
    TypeError
        If ``x`` is not a floating array or a parameter is not an int / str.
    ValueError
        NaN/Inf in ``x``, wrong dimensions, D % M != 0, K not a power of two, N < K, a
        negative ``iters`` or an unknown ``init``.
    """
    x = float_array("x", x, 2)
    subspaces = check_int("subspaces", subspaces, 1)
    centroids = check_int("centroids", centroids, 2)
    iters = check_int("iters", iters, 0)
    seed = check_int("seed", seed, 0)
    if centroids & (centroids - 1):
        raise ValueError(f"centroids must be a power of two, got {centroids}")
    n, dim = x.shape
    if dim == 0 or dim % subspaces:
        raise ValueError(f"D = {dim} is not divisible by subspaces = {subspaces}")
    if n < centroids:
        raise ValueError(
            f"k-means needs at least as many training vectors as centroids: N = {n} < K = "
            f"{centroids}"
        )
    if not isinstance(init, str) or init not in ("kmeans++", "random"):
        raise ValueError(f"init must be 'kmeans++' or 'random', got {init!r}")

    rng = np.random.default_rng(seed)
    xs = _split(x.astype(np.float64, copy=False), subspaces)
    cs = (_init_kmeanspp if init == "kmeans++" else _init_random)(xs, centroids, rng)
    prev = None
    for _ in range(iters):
        codes, dist = _assign(xs, cs)
        if prev is not None and np.array_equal(codes, prev):
            break  # converged: another update would give the same centroids
        means, counts = _update(xs, codes, centroids)
        cs = np.where(counts[:, :, None] > 0, means, cs)
        # After a re-seed the old assignment is stale: do not take it as converged.
        prev = None if _reseed_empty(xs, cs, counts, dist) else codes
    return cs


# ----------------------------------------------------------------------------------------------
# encode / decode
# ----------------------------------------------------------------------------------------------
def encode(x: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """Nearest centroid per subspace: direct ``sum (x - c)^2``, ties to the lowest index.

    The distances are computed in the wider of the two dtypes (float32 data against float32
    centroids stays float32, as FAISS computes), summed over d in index order.

    Parameters
    ----------
    x:
        float, shape (N, D), finite.
    codebooks:
        float, shape (M, K, d) with M * d = D.

    Returns
    -------
    codes:
        int64, shape (N, M), values in [0, K).
    """
    x = float_array("x", x, 2)
    cb = check_codebooks(codebooks)
    m, _, d = cb.shape
    if x.shape[1] != m * d:
        raise ValueError(f"x has D = {x.shape[1]}, codebooks need M * d = {m} * {d} = {m * d}")
    if np.result_type(x.dtype, cb.dtype) in (np.float32, np.float64):
        # The compiled kernel reads (N, D) rows as they are: no split, no transposes.
        return fastpq.nearest_unchecked(x, cb)[0]
    codes, _ = _assign_numpy(_split(x, m), cb)
    return np.ascontiguousarray(codes.T)


def decode(codes: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """Reconstruct vectors from codes: ``out[n, m*d:(m+1)*d] = codebooks[m, codes[n, m]]``.

    Parameters
    ----------
    codes:
        int, shape (N, M), values in [0, K).
    codebooks:
        float, shape (M, K, d).

    Returns
    -------
    x_hat:
        shape (N, M * d), the codebooks' dtype.
    """
    cb = check_codebooks(codebooks)
    if not isinstance(codes, np.ndarray):
        raise TypeError(f"codes must be a numpy array, got {type(codes).__name__}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise TypeError(f"codes must have an integer dtype, got {codes.dtype}")
    m, k, d = cb.shape
    if codes.ndim != 2 or codes.shape[1] != m:
        raise ValueError(f"codes must have shape (N, {m}), got {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= k):
        bad = codes.min() if codes.min() < 0 else codes.max()
        raise ValueError(f"codes has value {bad} outside [0, {k})")
    out = cb[np.arange(m)[None, :], codes]  # (N, M, d)
    return out.reshape(codes.shape[0], m * d)


def distortion(x: np.ndarray, codebooks: np.ndarray) -> float:
    """Mean squared reconstruction error per vector: ``mean_n ||x_n - decode(encode(x_n))||^2``."""
    x = float_array("x", x, 2)
    xh = decode(encode(x, codebooks), codebooks)
    return float(np.mean(np.sum((x.astype(np.float64) - xh) ** 2, axis=1)))
