"""Stimulus and payload packing for the attention units' testbenches (Amaranth sim and cocotb).

Pure NumPy plus the units' Amaranth layouts (for the bit offsets of payload fields); no
simulator imports, so the quick ``amaranth.sim`` tests and the cocotb testbench build the same
beats from the same cases and check them against the same golden model
(:mod:`aqpim.sw.golden.intmodel`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.lib import data
from aqpim.sim.streams import pack
from aqpim.sw.golden import intmodel

from aqpim.geometry import Geometry
from aqpim.numerics import Numerics

__all__ = [
    "KINDS",
    "AttnCase",
    "make_case",
    "lut_beats",
    "codebook_beats",
    "column_beats",
]

#: Stimulus kinds, each a stress the issue names.
KINDS = (
    "random",       # narrow LUT: many tokens carry weight (realistic softmax spread)
    "wide",         # full-range LUT: most weights underflow to 0 (exp range end)
    "one_code",     # every token on one key and one value code: back-to-back bin hazard
    "alternating",  # value codes a, b, a, b / a, a, b, b: hazards at distance 1 and 2
    "lut_max",      # every LUT entry maximal: all scores score_max, all weights 2^P
    "lut_min",      # every LUT entry minimal: all scores score_min (the max's reset value)
    "extremes",     # LUT entries and centroids at the format ends: full delta range
    "saturated",    # every weight 2^P on one value code, centroids at the format ends: the
                    # histogram bin and the value product at their width bounds
)


@dataclass(frozen=True)
class AttnCase:
    """One bank's inputs for one pass pair, and what the golden model says it returns."""

    kind: str
    lut: np.ndarray  # (M, K) signed lut_bits
    value_codebook: np.ndarray  # (M, K, d) signed elem_bits
    key_codes: np.ndarray  # (T, M)
    value_codes: np.ndarray  # (T, M)
    expected: intmodel.BankPartial

    @property
    def tokens(self) -> int:
        return int(self.key_codes.shape[0])


def make_case(kind: str, tokens: int, num: Numerics, rng: np.random.Generator) -> AttnCase:
    """Build a case of the given kind (see :data:`KINDS`) with ``tokens`` tokens.

    Raises
    ------
    ValueError
        Unknown kind, or ``tokens`` outside ``[0, token_capacity]``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown stimulus kind {kind!r}; expected one of {KINDS}")
    if isinstance(tokens, bool) or not isinstance(tokens, int):
        raise TypeError(f"tokens must be an int, got {tokens!r}")
    if not 0 <= tokens <= num.token_capacity:
        raise ValueError(f"tokens {tokens} outside [0, {num.token_capacity}]")
    msub, k, d = num.subspaces, num.centroids, num.sub_dim
    one = 1 << num.lut_frac_bits
    # Narrow LUT: score spread of about 2 log2 units, so weights span many binades.
    narrow = max(1, int(2 * one * np.sqrt(3.0 / msub)))
    narrow = min(narrow, num.lut_max)
    lut = rng.integers(-narrow, narrow + 1, (msub, k))
    cv = rng.integers(num.elem_min, num.elem_max + 1, (msub, k, d))
    kc = rng.integers(0, k, (tokens, msub))
    vc = rng.integers(0, k, (tokens, msub))
    if kind == "wide":
        lut = rng.integers(num.lut_min, num.lut_max + 1, (msub, k))
    elif kind == "one_code":
        kc[:] = rng.integers(0, k, msub)[None, :]
        vc[:] = rng.integers(0, k, msub)[None, :]
    elif kind == "alternating":
        a = rng.integers(0, k, msub)
        b = (a + 1 + rng.integers(0, k - 1, msub)) % k
        t = np.arange(tokens)
        first_half = t < tokens // 2
        pick_b = np.where(first_half, t % 2 == 1, (t // 2) % 2 == 1)
        vc[:] = np.where(pick_b[:, None], b[None, :], a[None, :])
        kc[:] = np.where((t % 2 == 1)[:, None], b[None, :], a[None, :])
    elif kind == "lut_max":
        lut[:] = num.lut_max
    elif kind == "lut_min":
        lut[:] = num.lut_min
    elif kind == "extremes":
        lut = np.where(rng.random((msub, k)) < 0.5, num.lut_min, num.lut_max)
        cv = np.where(rng.random((msub, k, d)) < 0.5, num.elem_min, num.elem_max)
        # one token at score_max and one at score_min: delta spans its whole range
        if tokens >= 2:
            kc[0] = np.argmax(lut, axis=1)
            kc[1] = np.argmin(lut, axis=1)
    elif kind == "saturated":
        lut[:] = num.lut_max
        vc[:] = rng.integers(0, k, msub)[None, :]
        cv = np.where(rng.random((msub, k, d)) < 0.5, num.elem_min, num.elem_max)
    lut = lut.astype(np.int64)
    cv = cv.astype(np.int64)
    expected = intmodel.bank_partial(lut, kc, vc, cv, num)
    return AttnCase(kind, lut, cv, kc.astype(np.int64), vc.astype(np.int64), expected)


def lut_beats(layout: data.StructLayout, lut: np.ndarray) -> list[int]:
    """``i_lut`` beats in the LOAD_LUT packing of docs/isa.md: flat entry ``m*K + j`` (that
    is ``LUT[m][j]``) in beat ``(m*K + j) // E``, slot ``(m*K + j) % E``; a partly filled last
    beat is padded with zeros. E is the length of the layout's ``values`` array.
    """
    ent = dict(layout)["values"].shape.length
    flat = [int(v) for v in np.asarray(lut).reshape(-1)]
    flat += [0] * (-len(flat) % ent)
    return [pack(layout, {"row": r, "values": flat[r * ent:(r + 1) * ent]})
            for r in range(len(flat) // ent)]


def codebook_beats(layout: data.StructLayout, codebook: np.ndarray) -> list[int]:
    """``i_vcb`` beats: one ``(subspace, index, vector)`` centroid per beat."""
    msub, k, _ = codebook.shape
    return [pack(layout, {"subspace": s, "index": j, "vector": [int(x) for x in codebook[s, j]]})
            for s in range(msub) for j in range(k)]


def column_beats(layout: data.StructLayout, codes: np.ndarray, num: Numerics) -> list[int]:
    """Code columns as the bank stores them (:func:`intmodel.pack_columns`) with ntok/last.

    Zero tokens give one beat with ``ntok = 0, last = 1``.
    """
    tpc = Geometry(num).tokens_per_column
    tokens = codes.shape[0]
    if tokens == 0:
        return [layout.const({"ntok": 0, "last": 1}).as_bits()]
    cols = intmodel.pack_columns(codes, num)
    out = []
    for c, word in enumerate(cols):
        ntok = min(tpc, tokens - c * tpc)
        out.append(pack(layout, {"codes": word, "ntok": ntok, "last": int(c == len(cols) - 1)}))
    return out
