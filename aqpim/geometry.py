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

__all__ = ["COLUMN_BITS", "CodeSide", "Geometry", "MAX_QUERIES", "pow2_at_least"]

COLUMN_BITS = WORD_BITS  # one HBM3 column access (32 B): a code column, a stream beat
MAX_QUERIES = 8  # query heads per SCORE pass (GQA): Llama-2-70B's group


def pow2_at_least(w: int) -> int:
    """Smallest power of two >= w: the storage width of a w-bit element in a beat."""
    p = 1
    while p < w:
        p <<= 1
    return p


@dataclass(frozen=True)
class CodeSide:
    """The code layout of one side (keys or values) of a head.

    A head's codes of one side are one little-endian bit stream: code m of token t at bit
    ``(t*M + m) * b``, cut into 256-bit columns. Either several tokens share a column
    (``tokens_per_column = 256 / (M*b)``, ``columns_per_token = 1``) or one token spans
    several (``columns_per_token = M*b / 256``, ``tokens_per_column = 1``); so one of the two
    must divide the other. A *group* is ``columns_per_token`` columns holding
    ``tokens_per_column`` tokens: what the attention path takes as one unit.
    """

    subspaces: int
    centroids: int
    code_bits: int
    sub_dim: int
    token_bits: int  # M * b
    tokens_per_column: int
    columns_per_token: int
    columns_per_head: int  # code columns of token_capacity tokens
    cb_beats: int  # one subspace of this side's codebook

    @property
    def group_bits(self) -> int:
        """Bits of a group: ``tokens_per_column * M * b = columns_per_token * 256``."""
        return self.tokens_per_column * self.token_bits

    def used_columns(self, tokens: int) -> int:
        """Code columns holding ``tokens`` tokens of this side."""
        return -(-tokens // self.tokens_per_column) * self.columns_per_token

    def used_groups(self, tokens: int) -> int:
        """Groups (of ``columns_per_token`` columns) holding ``tokens`` tokens."""
        return -(-tokens // self.tokens_per_column)


def _code_side(num: Numerics, elem_width: int, side: str) -> CodeSide:
    """The layout of one side; ValueError naming the side and its M*b when no layout fits."""
    bits = num.subspaces * num.code_bits
    if bits <= WORD_BITS and WORD_BITS % bits == 0:
        tpc, cpt = WORD_BITS // bits, 1
    elif bits > WORD_BITS and bits % WORD_BITS == 0:
        tpc, cpt = 1, bits // WORD_BITS
    else:
        raise ValueError(
            f"{side}: M*b = {num.subspaces}*{num.code_bits} = {bits} bits; a {WORD_BITS}-bit "
            "column must hold a whole number of tokens or a token a whole number of columns"
        )
    return CodeSide(
        subspaces=num.subspaces, centroids=num.centroids, code_bits=num.code_bits,
        sub_dim=num.sub_dim, token_bits=bits, tokens_per_column=tpc, columns_per_token=cpt,
        columns_per_head=-(-num.token_capacity // tpc) * cpt,
        cb_beats=-(-num.centroids * num.sub_dim * elem_width // WORD_BITS),
    )


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
    queries:
        G, query heads one SCORE / AGGREGATE pass serves (GQA, 1..8): G LUTs, G scores per
        token in the scratch, G histograms and G partials (docs/bank.md, "GQA").
    """

    num: Numerics
    heads: int = 1
    queries: int = 1
    # derived, filled in __post_init__
    elem_width: int = field(init=False)  # storage width of a W-bit element (power of two)
    lut_width: int = field(init=False)  # storage width of an L-bit LUT entry
    key: CodeSide = field(init=False)  # the key codes' layout (M_k, K_k)
    value: CodeSide = field(init=False)  # the value codes' layout (M_v, K_v)
    # key-side shorthands (equal to the value side's in a symmetric configuration)
    tokens_per_column: int = field(init=False)
    columns_per_head: int = field(init=False)  # key code columns per head
    cb_beats: int = field(init=False)  # one subspace of the key codebook
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
        if isinstance(self.queries, bool) or not isinstance(self.queries, int):
            raise TypeError(f"queries must be an int, got {self.queries!r}")
        if not 1 <= self.queries <= MAX_QUERIES:
            raise ValueError(f"queries must be in [1, {MAX_QUERIES}], got {self.queries}")
        n = self.num
        for name, m in (("subspaces", n.subspaces), ("value_subspaces", n.values.subspaces)):
            if m > 1 << HEADER_FIELDS["subspace"][1]:
                raise ValueError(f"{name} {m} exceeds the 8-bit subspace field")
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
        s(self, "key", _code_side(n.keys, self.elem_width, "keys"))
        s(self, "value", _code_side(n.values, self.elem_width, "values"))
        s(self, "tokens_per_column", self.key.tokens_per_column)
        s(self, "columns_per_head", self.key.columns_per_head)
        s(self, "cb_beats", self.key.cb_beats)
        s(self, "vec_beats", -(-n.head_dim * self.elem_width // WORD_BITS))
        s(self, "token_beats", 2 * self.vec_beats)
        s(self, "lut_beats", -(-n.subspaces * n.centroids * self.lut_width // WORD_BITS))
        s(self, "partial_beats", -(-(n.head_dim + 2) * PARTIAL_WORD_BITS // WORD_BITS))
        s(self, "status_beats", 3 * self.heads)
        limit = (1 << HEADER_FIELDS["length"][1]) - 1
        sizes = {"key cb_beats": self.key.cb_beats, "value cb_beats": self.value.cb_beats,
                 "lut_beats": self.lut_beats, "token_beats": self.token_beats}
        for name, beats in sizes.items():
            if beats > limit:
                raise ValueError(f"{name} = {beats} exceeds the {limit}-beat length field")
        for side in (self.key, self.value):
            if side.columns_per_head > 1 << HEADER_FIELDS["addr"][1]:
                raise ValueError(f"{side.columns_per_head} code columns exceed the addr field")

    def side(self, kv: int) -> CodeSide:
        """:attr:`key` for ``kv = 0``, :attr:`value` for ``kv = 1`` (the ISA's kv field)."""
        if kv not in (0, 1):
            raise ValueError(f"kv must be 0 (keys) or 1 (values), got {kv!r}")
        return self.value if kv else self.key

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
        """Rows of the score scratch (one per key group of a head's capacity)."""
        return self.key.used_groups(self.num.token_capacity)

    def used_columns(self, tokens: int, kv: int = 0) -> int:
        """Code columns holding ``tokens`` tokens of one head (keys, or values for kv = 1)."""
        return self.side(kv).used_columns(tokens)
