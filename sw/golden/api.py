"""The public Python API of the golden model: train, encode, decode, attention.

A small, stable surface over :mod:`aqpim.sw.golden.pq` (float PQ), :mod:`aqpim.sw.golden.reference`
(float and
integer attention) and :mod:`aqpim.sw.golden.synthetic` (test data); docs/api.md shows it in use::

    from aqpim.sw.golden import api
    data = api.synthetic(heads=1, tokens=1024)
    q, k, v = data["q"][0], data["k"][0], data["v"][0]
    kcb = api.train(k, subspaces=64, centroids=16)
    codes = api.encode(k, kcb)                      # (T, M) int64
    k_hat = api.decode(codes, kcb)                  # (T, D)
    out = api.attention(q, k, v, mode="int", sinks=4, recent=32)
"""

from __future__ import annotations

import numpy as np
from aqpim.sw.golden import pq, reference
from aqpim.sw.golden import synthetic as _synthetic
from aqpim.sw.golden.reference import IntAttention

__all__ = ["train", "encode", "decode", "attention", "synthetic", "IntAttention"]

MODES = ("exact", "pq", "int")


def train(
    x: np.ndarray,
    *,
    subspaces: int,
    centroids: int,
    iters: int = 25,
    seed: int = 0,
    init: str = "kmeans++",
) -> np.ndarray:
    """Train PQ codebooks (M, K, d) on vectors ``x`` (N, D) by seeded k-means per subspace.

    See :func:`aqpim.sw.golden.pq.train_codebooks` (k-means++ init, empty clusters re-seeded from
    the
    farthest point, ValueError when N < K, D % M != 0 or K is not a power of two).
    """
    return pq.train_codebooks(
        x, subspaces=subspaces, centroids=centroids, iters=iters, seed=seed, init=init
    )


def encode(x: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """Codes (N, M) of vectors ``x`` (N, D): nearest centroid, direct L2, lowest index on ties.

    See :func:`aqpim.sw.golden.pq.encode`.
    """
    return pq.encode(x, codebooks)


def decode(codes: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """Vectors (N, D) rebuilt from codes (N, M). See :func:`aqpim.sw.golden.pq.decode`."""
    return pq.decode(codes, codebooks)


def attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    mode: str = "int",
    key_codebooks: np.ndarray | None = None,
    value_codebooks: np.ndarray | None = None,
    subspaces: int = 64,
    centroids: int = 16,
    sinks: int = 4,
    recent: int = 32,
    banks: int = 4,
    seed: int = 0,
) -> np.ndarray:
    """One head's attention output (D,) for query ``q`` (D,) over ``k``, ``v`` (T, D).

    Parameters
    ----------
    mode:
        ``"exact"``: softmax attention in float64 (the other arguments are ignored).
        ``"pq"``: float PQ attention (:func:`aqpim.sw.golden.reference.pq_attention`).
        ``"int"``: the PIM pipeline in the integer contract over ``banks`` banks
        (:func:`aqpim.sw.golden.reference.int_attention`).
    key_codebooks, value_codebooks:
        Float codebooks (M, K, d); trained on the compressed tokens when omitted.
    subspaces, centroids, seed:
        M, K and the k-means seed when training.
    sinks, recent:
        Leading and trailing tokens kept in full precision (0 allowed).
    banks:
        Banks the compressed tokens are spread over (``"int"`` only).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "exact":
        return reference.exact_attention(q, k, v)
    if mode == "int":
        return reference.int_attention(
            q, k, v, subspaces=subspaces, centroids=centroids, banks=banks, sinks=sinks,
            recent=recent, seed=seed, key_codebooks=key_codebooks,
            value_codebooks=value_codebooks,
        ).out
    q, k, v = reference._check_qkv(q, k, v)
    _, comp = reference.split_tokens(k.shape[0], sinks, recent)
    train_idx = comp if comp.size >= centroids else np.arange(k.shape[0])
    if key_codebooks is None:
        key_codebooks = train(k[train_idx], subspaces=subspaces, centroids=centroids, seed=seed)
    if value_codebooks is None:
        value_codebooks = train(
            v[train_idx], subspaces=subspaces, centroids=centroids, seed=seed + 1
        )
    return reference.pq_attention(
        q, k, v, key_codebooks, value_codebooks, sinks=sinks, recent=recent
    )


def synthetic(**kwargs: object) -> dict[str, np.ndarray]:
    """Seeded LLM-like q/k/v: see :func:`aqpim.sw.golden.synthetic.generate` for the options."""
    return _synthetic.generate(**kwargs)  # type: ignore[arg-type]
