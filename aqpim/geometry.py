"""The bank geometry: every size derived from a configuration, computed once.

Tokens per code column, code columns per head, beats of each command's data, LUT entries per
beat and LUT rows, score-scratch rows: the RTL units (hw/), the golden model and device, the
driver and the performance model all read them from :class:`Geometry`, so no two places can
disagree. Pure Python, part of the contract with :mod:`aqpim.numerics` and :mod:`aqpim.isa`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aqpim.isa import HEADER_FIELDS, MAX_HEADS, PARTIAL_WORD_BITS, WORD_BITS
from aqpim.numerics import Numerics

__all__ = ["COLUMN_BITS", "Geometry", "pow2_at_least"]

COLUMN_BITS = WORD_BITS  # one HBM3 column access (32 B): a code column, a stream beat


def pow2_at_least(w: int) -> int:
    """Smallest power of two >= w: the storage width of a w-bit element in a beat."""
    p = 1
    while p < w:
        p <<= 1
    return p


@dataclass(frozen=True)
class Geometry:
    """Sizes of a bank's memories and of every command's data, for one configuration.

    Parameters
    ----------
    num:
        The PQ-attention numerics (D, M, K, W, L, token capacity per head).
    heads:
        Head slots in the bank (1..8). Each slot has its own code storage (``token_capacity``
        tokens of key and value codes) and K/V codebooks; the LUT, score scratch and partial
        registers are shared and tagged with the head they belong to.
    """

    num: Numerics
    heads: int = 1
    # derived, filled in __post_init__
    elem_width: int = field(init=False)  # storage width of a W-bit element (power of two)
    lut_width: int = field(init=False)  # storage width of an L-bit LUT entry
    tokens_per_column: int = field(init=False)
    columns_per_head: int = field(init=False)  # code columns per head and per K or V
    cb_beats: int = field(init=False)  # one subspace of one codebook
    vec_beats: int = field(init=False)  # one D-element K or V vector
    token_beats: int = field(init=False)  # K then V of one token (WRITE_KV)
    lut_beats: int = field(init=False)
    partial_beats: int = field(init=False)
    status_beats: int = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.num, Numerics):
            raise TypeError(f"num must be a Numerics, got {type(self.num).__name__}")
        if isinstance(self.heads, bool) or not isinstance(self.heads, int):
            raise TypeError(f"heads must be an int, got {self.heads!r}")
        if not 1 <= self.heads <= MAX_HEADS:
            raise ValueError(f"heads must be in [1, {MAX_HEADS}], got {self.heads}")
        n = self.num
        bits = n.subspaces * n.code_bits
        if bits > WORD_BITS or WORD_BITS % bits:
            raise ValueError(
                f"M*b = {n.subspaces}*{n.code_bits} = {bits} bits must divide a {WORD_BITS}-bit "
                "column"
            )
        if n.subspaces > 1 << HEADER_FIELDS["subspace"][1]:
            raise ValueError(f"subspaces {n.subspaces} exceeds the 8-bit subspace field")
        if n.token_capacity > 1 << HEADER_FIELDS["addr"][1]:
            raise ValueError(f"token_capacity {n.token_capacity} exceeds the 24-bit addr field")
        if n.out_bits > PARTIAL_WORD_BITS or n.sum_bits >= PARTIAL_WORD_BITS:
            raise ValueError(
                f"partial words are {PARTIAL_WORD_BITS} bits; out_bits {n.out_bits} too wide "
                "(lower token_capacity or exp_bits)"
            )
        s = object.__setattr__
        s(self, "elem_width", pow2_at_least(n.elem_bits))
        s(self, "lut_width", pow2_at_least(n.lut_bits))
        tpc = WORD_BITS // bits
        s(self, "tokens_per_column", tpc)
        s(self, "columns_per_head", -(-n.token_capacity // tpc))
        s(self, "cb_beats", -(-n.centroids * n.sub_dim * self.elem_width // WORD_BITS))
        s(self, "vec_beats", -(-n.head_dim * self.elem_width // WORD_BITS))
        s(self, "token_beats", 2 * self.vec_beats)
        s(self, "lut_beats", -(-n.subspaces * n.centroids * self.lut_width // WORD_BITS))
        s(self, "partial_beats", -(-(n.head_dim + 2) * PARTIAL_WORD_BITS // WORD_BITS))
        s(self, "status_beats", 3 * self.heads)
        limit = (1 << HEADER_FIELDS["length"][1]) - 1
        for name in ("cb_beats", "lut_beats", "token_beats"):
            if getattr(self, name) > limit:
                raise ValueError(f"{name} = {getattr(self, name)} exceeds the length field")

    @property
    def max_tokens_per_write(self) -> int:
        """Most tokens one WRITE_KV can carry (the length field limits it)."""
        limit = (1 << HEADER_FIELDS["length"][1]) - 1
        return min(limit // self.token_beats, (1 << HEADER_FIELDS["count"][1]) - 1)

    @property
    def lut_entries_per_beat(self) -> int:
        """E: LUT entries in one 256-bit beat (each in a ``lut_width``-bit slot)."""
        return WORD_BITS // self.lut_width

    @property
    def lut_row_entries(self) -> int:
        """R = min(E, K): entries of one LUT-memory row, so one beat writes whole rows."""
        return min(self.lut_entries_per_beat, self.num.centroids)

    @property
    def scratch_rows(self) -> int:
        """Rows of the score scratch (one per key column of a head's capacity)."""
        return self.columns_per_head

    def used_columns(self, tokens: int) -> int:
        """Code columns holding ``tokens`` tokens of one head (per K or V)."""
        return -(-tokens // self.tokens_per_column)
