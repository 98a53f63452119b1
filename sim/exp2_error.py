"""Error of the bank's fixed-point exp2 against float exp2, over every input it can see.

The bank computes ``w(delta) = EXP2[delta mod 2^F] >> (delta >> F)`` (0 once the shift
exceeds P) for ``delta = max - score`` in ``[0, score_max - score_min]``; the weight of the
maximum is ``2^P``. This module compares ``w / 2^P`` with ``2^(-delta / 2^F)`` for *every*
``delta`` of a configuration and reports the largest absolute and relative errors, the
relative error restricted to weights that matter (exact weight >= 2^-k), and the analytic
bound. With ``E = 2^P * 2^(-f/2^F)`` the ROM holds ``R = E + r``, ``|r| <= 1/2`` (round to
nearest), and the bank returns ``floor(R / 2^n)`` against the exact ``E / 2^n``; so the error
lies in ``(-1 + 2^-(n+1), 2^-(n+1)]`` LSB: ``|error| < 1 LSB = 2^-P`` for every delta,
``<= 1/2 LSB`` for ``n = 0`` (no shift), and once ``n > P`` the weight is 0 against an exact
value below ``2^-(P+1)``. The fixed-point weight under-estimates by less than one LSB.

Run ``python -m aqpim.sim.exp2_error`` for the table in docs/attention.md.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from aqpim.numerics import Numerics

__all__ = ["measure", "main"]


def measure(num: Numerics, *, significant: tuple[int, ...] = (4, 8, 12)) -> dict[str, float]:
    """Errors of the fixed-point exp2 of ``num`` over every delta in its input range.

    Parameters
    ----------
    num:
        The configuration (F = ``lut_frac_bits``, P = ``exp_bits``, delta range from the score
        width).
    significant:
        For each k, also report the largest relative error over deltas whose exact weight is
        at least ``2^-k`` (the tokens that carry the softmax).

    Returns
    -------
    dict with ``deltas`` (how many were evaluated), ``max_abs`` (in units of the weight of the
    max, i.e. divided by 2^P), ``max_abs_lsb`` (in units of 2^-P), ``argmax_abs``,
    ``bound_lsb`` (1: the analytic bound, strict), ``max_rel_n0`` (relative error for delta < 2^F),
    ``max_rel_ge_2^-k`` for each k, and ``zero_from`` (the first delta whose weight is 0).
    """
    if not isinstance(num, Numerics):
        raise TypeError(f"num must be a Numerics, got {num!r}")
    frac, p = num.lut_frac_bits, num.exp_bits
    delta = np.arange(num.score_max - num.score_min + 1, dtype=np.int64)
    rom = np.asarray(num.exp_rom, dtype=np.int64)
    n = delta >> frac
    f = delta & ((1 << frac) - 1)
    w = np.where(n > p, 0, rom[f] >> np.minimum(n, p + 1))
    one = float(1 << p)
    exact = np.exp2(-delta / float(1 << frac))
    err = w / one - exact
    out: dict[str, float] = {
        "F": frac,
        "P": p,
        "deltas": int(delta.size),
        "max_abs": float(np.max(np.abs(err))),
        "max_abs_lsb": float(np.max(np.abs(err)) * one),
        "argmax_abs": int(np.argmax(np.abs(err))),
        "bound_lsb": 1.0,
        "max_rel_n0": float(np.max(np.abs(err[n == 0]) / exact[n == 0])),
        "zero_from": int(np.argmax(w == 0)) if np.any(w == 0) else -1,
    }
    for k in significant:
        sel = exact >= 2.0 ** -k
        out[f"max_rel_ge_2^-{k}"] = float(np.max(np.abs(err[sel]) / exact[sel]))
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the error table for a few (F, P) pairs (``--json`` for machine-readable)."""
    ap = argparse.ArgumentParser(prog="python -m aqpim.sim.exp2_error", description=__doc__)
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    configs = [Numerics(), Numerics(lut_frac_bits=6, exp_bits=15),
               Numerics(lut_frac_bits=8, exp_bits=11), Numerics(lut_frac_bits=10, exp_bits=20)]
    rows = [measure(c) for c in configs]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("| F | P | deltas | max abs err (LSB of 2^-P) | max rel err, n=0 | "
          "max rel err, w>=2^-4 | w>=2^-8 | w>=2^-12 | first delta with w=0 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['F']} | {r['P']} | {r['deltas']} | {r['max_abs_lsb']:.3f} | "
              f"{r['max_rel_n0']:.2e} | {r['max_rel_ge_2^-4']:.2e} | "
              f"{r['max_rel_ge_2^-8']:.2e} | {r['max_rel_ge_2^-12']:.2e} | {r['zero_from']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
