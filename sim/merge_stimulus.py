"""Stimulus and beats for the channel merge unit (hw/merge.py), shared by both simulators.

Pure NumPy plus the unit's layouts; no simulator imports. A *group* is the ``banks`` bank
partials of one channel and head; :func:`make_group` draws one of a kind in :data:`KINDS`,
:func:`group_beats` turns it into the unit's ``i_head`` and ``i_out`` beats, and
:func:`expected_beats` into the ``o`` beats the golden model
(:func:`aqpim.sw.golden.intmodel.channel_merge`) says must come out.
"""

from __future__ import annotations

import numpy as np
from aqpim.sim.streams import pack, unpack
from aqpim.sw.golden import intmodel

from aqpim.numerics import MERGE_GUARD_BITS, Numerics

__all__ = ["KINDS", "make_group", "group_beats", "expected_beats", "decode_outputs"]

#: Kinds of groups, each a stress the merge must survive.
KINDS = (
    "random",     # maxima within a few log2 units, random sums and outputs
    "empty",      # about half the banks empty (sum 0, max score_min or score_max), bank 0 too
    "all_empty",  # every bank empty: (score_min, 0, 0)
    "extreme",    # maxima at score_max / score_min, sums at T_cap*2^P, outputs at the bounds
    "spread",     # maxima far apart: most scales underflow to 0, some exactly one binade off
    "one",        # a single non-empty bank (the channel partial is that bank's, rounded)
)


def _bank(num: Numerics, rng: np.random.Generator, mx: int, sum_: int,
          extreme: bool = False) -> intmodel.BankPartial:
    """A bank partial whose outputs respect ``|out| <= sum * 2^(W-1)`` (a weighted average).

    An empty bank (sum 0) keeps the given max: a bank reports score_min, but the merge must
    not rely on it (the golden model ignores an empty bank's max).
    """
    if sum_ == 0:
        return intmodel.BankPartial(int(mx), 0, np.zeros(num.head_dim, dtype=np.int64))
    lo, hi = sum_ * num.elem_min, sum_ * num.elem_max
    if extreme:
        out = np.where(rng.random(num.head_dim) < 0.5, lo, hi)
    else:
        out = rng.integers(lo, hi + 1, num.head_dim)
    return intmodel.BankPartial(int(mx), int(sum_), out.astype(np.int64))


def make_group(kind: str, banks: int, num: Numerics,
               rng: np.random.Generator) -> list[intmodel.BankPartial]:
    """``banks`` bank partials of the given kind (see :data:`KINDS`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown group kind {kind!r}; expected one of {KINDS}")
    one_f = 1 << num.lut_frac_bits
    cap = num.token_capacity * num.weight_one
    parts = []
    base = int(rng.integers(num.score_min + 8 * one_f, num.score_max - 8 * one_f))
    for b in range(banks):
        mx = base + int(rng.integers(-4 * one_f, 4 * one_f + 1))
        sum_ = int(rng.integers(num.weight_one, cap + 1))
        if kind == "empty" and (b == 0 or rng.random() < 0.5):
            # half of them report score_min, the others a max above every live bank's
            sum_ = 0
            mx = num.score_min if rng.random() < 0.5 else num.score_max
        elif kind == "all_empty":
            sum_, mx = 0, num.score_min
        elif kind == "extreme":
            mx = num.score_max if rng.random() < 0.5 else num.score_min
            sum_ = cap if rng.random() < 0.7 else num.weight_one
        elif kind == "spread":
            step = int(rng.integers(0, 3))
            # exactly P+1 binades below (scale 0), exactly one binade, or far away
            off = (0, one_f, (num.exp_bits + 1) * one_f)[step] + int(rng.integers(0, 2))
            mx = max(num.score_min, num.score_max - off - int(rng.integers(0, 3)) * 7 * one_f)
        elif kind == "one" and b != banks // 2:
            sum_ = 0
        parts.append(_bank(num, rng, mx, sum_, extreme=(kind == "extreme")))
    return parts


def group_beats(parts: list[intmodel.BankPartial], head_layout: object, out_layout: object,
                lanes: int) -> tuple[list[int], list[int]]:
    """(``i_head`` beats, ``i_out`` beats, slice-major) of one group."""
    heads = [pack(head_layout, {"max": p.max, "sum": p.sum}) for p in parts]
    d = len(parts[0].out)
    outs = [pack(out_layout, {"out": [int(v) for v in p.out[s * lanes:(s + 1) * lanes]]})
            for s in range(d // lanes) for p in parts]
    return heads, outs


def expected_beats(parts: list[intmodel.BankPartial], num: Numerics, lanes: int,
                   guard_bits: int = MERGE_GUARD_BITS) -> list[dict]:
    """The ``o`` beats (decoded) that the golden model's channel merge gives."""
    ch = intmodel.channel_merge(parts, num, guard_bits)
    slices = num.head_dim // lanes
    return [{"max": int(ch.max), "sum": int(ch.sum), "index": s, "last": int(s == slices - 1),
             "out": [int(v) for v in ch.out[s * lanes:(s + 1) * lanes]]}
            for s in range(slices)]


def decode_outputs(words: list[int], layout: object) -> list[dict]:
    """``o`` beats (raw words) decoded by the unit's output layout."""
    return [unpack(layout, w) for w in words]  # type: ignore[misc]
