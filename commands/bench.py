"""``aqpim bench golden``: golden-model PQ throughput against FAISS, as JSON on stdout.

Same data, same centroids, same run, one thread each (FAISS is pinned to one OpenMP thread;
the numba kernels of :mod:`aqpim.sw.golden.fastpq` use no ``prange``, so they run on one thread),
best
of N timings, the golden and the FAISS call timed alternately so that load from other processes
hits both alike:

* **encode**: :func:`aqpim.sw.golden.fastpq.encode` (direct L2, float32;
:func:`aqpim.sw.golden.pq.encode`
  runs on the same kernel) against ``faiss.ProductQuantizer.compute_codes`` with FAISS's own
  trained centroids;
* **LUT scan**, one query over T tokens, LUT construction (:func:`aqpim.sw.golden.fastpq.ip_table`)
  plus scores plus the best token (what ``IndexPQ.search`` with k=1 does):
  :func:`aqpim.sw.golden.fastpq.lut_scan` on codes stored (M, T) against ``faiss.IndexPQ.search``
  (k=1) and, for 4-bit codes, ``faiss.IndexPQFastScan.search``.

For 4-bit codes the golden scan works on the bytes as the bank stores them (two codes per
byte): one 256-entry table per pair of subspaces, ``LUT2[a + 16 b] = LUT[2i, a] + LUT[2i+1, b]``,
so it does M/2 lookups per token instead of M (:func:`aqpim.sw.golden.fastpq.lut_scan_packed`).

The numba kernels' compile (or cache load) time is measured once, before the timed runs, and
reported as ``jit_warmup``. The plain NumPy forms are timed too, as ``numpy``: :func:`lut_scan`
here and ``pq._assign_numpy`` (what ``pq.encode`` ran before it moved onto the kernel); the
kernels' results are checked equal to theirs in the same run. :func:`lut_scan`,
:func:`pair_lut` and :func:`pack_pairs` stay as the NumPy references (they equal
:func:`aqpim.sw.golden.intmodel.lut_accumulate` on integer LUTs, tests/test_golden_intmodel.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numba
import numpy as np
from aqpim.sw.golden import fastpq, pq, synthetic

__all__ = ["lut_scan", "pair_lut", "pack_pairs", "best_of", "best_of_each", "run", "main"]


def lut_scan(table: np.ndarray, codes_mt: np.ndarray) -> np.ndarray:
    """``s_t = sum_m table[m, codes_mt[m, t]]`` with codes stored (M, T); one take per row.

    The accumulator has the table's dtype (int64 for integer LUTs: exact).
    """
    if table.ndim != 2 or codes_mt.ndim != 2 or codes_mt.shape[0] != table.shape[0]:
        raise ValueError(f"table (M, K) and codes (M, T) disagree: {table.shape}, {codes_mt.shape}")
    acc_dtype = np.int64 if np.issubdtype(table.dtype, np.integer) else table.dtype
    scores = np.zeros(codes_mt.shape[1], dtype=acc_dtype)
    tmp = np.empty_like(scores)
    for m in range(table.shape[0]):
        np.take(table[m].astype(acc_dtype, copy=False), codes_mt[m], out=tmp)
        scores += tmp
    return scores


def pair_lut(table: np.ndarray) -> np.ndarray:
    """(M, 16) 4-bit LUT -> (M/2, 256): ``out[i, a + 16 b] = table[2i, a] + table[2i+1, b]``.

    Integer tables are widened to int64 first, so the pair sums of an int16 LUT cannot wrap.
    """
    m, k = table.shape
    if k != 16 or m % 2:
        raise ValueError(f"pair_lut needs an even M and K = 16, got table shape {table.shape}")
    if np.issubdtype(table.dtype, np.integer):
        table = table.astype(np.int64)
    return (table[0::2, None, :] + table[1::2, :, None]).reshape(m // 2, 256)


def pack_pairs(codes_mt: np.ndarray) -> np.ndarray:
    """(M, T) 4-bit codes -> (M/2, T) bytes, subspace 2i in the low nibble."""
    if codes_mt.shape[0] % 2:
        raise ValueError(f"pack_pairs needs an even M, got {codes_mt.shape[0]}")
    return (codes_mt[0::2] | (codes_mt[1::2] << 4)).astype(np.uint8)


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Smallest wall time of ``repeat`` calls, in seconds."""
    return best_of_each([fn], repeat)[0]


def best_of_each(fns: list[Callable[[], object]], repeat: int) -> list[float]:
    """Smallest wall time of each function over ``repeat`` rounds, calling them in turn.

    Interleaving the contenders (rather than timing one ``repeat`` times, then the next) makes
    a burst of load from other processes land on both, so their ratio is steadier.
    """
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t)
    return best


def _faiss_codes(p: object, raw: np.ndarray, m: int, nbits: int) -> np.ndarray:
    """FAISS packed codes (N, code_size) -> (N, M) ints (low bits first)."""
    if nbits == 8:
        return raw.astype(np.int64)
    out = np.empty((raw.shape[0], m), dtype=np.int64)
    out[:, 0::2], out[:, 1::2] = raw & 15, raw >> 4
    return out


def _numpy_encode(x: np.ndarray, cb: np.ndarray) -> np.ndarray:
    """The plain NumPy encode (``pq.encode`` itself now runs on the compiled kernel)."""
    codes, _ = pq._assign_numpy(pq._split(x, cb.shape[0]), cb)
    return np.ascontiguousarray(codes.T)


def _table(q: np.ndarray, cb: np.ndarray) -> np.ndarray:
    """Query LUT ``LUT[m, j] = q_m . C_m[j]`` (float32, as FAISS's inner-product table)."""
    return fastpq.ip_table(np.asarray(q, np.float32), np.asarray(cb, np.float32))  # no copies


def run(tokens: int = 65536, encode_n: int = 16384, repeat: int = 10, seed: int = 0) -> dict:
    """Measure every configuration; returns the JSON-ready result."""
    import faiss  # optional dependency (the dev extra): only the benchmark needs it

    faiss.omp_set_num_threads(1)
    data = synthetic.generate(heads=1, tokens=tokens, seed=seed)
    x = np.ascontiguousarray(data["k"][0], dtype=np.float32)
    q = np.ascontiguousarray(data["q"][0][None, :], dtype=np.float32)
    dim = x.shape[1]
    configs = ((32, 8), (64, 4))
    warm = fastpq.warm_up(tuple(sorted({dim // m for m, _ in configs})))
    results = []
    for m, nbits in configs:
        p = faiss.ProductQuantizer(dim, m, nbits)
        p.cp.niter = 10
        p.cp.max_points_per_centroid = 64  # keep training short: the centroids are a given here
        p.train(x[: 64 * (1 << nbits)])
        cb = faiss.vector_to_array(p.centroids).reshape(m, 1 << nbits, -1)
        xe = x[:encode_n]

        # Encode: the compiled kernel and FAISS alternately; the NumPy form twice (slow, context).
        t_ours, t_faiss = best_of_each(
            [lambda xe=xe, cb=cb: fastpq.encode(xe, cb), lambda xe=xe, p=p: p.compute_codes(xe)],
            repeat,
        )
        t_np = best_of(lambda xe=xe, cb=cb: _numpy_encode(xe, cb), min(2, repeat))  # context
        ours = fastpq.encode(xe, cb)
        same = bool(np.array_equal(ours, _faiss_codes(p, p.compute_codes(xe), m, nbits)))
        same_np = bool(np.array_equal(ours, _numpy_encode(xe, cb)))

        # Codes of every token, stored (M, T) as the bank stores them.
        raw = p.compute_codes(x)
        codes_mt = np.ascontiguousarray(_faiss_codes(p, raw, m, nbits).T.astype(np.uint8))
        if nbits == 4:
            packed = pack_pairs(codes_mt)

            def scan(q=q, cb=cb, c=packed) -> int:
                return int(np.argmax(fastpq.lut_scan_packed(_table(q[0], cb), c)))

            def scan_np(q=q, cb=cb, c=packed) -> int:
                return int(np.argmax(lut_scan(pair_lut(_table(q[0], cb)), c)))

            scores = fastpq.lut_scan_packed(_table(q[0], cb), packed)
            scores_np = lut_scan(pair_lut(_table(q[0], cb)), packed)
        else:

            def scan(q=q, cb=cb, c=codes_mt) -> int:
                return int(np.argmax(fastpq.lut_scan(_table(q[0], cb), c)))

            def scan_np(q=q, cb=cb, c=codes_mt) -> int:
                return int(np.argmax(lut_scan(_table(q[0], cb), c)))

            scores = fastpq.lut_scan(_table(q[0], cb), codes_mt)
            scores_np = lut_scan(_table(q[0], cb), codes_mt)
        index = faiss.IndexPQ(dim, m, nbits, faiss.METRIC_INNER_PRODUCT)
        index.pq = p
        index.is_trained = True
        index.add(x)
        contenders = [scan, lambda index=index: index.search(q, 1)]
        if nbits == 4:
            fs = faiss.IndexPQFastScan(dim, m, nbits, faiss.METRIC_INNER_PRODUCT)
            faiss.copy_array_to_vector(faiss.vector_to_array(p.centroids), fs.pq.centroids)
            fs.is_trained = True
            fs.add(x)
            contenders.append(lambda fs=fs: fs.search(q, 1))
        times = best_of_each(contenders, repeat)
        t_scan, t_ipq = times[:2]
        t_scan_np = best_of(scan_np, min(2, repeat))  # context only, not interleaved
        _, best_ipq = index.search(q, 1)
        entry = {
            "M": m, "nbits": nbits, "tokens": tokens, "encode_vectors": encode_n,
            "encode_codes_equal_faiss": same,
            "encode_codes_equal_numpy": same_np,
            "encode_vectors_per_s": {
                "golden": encode_n / t_ours, "faiss_compute_codes": encode_n / t_faiss,
                "numpy": encode_n / t_np,
            },
            "encode_ratio": t_faiss / t_ours,
            "scan_scores_equal_numpy": bool(np.array_equal(scores, scores_np)),
            # FAISS sums its float LUT in another order: the best token may differ on a near-tie.
            "scan_best_token_equal_faiss": int(np.argmax(scores)) == int(best_ipq[0, 0]),
            "scan_tokens_per_s": {
                "golden": tokens / t_scan, "faiss_indexpq": tokens / t_ipq,
                "numpy": tokens / t_scan_np,
            },
            "scan_ratio_vs_indexpq": t_ipq / t_scan,
        }
        if nbits == 4:
            entry["scan_tokens_per_s"]["faiss_fastscan"] = tokens / times[2]
            entry["scan_ratio_vs_fastscan"] = times[2] / t_scan
        entry["targets_met"] = {
            "encode_ratio": entry["encode_ratio"] >= 0.5,
            "scan_ratio_vs_indexpq": entry["scan_ratio_vs_indexpq"] >= 1.0,
        }
        results.append(entry)
    return {
        "benchmark": "golden PQ vs FAISS (one thread, best of N, timed alternately)",
        "faiss_version": faiss.__version__,
        "numpy_version": np.__version__,
        "numba_version": numba.__version__,
        "repeat": repeat,
        "jit_warmup": warm,
        "targets": {"scan_ratio_vs_indexpq": ">= 1", "encode_ratio": ">= 0.5"},
        "configs": results,
    }


def _report(res: dict) -> str:
    lines = [f"{res['benchmark']}; FAISS {res['faiss_version']}",
             f"{'M':>3} {'bits':>4} {'encode vec/s':>13} {'vs FAISS':>9} {'scan tok/s':>12} "
             f"{'vs IndexPQ':>11} {'vs FastScan':>12}"]
    for c in res["configs"]:
        fast = c.get("scan_ratio_vs_fastscan")
        lines.append(f"{c['M']:>3} {c['nbits']:>4} {c['encode_vectors_per_s']['golden']:>13.3g} "
                     f"{c['encode_ratio']:>8.2f}x {c['scan_tokens_per_s']['golden']:>12.3g} "
                     f"{c['scan_ratio_vs_indexpq']:>10.2f}x "
                     f"{'-' if fast is None else f'{fast:.2f}x':>12}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``aqpim bench golden``: a table, or one JSON document with ``--json``."""
    ap = argparse.ArgumentParser(prog="aqpim bench golden", description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=65536, help="tokens in the LUT scan")
    ap.add_argument("--encode-n", type=int, default=16384, help="vectors encoded")
    ap.add_argument("--repeat", type=int, default=10, help="timings per measurement (best kept)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true",
                    help="print the results as one JSON document on stdout, nothing else")
    ap.add_argument("--out", type=Path, help="also write DIR/bench_golden.json")
    args = ap.parse_args(argv)
    for name in ("tokens", "encode_n", "repeat"):
        if getattr(args, name) < 1:
            print(f"aqpim bench golden: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    res = run(args.tokens, args.encode_n, args.repeat, args.seed)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_golden.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2) if args.json else _report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
