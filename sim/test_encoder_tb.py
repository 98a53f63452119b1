# amaranth: UnusedElaboratable=no
"""cocotb testbench of the PQ encoder (hw/encoder.py) against
:func:`aqpim.sw.golden.intmodel.encode`.

Run through pytest (tests/test_encoder.py), which builds one Verilator model per parameter set
with :func:`aqpim.sim.runner.build_and_run`. The stimulus generators here are plain NumPy and
are also used by the quick Amaranth-simulator tests.

A run is a list of episodes; each loads (or partly reloads) the codebooks through ``i_cb`` and
then streams sub-vectors of one stimulus kind, in shuffled subspace order, through ``i_x``, with
random idle cycles on both inputs and random backpressure on ``o_code``. Reloads start as soon as
the previous episode's inputs were accepted, while its codes may still be in flight, so the
unit's "writes wait for an empty pipeline" rule is exercised too. Every code is checked in
order against the golden model, and the cycle stamps of the handshakes give the measured
latency and cycles per sub-vector, checked against the stated ``T + 3`` and ``T = K / P``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from aqpim.sw.golden.intmodel import encode

from aqpim.numerics import Numerics

KINDS = ("random", "clustered", "dup_ties", "midpoint_ties", "extremes")

Write = tuple[int, int, list[int]]
Item = tuple[int, list[int], int]


def numerics(p: dict[str, int]) -> Numerics:
    """The Numerics of an encoder parameter dict (head_dim = d * M)."""
    return Numerics(
        head_dim=p["sub_dim"] * p["subspaces"], subspaces=p["subspaces"],
        centroids=p["centroids"], elem_bits=p["elem_bits"],
    )


# ----------------------------------------------------------------------------------------------
# stimulus (pure NumPy)
# ----------------------------------------------------------------------------------------------
def _special(num: Numerics) -> np.ndarray:
    lo, hi = num.elem_min, num.elem_max
    return np.array([lo, lo + 1, -1, 0, 1, hi - 1, hi])


def make_codebook(kind: str, num: Numerics, rng: np.random.Generator) -> np.ndarray:
    """A codebook (M, K, d) for one stimulus kind, int64 in the W-bit range."""
    m, k, d = num.subspaces, num.centroids, num.sub_dim
    lo, hi = num.elem_min, num.elem_max
    cb = rng.integers(lo, hi + 1, size=(m, k, d))
    if kind == "dup_ties":
        # Copy random centroids onto other indices, both above and below the original.
        for s in range(m):
            for _ in range(max(1, k // 4)):
                a, b = rng.choice(k, size=2, replace=False)
                cb[s, b] = cb[s, a]
    elif kind == "extremes":
        cb = rng.choice(_special(num), size=(m, k, d))
        cb[:, 0] = hi  # the largest possible distance, from x = all lo
        if k > 2:
            cb[:, k - 1] = hi  # a duplicate of centroid 0 at the top index
    return cb.astype(np.int64)


def make_vectors(
    kind: str, cb: np.ndarray, n: int, num: Numerics, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` full vectors (n, M, d) of stimulus ``kind`` for codebook ``cb``.

    Returns (x, codebook): the midpoint-tie kind moves centroids, so it returns a new codebook.
    """
    m, k, d = num.subspaces, num.centroids, num.sub_dim
    lo, hi = num.elem_min, num.elem_max
    cb = cb.copy()
    if kind in ("random", "dup_ties"):
        x = rng.integers(lo, hi + 1, size=(n, m, d))
        if kind == "dup_ties":
            # Exactly on some centroids: each is then a tie among its duplicates.
            pick = rng.integers(0, k, size=(n, m))
            on = rng.random((n, m)) < 0.5
            x = np.where(on[..., None], cb[np.arange(m)[None, :], pick], x)
    elif kind == "clustered":
        pick = rng.integers(0, k, size=(n, m))
        spread = max(1, (hi - lo) // 64)
        x = cb[np.arange(m)[None, :], pick] + rng.integers(-spread, spread + 1, size=(n, m, d))
    elif kind == "midpoint_ties":
        # A pair of centroids symmetric about a point, and the point as x: both are at the same
        # distance and, with a small offset, usually the nearest. Pairs are disjoint (random
        # order, so the lower index is sometimes the first, sometimes the second) for the first
        # K/2 vectors of each subspace; later vectors reuse pairs and are ordinary stimulus.
        x = np.empty((n, m, d), dtype=np.int64)
        step = max(1, (hi - lo) // 256)
        for s in range(m):
            perm = rng.permutation(k)
            for i in range(n):
                c = rng.integers(lo + 4 * step, hi - 4 * step + 1, size=d)
                v = rng.integers(-2 * step, 2 * step + 1, size=d)
                a, b = perm[2 * (i % (k // 2))], perm[2 * (i % (k // 2)) + 1]
                cb[s, a], cb[s, b] = c - v, c + v
                x[i, s] = c
    elif kind == "extremes":
        x = rng.choice(_special(num), size=(n, m, d))
        if n:
            x[0] = lo  # distance d * (2^W - 1)^2 to centroid 0 = all hi
    else:
        raise ValueError(f"unknown stimulus kind {kind!r}; expected one of {KINDS}")
    x = np.clip(x, lo, hi).astype(np.int64)
    return x, cb


def subvector_stream(x: np.ndarray, codes: np.ndarray, rng: np.random.Generator) -> list[Item]:
    """(sub, sub-vector, expected code) for every (vector, subspace), in shuffled order."""
    n, m, _ = x.shape
    order = rng.permutation(n * m)
    return [
        (int(j % m), [int(v) for v in x[j // m, j % m]], int(codes[j // m, j % m]))
        for j in order
    ]


def episodes(
    p: dict[str, int], seed: int, n_vectors: int, kinds: tuple[str, ...] = KINDS
) -> Iterator[tuple[list[Write], list[Item]]]:
    """The stimulus of a run: per episode the codebook writes and the checked sub-vectors.

    Yields (writes, items): writes are (sub, idx, vec), items come from
    :func:`subvector_stream` with the golden model's codes. The first episode loads every
    centroid; later ones reload everything or a random half (the rest keeps its old values).
    """
    num = numerics(p)
    rng = np.random.default_rng(seed)
    m, k = num.subspaces, num.centroids
    current: np.ndarray | None = None
    for kind in kinds:
        x, cb = make_vectors(kind, make_codebook(kind, num, rng), n_vectors, num, rng)
        if current is None or kind == "midpoint_ties" or rng.random() < 0.5:
            changed = [(s, j) for s in range(m) for j in range(k)]
        else:
            mask = rng.random((m, k)) < 0.5
            cb = np.where(mask[..., None], cb, current)
            changed = [(s, j) for s in range(m) for j in range(k) if mask[s, j]]
        order = rng.permutation(len(changed))
        writes = [(changed[i][0], changed[i][1], [int(v) for v in cb[changed[i]]]) for i in order]
        current = cb
        yield writes, subvector_stream(x, encode(x, cb, num), rng)


# ----------------------------------------------------------------------------------------------
# cocotb side
# ----------------------------------------------------------------------------------------------
try:
    import cocotb
except ImportError:  # pragma: no cover - cocotb is a dependency; this keeps the stimulus usable
    cocotb = None


def _layouts(p: dict[str, int]) -> tuple[Any, Any, Any, Any]:
    from aqpim.hw.encoder import PQEncoder

    enc = PQEncoder(**p)
    return enc, enc.cb_layout, enc.x_layout, enc.code_layout


if cocotb is not None:

    @cocotb.test()
    async def encoder_matches_golden(dut: Any) -> None:
        """Every stimulus kind, codebook reloads, random idle and backpressure: bit-exact."""
        from aqpim.sim.testbench import Testbench

        tb = Testbench(dut)
        p = {k: int(v) for k, v in tb.params.items()}
        enc, cb_l, x_l, code_l = _layouts(p)
        tp = tb.test_params
        idle = float(tp.get("idle_prob", 0.3))
        bp = float(tp.get("backpressure_prob", 0.3))
        n_vectors = int(tp.get("n_vectors", 8))
        kinds = tuple(tp.get("kinds", KINDS))
        tb.start_clock()
        src_cb = tb.source("i_cb", cb_l, idle_prob=idle)
        src_x = tb.source("i_x", x_l, idle_prob=idle)
        snk = tb.sink("o_code", code_l, backpressure_prob=bp)
        await tb.reset()

        total = 0
        for writes, items in episodes(p, tb.seed, n_vectors, kinds):
            await src_x.wait_idle()  # accepted, maybe still in flight: the reload must wait
            for s, j, vec in writes:
                src_cb.send({"sub": s, "idx": j, "vec": vec})
            await src_cb.wait_idle()
            for s, vec, code in items:
                src_x.send({"sub": s, "x": vec})
                tb.expect({"sub": s, "code": code})
            total += len(items)
        await snk.wait_for(total, timeout_cycles=(enc.iterations + 8) * total * 20 + 10_000)
        await tb.cycles(5)
        tb.check(snk.received)

        # Throughput and latency from the handshake cycles.
        t = enc.iterations
        ins = [tr.cycle for tr in src_x.sent]
        gaps = np.diff(ins)
        if gaps.size:
            if gaps.min() < t:
                tb.errors.append(f"two inputs accepted {gaps.min()} cycles apart, T = {t}")
            dut._log.info(f"input gaps: min {gaps.min()}, mean {gaps.mean():.2f} (T = {t})")
        lat = [o.cycle - i for o, i in zip(snk.received, ins, strict=False)]
        if lat and min(lat) != enc.latency:
            tb.errors.append(f"minimum latency {min(lat)} cycles, stated {enc.latency}")
        if lat:
            dut._log.info(f"{total} sub-vectors checked; latency min {min(lat)} max {max(lat)}")
        tb.assert_ok()

    @cocotb.test()
    async def encoder_full_rate(dut: Any) -> None:
        """No idle, no backpressure: N sub-vectors take exactly (N - 1) * T + latency cycles."""
        from aqpim.sim.testbench import Testbench

        tb = Testbench(dut)
        p = {k: int(v) for k, v in tb.params.items()}
        enc, cb_l, x_l, code_l = _layouts(p)
        n_vectors = int(tb.test_params.get("n_rate", 4))
        tb.start_clock()
        src_cb = tb.source("i_cb", cb_l, idle_prob=0.0)
        src_x = tb.source("i_x", x_l, idle_prob=0.0)
        snk = tb.sink("o_code", code_l, backpressure_prob=0.0)
        await tb.reset()
        ((writes, items),) = episodes(p, tb.seed + 1, n_vectors, ("random",))
        for s, j, vec in writes:
            src_cb.send({"sub": s, "idx": j, "vec": vec})
        await src_cb.wait_idle()
        for s, vec, code in items:
            src_x.send({"sub": s, "x": vec})
            tb.expect({"sub": s, "code": code})
        await snk.wait_for(len(items), timeout_cycles=(enc.iterations + 8) * len(items) * 4)
        tb.check(snk.received)
        n = len(items)
        span = snk.received[-1].cycle - src_x.sent[0].cycle
        want = (n - 1) * enc.iterations + enc.latency
        per = (src_x.sent[-1].cycle - src_x.sent[0].cycle) / max(1, n - 1)
        dut._log.info(
            f"full rate: {n} sub-vectors in {span} cycles, {per:.3f} cycles per sub-vector "
            f"(stated {enc.iterations}), latency {enc.latency}"
        )
        if span != want:
            tb.errors.append(f"{n} sub-vectors took {span} cycles, stated {want}")
        tb.assert_ok()
