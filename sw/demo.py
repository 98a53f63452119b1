"""``aqpim demo``: one multi-head PQ-attention decode step through the integer golden model.

Synthetic LLM-like K/V/Q (:mod:`aqpim.sw.synthetic`) for H heads x T tokens; per head,
:func:`aqpim.sw.reference.int_attention` (codebooks trained on the compressed tokens, tokens
spread over banks, per-bank integer partials, host merge with full-precision sinks and recent
window). Each head's output is compared with exact attention and with the float PQ reference
that uses the same float codebooks, so the two error sources are seen apart: PQ itself
(float PQ vs exact) and the integer contract (integer vs float PQ).

:func:`run_golden` is the reusable core (a later step adds the RTL next to it).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
from aqpim.sw import reference, synthetic

from aqpim.numerics import Numerics

__all__ = ["DemoConfig", "compare", "run_golden", "main"]


@dataclass(frozen=True)
class DemoConfig:
    """Parameters of the demo's decode step (defaults: 2 bits per element)."""

    heads: int = 4
    tokens: int = 2048
    head_dim: int = 128
    subspaces: int = 64
    centroids: int = 16
    banks: int = 4
    sinks: int = 4
    recent: int = 32
    layout: str = "round-robin"
    iters: int = 25
    seed: int = 0

    def numerics(self) -> Numerics:
        """The contract's parameters for this configuration (validates M, K, D)."""
        return Numerics(head_dim=self.head_dim, subspaces=self.subspaces, centroids=self.centroids)


def compare(out: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Relative L2 error ``|out - ref| / |ref|`` and cosine similarity of two vectors."""
    diff = float(np.linalg.norm(out - ref))
    nref = float(np.linalg.norm(ref))
    cos = float(out @ ref / (np.linalg.norm(out) * nref)) if nref and np.any(out) else 0.0
    return {"rel_err": diff / nref if nref else diff, "cosine": cos}


def _storage(cfg: DemoConfig, num: Numerics) -> dict[str, float]:
    """Bits per element and compression against an FP16 KV cache, codes only and all in."""
    full, comp = reference.split_tokens(cfg.tokens, cfg.sinks, cfg.recent)
    fp16 = 2 * cfg.tokens * cfg.head_dim * 16  # K and V
    codes = 2 * comp.size * num.subspaces * num.code_bits
    books = 2 * num.subspaces * num.centroids * num.sub_dim * num.elem_bits
    kept = 2 * full.size * cfg.head_dim * 16
    return {
        "bits_per_element": num.bits_per_element,
        "compression_codes": 16.0 / num.bits_per_element,
        "compression_total": fp16 / (codes + books + kept),
    }


def run_golden(config: DemoConfig) -> dict[str, object]:
    """Run the decode step on the integer golden model; errors per head and their means.

    Returns a JSON-ready dict: ``config``, ``storage`` (bits/element, compression),
    ``heads`` (per head: ``int_vs_exact``, ``int_vs_pq``, ``pq_vs_exact``, each rel_err and
    cosine), ``mean`` (the same, averaged over heads) and ``seconds``; plus ``outputs``
    (H, D) float64 arrays under the keys ``int``, ``pq``, ``exact`` (not JSON; dropped by
    :func:`main`).
    """
    if not isinstance(config, DemoConfig):
        raise TypeError(f"config must be a DemoConfig, got {type(config).__name__}")
    num = config.numerics()
    start = time.perf_counter()
    data = synthetic.generate(
        heads=config.heads, tokens=config.tokens, head_dim=config.head_dim, seed=config.seed
    )
    heads = []
    outs: dict[str, list[np.ndarray]] = {"int": [], "pq": [], "exact": []}
    for h in range(config.heads):
        q, k, v = data["q"][h], data["k"][h], data["v"][h]
        res = reference.int_attention(
            q, k, v, subspaces=config.subspaces, centroids=config.centroids, banks=config.banks,
            sinks=config.sinks, recent=config.recent, layout=config.layout, iters=config.iters,
            seed=config.seed + 2 * h,
        )
        pq_out = reference.pq_attention(
            q, k, v, res.key_codebooks, res.value_codebooks, sinks=config.sinks,
            recent=config.recent,
        )
        exact = reference.exact_attention(q, k, v)
        heads.append({
            "int_vs_exact": compare(res.out, exact),
            "int_vs_pq": compare(res.out, pq_out),
            "pq_vs_exact": compare(pq_out, exact),
        })
        for key, val in (("int", res.out), ("pq", pq_out), ("exact", exact)):
            outs[key].append(val)
    mean = {
        pair: {m: float(np.mean([hd[pair][m] for hd in heads])) for m in ("rel_err", "cosine")}
        for pair in heads[0]
    }
    return {
        "config": asdict(config),
        "storage": _storage(config, num),
        "heads": heads,
        "mean": mean,
        "seconds": time.perf_counter() - start,
        "outputs": {key: np.stack(val) for key, val in outs.items()},
    }


def _parser() -> argparse.ArgumentParser:
    d = DemoConfig()
    p = argparse.ArgumentParser(prog="aqpim demo", description=__doc__.splitlines()[0])
    p.add_argument("--heads", type=int, default=d.heads)
    p.add_argument("--tokens", type=int, default=d.tokens)
    p.add_argument("--head-dim", type=int, default=d.head_dim)
    p.add_argument("--subspaces", "-M", type=int, default=d.subspaces)
    p.add_argument("--centroids", "-K", type=int, default=d.centroids)
    p.add_argument("--banks", type=int, default=d.banks)
    p.add_argument("--sinks", type=int, default=d.sinks)
    p.add_argument("--recent", type=int, default=d.recent)
    p.add_argument("--layout", choices=reference.LAYOUTS, default=d.layout)
    p.add_argument("--iters", type=int, default=d.iters, help="k-means iterations")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def _report(res: dict[str, object]) -> str:
    cfg, st = res["config"], res["storage"]
    lines = [
        "AQPIM demo: one decode step of PQ attention through the integer golden model",
        "config: " + ", ".join(f"{k}={v}" for k, v in cfg.items()),
        f"storage: {st['bits_per_element']:g} bits/element; compression vs FP16 "
        f"{st['compression_codes']:.1f}x (codes), {st['compression_total']:.2f}x (with "
        "codebooks, sinks and recent window)",
        "",
        f"{'head':>4}  {'int vs exact':>21}  {'int vs float PQ':>21}  {'float PQ vs exact':>21}",
        f"{'':>4}  " + "  ".join(f"{'rel err':>10} {'cosine':>10}" for _ in range(3)),
    ]
    pairs = ("int_vs_exact", "int_vs_pq", "pq_vs_exact")
    rows = [(str(i), hd) for i, hd in enumerate(res["heads"])] + [("mean", res["mean"])]
    for name, hd in rows:
        lines.append(
            f"{name:>4}  "
            + "  ".join(f"{hd[p]['rel_err']:>10.4f} {hd[p]['cosine']:>10.6f}" for p in pairs)
        )
    lines.append(f"\n{res['seconds']:.2f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``aqpim demo``; returns the exit status."""
    args = _parser().parse_args(argv)
    opts = {k: v for k, v in vars(args).items() if k != "json"}
    try:
        cfg = DemoConfig(**opts)
        if cfg.heads < 1 or cfg.tokens < 1:
            raise ValueError(f"heads and tokens must be >= 1, got {cfg.heads}, {cfg.tokens}")
        res = run_golden(cfg)
    except (TypeError, ValueError) as exc:
        print(f"aqpim demo: {exc}", file=sys.stderr)
        return 2
    res.pop("outputs")
    if args.json:
        json.dump(res, sys.stdout, indent=2)
        print()
    else:
        print(_report(res))
    values = [v for hd in res["heads"] for p in hd.values() for v in p.values()]
    return 0 if all(math.isfinite(v) for v in values) else 1


if __name__ == "__main__":
    sys.exit(main())
