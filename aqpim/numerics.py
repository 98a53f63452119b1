"""The numerics contract: fixed-point formats and widths shared by the RTL and the golden model.

docs/numerics.md explains every choice; this module is its executable form. It is pure Python
(no NumPy, no Amaranth) so that hw/, sw/ and the driver derive the same widths from the same
parameters. Every width is computed from the extreme values of its inputs, so nothing overflows
for any input in range; the only saturating step is the host's LUT quantization (and the host's
activation quantization), both outside the banks.

Summary (defaults in brackets)::

    activations, centroids   signed  W bits  [8]   per-(head, subspace) scale held by the host
    squared distance         unsigned dist_bits     = bits(d * (2^W - 1)^2)
    LUT entry                signed  L bits  [16]  log2-domain score, F fractional bits [8]
    score                    signed  score_bits     = L + ceil(log2 M)         (exact sum)
    softmax weight           unsigned P + 1  [16]  w = floor(EXP2[f] / 2^n), weight of max = 2^P
    local sum, histogram     unsigned sum_bits      = bits(T_cap * 2^P)
    partial output element   signed  out_bits       range +-(T_cap * 2^P * 2^(W-1))
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

__all__ = [
    "Numerics",
    "signed_width",
    "dist_bits",
    "distance_latency",
    "DIST_ROWS_PER_STAGE",
    "DIST_OUTPUT_VECTORS",
    "unsigned_width",
    "exp2_table",
    "exp2_weight",
    "merge_widths",
    "MERGE_GUARD_BITS",
]


def unsigned_width(max_value: int) -> int:
    """Bits needed to hold every integer in ``[0, max_value]`` (at least 1)."""
    if max_value < 0:
        raise ValueError(f"max_value must be >= 0, got {max_value}")
    return max(1, int(max_value).bit_length())


def signed_width(min_value: int, max_value: int) -> int:
    """Bits of a two's-complement integer that holds every value in ``[min_value, max_value]``."""
    if min_value > max_value:
        raise ValueError(f"empty range [{min_value}, {max_value}]")
    bits = 1
    while not (-(1 << (bits - 1)) <= min_value and max_value <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


def dist_bits(sub_dim: int, elem_bits: int) -> int:
    """Unsigned width of an exact squared L2 distance between two d-element W-bit sub-vectors.

    ``|x_i - c_i| <= 2^W - 1`` for W-bit signed x and c, so the distance is at most
    ``d * (2^W - 1)^2``.
    """
    span = (1 << elem_bits) - 1
    return unsigned_width(sub_dim * span * span)


# A pipelined distance lane (hw/distance.py) reduces the squares' d x W partial-product rows in
# carry-save groups of at most DIST_ROWS_PER_STAGE rows per registered stage, until at most
# DIST_OUTPUT_VECTORS vectors are left for its output's compress-and-add.
DIST_ROWS_PER_STAGE = 9
DIST_OUTPUT_VECTORS = 6


def distance_latency(sub_dim: int, elem_bits: int) -> int:
    """Registered stages of a pipelined distance lane: the absolute differences, then the
    carry-save tree's stages (2 at d <= 2, W = 8; 3 at d = 4, 8). The encoder's latency and the
    performance model's WRITE_KV both use it."""
    rows, stages = sub_dim * elem_bits, 1
    while True:
        stages += 1
        rows = 2 * -(-rows // DIST_ROWS_PER_STAGE)
        if rows <= DIST_OUTPUT_VECTORS:
            return stages


def exp2_table(frac_bits: int, exp_bits: int) -> tuple[int, ...]:
    """ROM contents for the fractional part of ``2^-x``.

    Entry ``f`` is ``round_half_up(2^P * 2^(-f / 2^F))`` for ``f`` in ``[0, 2^F)``; entry 0 is
    exactly ``2^P``. Python floats are IEEE double; every entry is far from a rounding boundary
    for the supported F and P (checked in tests), so the table is the same on every machine.
    """
    if not 1 <= frac_bits <= 12:
        raise ValueError(f"frac_bits must be in [1, 12], got {frac_bits}")
    if not 4 <= exp_bits <= 30:
        raise ValueError(f"exp_bits must be in [4, 30], got {exp_bits}")
    n = 1 << frac_bits
    one = 1 << exp_bits
    return tuple(int(math.floor(one * 2.0 ** (-f / n) + 0.5)) for f in range(n))


def exp2_weight(delta: int, frac_bits: int, exp_bits: int, table: tuple[int, ...]) -> int:
    """Scalar form of the bank's exp: ``floor(EXP2[delta mod 2^F] / 2^(delta >> F))``.

    ``delta = max - score >= 0`` in log2 units with F fractional bits. The vectorised form used
    by the golden model is :func:`aqpim.sw.golden.intmodel.softmax_weights`; both implement this.
    """
    if delta < 0:
        raise ValueError(f"delta must be >= 0, got {delta}")
    n = delta >> frac_bits
    if n > exp_bits:
        return 0
    return table[delta & ((1 << frac_bits) - 1)] >> n


@dataclass(frozen=True)
class Numerics:
    """One PQ-attention configuration and every fixed-point width derived from it.

    Parameters
    ----------
    head_dim:
        D, the head dimension (elements per K, Q or V vector).
    subspaces:
        M, the number of PQ subspaces; ``head_dim % subspaces == 0``; sub-vector size d = D / M.
    centroids:
        K, centroids per subspace codebook; a power of two from 2 to 256 (code of log2 K bits).
    elem_bits:
        W, width of the signed activations and centroids written to the bank (4..16).
    lut_bits:
        L, width of a signed LUT entry (8..24).
    lut_frac_bits:
        F, fractional bits of LUT entries and scores, in log2 (not natural) units, so the
        bank's exp is an exp2: 2^F entries of exp ROM.
    exp_bits:
        P, the weight of the bank-local maximum is 2^P; weights are P + 1 bits.
    token_capacity:
        T_cap, the most tokens of one head one bank can hold; sizes the sum, histogram and
        output accumulators so they never overflow.
    value_subspaces, value_centroids:
        M_v and K_v of the value codes (``None``: the key side's M and K, today's symmetric
        configuration). ``subspaces`` / ``centroids`` are the key side's M_k and K_k and every
        key-side width (LUT, score) follows them; :attr:`values` is the value side as a
        symmetric ``Numerics`` (histogram, value MAC, value encoder). A value side equal to the
        key side is stored as ``None``, so equal configurations compare equal.
    """

    head_dim: int = 128
    subspaces: int = 64
    centroids: int = 16
    elem_bits: int = 8
    lut_bits: int = 16
    lut_frac_bits: int = 8
    exp_bits: int = 15
    token_capacity: int = 4096
    value_subspaces: int | None = None
    value_centroids: int | None = None
    exp_rom: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in (
            "head_dim", "subspaces", "centroids", "elem_bits", "lut_bits", "lut_frac_bits",
            "exp_bits", "token_capacity",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {value!r}")
        if self.head_dim < 1:
            raise ValueError(f"head_dim must be >= 1, got {self.head_dim}")
        if self.subspaces < 1 or self.head_dim % self.subspaces:
            raise ValueError(
                f"head_dim {self.head_dim} is not divisible by subspaces {self.subspaces}"
            )
        k = self.centroids
        if k < 2 or k > 256 or k & (k - 1):
            raise ValueError(f"centroids must be a power of two in [2, 256], got {k}")
        if not 4 <= self.elem_bits <= 16:
            raise ValueError(f"elem_bits must be in [4, 16], got {self.elem_bits}")
        if not 8 <= self.lut_bits <= 24:
            raise ValueError(f"lut_bits must be in [8, 24], got {self.lut_bits}")
        if not 1 <= self.token_capacity <= 1 << 24:
            raise ValueError(f"token_capacity must be in [1, 2^24], got {self.token_capacity}")
        self._check_value_side()
        object.__setattr__(self, "exp_rom", exp2_table(self.lut_frac_bits, self.exp_bits))

    def _check_value_side(self) -> None:
        """Check M_v, K_v like M, K; store ``None`` where the value side equals the key side."""
        mv, kv = self.value_subspaces, self.value_centroids
        for name, value in (("value_subspaces", mv), ("value_centroids", kv)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise TypeError(f"{name} must be an int or None, got {value!r}")
        mv = self.subspaces if mv is None else mv
        kv = self.centroids if kv is None else kv
        if mv < 1 or self.head_dim % mv:
            raise ValueError(f"head_dim {self.head_dim} is not divisible by value_subspaces {mv}")
        if kv < 2 or kv > 256 or kv & (kv - 1):
            raise ValueError(f"value_centroids must be a power of two in [2, 256], got {kv}")
        if (mv, kv) == (self.subspaces, self.centroids):
            mv = kv = None
        object.__setattr__(self, "value_subspaces", mv)
        object.__setattr__(self, "value_centroids", kv)

    # --- the two code sides ---------------------------------------------------------------------
    @property
    def symmetric(self) -> bool:
        """True when keys and values use the same (M, K)."""
        return self.value_subspaces is None

    @property
    def keys(self) -> Numerics:
        """The key side (M_k, K_k) as a symmetric configuration (LUT, scores, key encoder)."""
        if self.symmetric:
            return self
        return dataclasses.replace(self, value_subspaces=None, value_centroids=None)

    @property
    def values(self) -> Numerics:
        """The value side (M_v, K_v) as a symmetric configuration (histogram, value MAC)."""
        if self.symmetric:
            return self
        return dataclasses.replace(self, subspaces=self.value_subspaces,
                                   centroids=self.value_centroids, value_subspaces=None,
                                   value_centroids=None)

    def side(self, kv: int) -> Numerics:
        """:attr:`keys` for ``kv = 0``, :attr:`values` for ``kv = 1`` (the ISA's kv field)."""
        if kv not in (0, 1):
            raise ValueError(f"kv must be 0 (keys) or 1 (values), got {kv!r}")
        return self.values if kv else self.keys

    # --- shapes -------------------------------------------------------------------------------
    @property
    def sub_dim(self) -> int:
        """d, elements per sub-vector."""
        return self.head_dim // self.subspaces

    @property
    def code_bits(self) -> int:
        """b = log2 K, bits per PQ code."""
        return self.centroids.bit_length() - 1

    @property
    def bits_per_element(self) -> float:
        """Code storage per activation element, keys and values averaged: (M_k b_k + M_v b_v)/2D.

        For a symmetric configuration this is M * b / D.
        """
        v = self.values
        return (self.subspaces * self.code_bits + v.subspaces * v.code_bits) / (2 * self.head_dim)

    # --- activation format --------------------------------------------------------------------
    @property
    def elem_min(self) -> int:
        return -(1 << (self.elem_bits - 1))

    @property
    def elem_max(self) -> int:
        return (1 << (self.elem_bits - 1)) - 1

    # --- encoder ------------------------------------------------------------------------------
    @property
    def dist_bits(self) -> int:
        """Unsigned width of an exact squared L2 distance between two sub-vectors."""
        return dist_bits(self.sub_dim, self.elem_bits)

    # --- scores -------------------------------------------------------------------------------
    @property
    def lut_min(self) -> int:
        return -(1 << (self.lut_bits - 1))

    @property
    def lut_max(self) -> int:
        return (1 << (self.lut_bits - 1)) - 1

    @property
    def score_min(self) -> int:
        return self.subspaces * self.lut_min

    @property
    def score_max(self) -> int:
        return self.subspaces * self.lut_max

    @property
    def score_bits(self) -> int:
        """Signed width of an exact sum of M LUT entries."""
        return signed_width(self.score_min, self.score_max)

    @property
    def delta_bits(self) -> int:
        """Unsigned width of ``max - score`` (always >= 0)."""
        return unsigned_width(self.score_max - self.score_min)

    # --- softmax and values -------------------------------------------------------------------
    @property
    def weight_one(self) -> int:
        """The weight of a token whose score equals the bank-local max: 2^P."""
        return 1 << self.exp_bits

    @property
    def weight_bits(self) -> int:
        return unsigned_width(self.weight_one)

    @property
    def sum_bits(self) -> int:
        """Unsigned width of the local sum and of every histogram bin."""
        return unsigned_width(self.token_capacity * self.weight_one)

    @property
    def hist_bits(self) -> int:
        return self.sum_bits

    @property
    def out_bits(self) -> int:
        """Signed width of a partial-output element: sum_j hist[j] * Cv[j], exact."""
        bound = self.token_capacity * self.weight_one
        return signed_width(bound * self.elem_min, bound * self.elem_max)

    def widths(self) -> dict[str, int]:
        """Every derived width, by name (for docs, ``aqpim verilog`` headers and tests)."""
        return {
            "sub_dim": self.sub_dim,
            "code_bits": self.code_bits,
            "elem_bits": self.elem_bits,
            "dist_bits": self.dist_bits,
            "lut_bits": self.lut_bits,
            "score_bits": self.score_bits,
            "delta_bits": self.delta_bits,
            "weight_bits": self.weight_bits,
            "sum_bits": self.sum_bits,
            "hist_bits": self.hist_bits,
            "out_bits": self.out_bits,
        }


# Guard bits of the channel merge's rescale factor: a bank R binades below the channel maximum
# is still scaled exactly (up to the ROM's rounding), so the floor of the shift costs nothing
# measurable (docs/numerics.md, "Channel merge in the buffer die").
MERGE_GUARD_BITS = 8


def merge_widths(num: Numerics, banks: int, guard_bits: int = MERGE_GUARD_BITS) -> dict[str, int]:
    """Widths of the channel merge (docs/numerics.md, "Channel merge in the buffer die").

    ``scale`` is the rescale factor (P + 1 + R bits, 2^(P+R) is one); ``sum``/``out`` the
    channel partial's sum (unsigned) and output elements (signed); ``acc_sum``/``acc_out`` the
    exact accumulators of ``sum_b * a_b`` and ``out_b * a_b`` over the banks, plus the rounding
    constant 2^(P+R-1).
    """
    if isinstance(banks, bool) or not isinstance(banks, int) or banks < 1:
        raise ValueError(f"banks must be a positive int, got {banks!r}")
    if isinstance(guard_bits, bool) or not isinstance(guard_bits, int) or not 0 <= guard_bits <= 32:
        raise ValueError(f"guard_bits must be an int in [0, 32], got {guard_bits!r}")
    one = num.weight_one
    sum_max = banks * num.token_capacity * one
    unit = one << guard_bits
    half = unit >> 1
    return {
        "scale": unsigned_width(unit),
        "sum": unsigned_width(sum_max),
        "out": signed_width(sum_max * num.elem_min, sum_max * num.elem_max),
        "acc_sum": unsigned_width(sum_max * unit + half),
        "acc_out": signed_width(sum_max * num.elem_min * unit + half,
                                sum_max * num.elem_max * unit + half),
    }
