"""FAISS as the peer: the same codes wherever the nearest centroid is unique, comparable k-means.

FAISS's choice among centroids at the same distance is not specified: it depends on its code
path (direct or BLAS-expanded distances, block sizes chosen by ``n``) and on the SIMD level (its
AVX2 kernels return the higher index on some exact ties). So every code is classified against
the exact (float64) distances of the float32 inputs before it is compared:

* ``unique``: FAISS chose the unique exact minimum; ours must equal it.
* ``tie``: several centroids share the exact minimum; ours must be the lowest of them, whatever
  FAISS chose (our rule, docs/numerics.md).
* ``faiss_off``: FAISS's choice is not an exact minimum (rounding of its expanded form on near
  ties); ours must be the exact minimum.

Each data set runs under every SIMD level FAISS can dispatch to on this machine (``SIMDConfig``
switches at run time in FAISS >= 1.12); the class counts are printed in the pytest summary.
"""

from __future__ import annotations

# FAISS is a dev dependency: a missing FAISS must fail the suite, not skip the peer check.
import faiss
import numpy as np
import pytest
from amaranth.sim import Simulator
from aqpim.hw.argmin import ArgminTree
from aqpim.sw.golden import pq

pytestmark = pytest.mark.faiss

N = 3000  # several thousand vectors: FAISS changes code path with n
M = 4  # subspaces per vector; D = M * d
KINDS = ("random", "clustered", "duplicated", "midpoint", "large")
CLASSES = ("unique", "tie", "faiss_off")


def _simd_levels() -> list[str]:
    """The SIMD levels FAISS can run at here; just the loaded one without dynamic dispatch."""
    config = getattr(faiss, "SIMDConfig", None)
    if config is None or not config.has_dynamic_dispatch():
        return ["default"]
    names = ("NONE", "AVX2", "AVX512", "AVX512_SPR")
    return [
        n for n in names if config.is_simd_level_available(getattr(faiss, f"SIMDLevel_{n}"))
    ]


def _data(kind: str, d: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 vectors (N, M*d) and codebooks (M, K, d) of one stimulus kind."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        x = rng.standard_normal((N, M * d))
        cb = rng.standard_normal((M, k, d))
    elif kind == "clustered":
        centres = rng.standard_normal((16, M * d)) * 4
        x = centres[rng.integers(0, 16, N)] + 0.3 * rng.standard_normal((N, M * d))
        cb = x[rng.choice(N, k, replace=False)].reshape(k, M, d).transpose(1, 0, 2)
    elif kind == "duplicated":
        # Small integers and every other centroid a copy of its neighbour: exact ties.
        x = rng.integers(-2, 3, size=(N, M * d))
        cb = rng.integers(-2, 3, size=(M, k, d))
        cb[:, 1::2] = cb[:, 0::2]
    elif kind == "midpoint":
        # Centroids on an even lattice, points at odd coordinates: equidistant from 2..2^d
        # neighbouring centroids.
        side = max(2, round(k ** (1 / d)))
        grid = np.stack(np.meshgrid(*[np.arange(side)] * d, indexing="ij"), -1).reshape(-1, d)
        cb = np.stack([2 * rng.permutation(np.resize(grid, (k, d)), axis=0) for _ in range(M)])
        x = 2 * rng.integers(0, side - 1, size=(N, M * d)) + 1
    elif kind == "large":
        # Around 1e4 with unit spread: FAISS's ||x||^2 - 2 x.c + ||c||^2 loses the low bits.
        x = 1e4 + rng.standard_normal((N, M * d))
        cb = 1e4 + rng.standard_normal((M, k, d))
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return x.astype(np.float32), cb.astype(np.float32)


def _exact_distances(x: np.ndarray, cb: np.ndarray) -> np.ndarray:
    """(N, M, K) squared distances in float64: exact for these float32 inputs' magnitudes."""
    m, _, d = cb.shape
    xs = x.astype(np.float64).reshape(x.shape[0], m, 1, d)
    return ((xs - cb.astype(np.float64)[None]) ** 2).sum(-1)


def _faiss_codes(x: np.ndarray, cb: np.ndarray) -> np.ndarray:
    m, k, d = cb.shape
    nbits = k.bit_length() - 1
    p = faiss.ProductQuantizer(m * d, m, nbits)
    faiss.copy_array_to_vector(cb.ravel(), p.centroids)
    raw = p.compute_codes(x)
    if nbits == 8:
        return raw.astype(np.int64)
    out = np.empty((x.shape[0], m), dtype=np.int64)
    out[:, 0::2], out[:, 1::2] = raw & 15, raw >> 4  # FAISS packs the low bits first
    return out


def classify(dist: np.ndarray, theirs: np.ndarray, ours: np.ndarray) -> dict[str, int]:
    """Count the classes of every code and assert the rule of each; returns the counts."""
    best = dist.min(-1, keepdims=True)
    at_min = dist == best  # (N, M, K)
    lowest = at_min.argmax(-1)  # first True: the lowest index among the exact minima
    ties = at_min.sum(-1) > 1
    theirs_min = np.take_along_axis(at_min, theirs[..., None], -1)[..., 0]
    cls = {
        "unique": ~ties & theirs_min,
        "tie": ties,
        "faiss_off": ~ties & ~theirs_min,
    }
    wrong = ours != lowest
    for name, mask in cls.items():
        bad = np.argwhere(mask & wrong)
        if len(bad):
            n, s = bad[0]
            raise AssertionError(
                f"{name}: {len(bad)} codes differ from the rule, first at vector {n} subspace "
                f"{s}: ours {ours[n, s]}, FAISS {theirs[n, s]}, exact minima "
                f"{np.flatnonzero(at_min[n, s]).tolist()}"
            )
    assert np.array_equal(ours[cls["unique"]], theirs[cls["unique"]])
    return {name: int(mask.sum()) for name, mask in cls.items()}


@pytest.fixture(scope="module")
def datasets() -> dict[tuple[str, int, int], tuple[np.ndarray, ...]]:
    """(kind, d, K) -> x, codebooks, exact distances, golden codes: shared by every level."""
    out = {}
    for i, (kind, d, k) in enumerate(
        (kind, d, k) for kind in KINDS for d in (1, 2, 4, 8, 16) for k in (16, 256)
    ):
        x, cb = _data(kind, d, k, seed=i)
        out[kind, d, k] = (x, cb, _exact_distances(x, cb), pq.encode(x, cb))
    return out


@pytest.mark.parametrize("level", _simd_levels())
def test_codes_agree_with_faiss_tie_aware(level: str, datasets, peer_counts) -> None:
    config = getattr(faiss, "SIMDConfig", None)
    if level != "default":
        previous = config.get_level()
        config.set_level(getattr(faiss, f"SIMDLevel_{level}"))
    try:
        totals = dict.fromkeys(CLASSES, 0)
        for (kind, _, _), (x, cb, dist, ours) in datasets.items():
            counts = classify(dist, _faiss_codes(x, cb), ours)
            row = peer_counts.setdefault(f"{level:>10} {kind:>10}", dict.fromkeys(CLASSES, 0))
            for name in CLASSES:
                totals[name] += counts[name]
                row[name] += counts[name]
    finally:
        if level != "default":
            config.set_level(previous)
    peer_counts[f"{level:>10} {'all':>10}"] = totals
    # The stimulus exercises every class the rule distinguishes.
    assert totals["unique"] > 0 and totals["tie"] > 0


def test_rtl_argmin_takes_lowest_of_exact_ties() -> None:
    """The encoder's argmin tree (amaranth.sim) on integer-midpoint and duplicated ties."""
    checked = 0
    for kind, k in (("midpoint", 16), ("duplicated", 16), ("midpoint", 256)):
        x, cb = _data(kind, 2, k, seed=7)
        dist = _exact_distances(x[:48], cb).astype(np.int64).reshape(-1, k)
        tree = ArgminTree(count=k, value_bits=int(dist.max()).bit_length() + 1)
        got: list[int] = []

        async def bench(ctx, tree=tree, dist=dist, got=got) -> None:
            for row in dist:
                for j, v in enumerate(row):
                    ctx.set(tree.values[j], int(v))
                got.append(ctx.get(tree.index))

        sim = Simulator(tree)
        sim.add_testbench(bench)
        sim.run()
        want = (dist == dist.min(-1, keepdims=True)).argmax(-1)
        assert np.array_equal(np.array(got), want), (kind, k)
        checked += int(((dist == dist.min(-1, keepdims=True)).sum(-1) > 1).sum())
    assert checked > 50  # enough of the rows were real ties


def test_kmeans_distortion_close_to_faiss() -> None:
    m, nbits, iters, dim = 16, 4, 25, 64
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((20, dim)) * 4
    x = (centres[rng.integers(0, 20, 4096)] + 0.3 * rng.standard_normal((4096, dim))).astype(
        np.float32
    )
    p = faiss.ProductQuantizer(dim, m, nbits)
    p.cp.niter = iters
    p.train(x)
    cb_faiss = faiss.vector_to_array(p.centroids).reshape(m, 16, -1).astype(np.float64)
    cb_ours = pq.train_codebooks(x.astype(np.float64), subspaces=m, centroids=16, iters=iters)
    ours, theirs = pq.distortion(x, cb_ours), pq.distortion(x, cb_faiss)
    assert ours <= 1.03 * theirs, (ours, theirs)
