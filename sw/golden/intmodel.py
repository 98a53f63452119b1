"""Bit-exact integer model of every PIM unit, and the host's side of the arithmetic.

This is the executable form of docs/numerics.md and the reference the RTL is checked against.
One function per hardware unit, each taking and returning NumPy integer arrays:

=========================  ===================================  ==========================
function                   hardware                             where it runs
=========================  ===================================  ==========================
:func:`subspace_scales`    -                                    host (prefill)
:func:`quantize`           -                                    host (every K/V write)
:func:`encode`             ``hw/encoder.py``                    bank
:func:`build_lut`          -                                    host (every decode step)
:func:`pack_columns`       bank code storage layout             bank
:func:`lut_accumulate`     ``hw/lut_accumulate.py``             bank
:func:`softmax_weights`    ``hw/softmax.py`` (exp2 ROM)         bank
:func:`histogram`          ``hw/histogram.py``                  bank
:func:`hist_times_centroids` ``hw/value_mac.py``                bank
:func:`bank_partial`       the three above, in order            bank
:func:`channel_merge`      ``hw/merge.py``                      buffer die (per channel)
:func:`host_merge`         -                                    host (flash-decoding merge)
=========================  ===================================  ==========================

Plain NumPy, no simulator imports: testbenches call this module, never the other way round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from aqpim.checks import float_array, int_array
from aqpim.geometry import COLUMN_BITS as WORD_BITS
from aqpim.geometry import Geometry
from aqpim.numerics import MERGE_GUARD_BITS, Numerics, merge_widths

__all__ = [
    "BankPartial",
    "FloatPartial",
    "subspace_scales",
    "quantize",
    "encode",
    "build_lut",
    "lut_step",
    "pack_columns",
    "unpack_columns",
    "lut_accumulate",
    "softmax_weights",
    "histogram",
    "hist_times_centroids",
    "bank_partial",
    "float_partial",
    "channel_merge",
    "merge_scale",
    "host_merge",
]

LOG2E = 1.0 / math.log(2.0)


# ----------------------------------------------------------------------------------------------
# checks
# ----------------------------------------------------------------------------------------------
def _int_array(name: str, a: object, ndim: int) -> np.ndarray:
    return int_array(name, a, ndim).astype(np.int64, copy=False)


def _float_array(name: str, a: object) -> np.ndarray:
    return float_array(name, a).astype(np.float64, copy=False)


def _check_range(name: str, a: np.ndarray, lo: int, hi: int) -> None:
    if a.size and (a.min() < lo or a.max() > hi):
        bad = a.min() if a.min() < lo else a.max()
        raise ValueError(f"{name} has value {bad} outside [{lo}, {hi}]")


# ----------------------------------------------------------------------------------------------
# host: activation format
# ----------------------------------------------------------------------------------------------
def subspace_scales(x: np.ndarray, num: Numerics) -> np.ndarray:
    """Per-subspace quantization step for one head: ``max |x_m| / (2^(W-1) - 1)``.

    One scale per subspace (not per head) keeps the bank's nearest-centroid search exact: within
    a subspace every element shares the step, so the integer argmin is the float argmin of the
    rounded values. Returns float64 of shape (M,); an all-zero subspace gets step 1.0.
    """
    x = _float_array("x", x)
    if x.ndim != 2 or x.shape[1] != num.head_dim:
        raise ValueError(f"x must have shape (N, {num.head_dim}), got {x.shape}")
    peak = np.abs(x.reshape(x.shape[0], num.subspaces, num.sub_dim)).max(axis=(0, 2))
    scale = peak / num.elem_max
    return np.where(scale > 0.0, scale, 1.0)


def quantize(x: np.ndarray, scales: np.ndarray, num: Numerics) -> np.ndarray:
    """Round ``x / scale`` half to even and saturate to the W-bit signed range.

    ``x`` has shape (..., D); returns int64 of shape (..., M, d).
    """
    x = _float_array("x", x)
    if x.shape[-1] != num.head_dim:
        raise ValueError(f"x must end in head_dim {num.head_dim}, got shape {x.shape}")
    scales = _float_array("scales", scales)
    if scales.shape != (num.subspaces,) or np.any(scales <= 0):
        raise ValueError(f"scales must be positive with shape ({num.subspaces},)")
    xs = x.reshape(*x.shape[:-1], num.subspaces, num.sub_dim) / scales[:, None]
    return np.clip(np.rint(xs), num.elem_min, num.elem_max).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# bank: encoder
# ----------------------------------------------------------------------------------------------
def encode(x: np.ndarray, codebook: np.ndarray, num: Numerics) -> np.ndarray:
    """Nearest centroid per subspace, exact integer squared L2, ties to the lowest index.

    Parameters
    ----------
    x:
        int, shape (N, M, d), W-bit signed values.
    codebook:
        int, shape (M, K, d), W-bit signed values.

    Returns
    -------
    codes: int64, shape (N, M), values in [0, K).
    """
    x = _int_array("x", x, 3)
    cb = _int_array("codebook", codebook, 3)
    m, k, d = num.subspaces, num.centroids, num.sub_dim
    if x.shape[1:] != (m, d):
        raise ValueError(f"x must have shape (N, {m}, {d}), got {x.shape}")
    if cb.shape != (m, k, d):
        raise ValueError(f"codebook must have shape ({m}, {k}, {d}), got {cb.shape}")
    _check_range("x", x, num.elem_min, num.elem_max)
    _check_range("codebook", cb, num.elem_min, num.elem_max)
    codes = np.empty((x.shape[0], m), dtype=np.int64)
    for s in range(m):  # loop over M keeps the (N, K, d) temporary small
        diff = x[:, s, None, :] - cb[None, s, :, :]
        dist = np.einsum("nkd,nkd->nk", diff, diff)
        codes[:, s] = np.argmin(dist, axis=1)  # argmin returns the first minimum
    return codes


# ----------------------------------------------------------------------------------------------
# host: query LUT
# ----------------------------------------------------------------------------------------------
def build_lut(
    q: np.ndarray, key_codebook: np.ndarray, key_scales: np.ndarray, num: Numerics
) -> np.ndarray:
    """Quantized query LUT: ``LUT[m, j] = sat(rint(q_m . Ck_m[j] * log2(e) / sqrt(D) * 2^F))``.

    ``key_codebook`` is the bank's integer key codebook (M, K, d) and ``key_scales`` its
    per-subspace steps, so the LUT scores exactly the centroids the bank encodes against. The
    1/sqrt(D) softmax scale and the change to log2 units are folded in here, once per step, so
    the bank needs only adds and an exp2. Rounding is half to even; entries saturate to L bits.
    """
    q = _float_array("q", q)
    if q.shape != (num.head_dim,):
        raise ValueError(f"q must have shape ({num.head_dim},), got {q.shape}")
    cb = _int_array("key_codebook", key_codebook, 3)
    if cb.shape != (num.subspaces, num.centroids, num.sub_dim):
        raise ValueError(f"key_codebook has shape {cb.shape}")
    ks = _float_array("key_scales", key_scales)
    qm = q.reshape(num.subspaces, num.sub_dim)
    cbf = cb.astype(np.float64)
    # The dot product is summed in element order i = 0 .. d-1 (IEEE float64, no reassociation),
    # so every implementation (the vectorized LLM cache's kernel too) gets the same LUT bits.
    dots = qm[:, None, 0] * cbf[:, :, 0]
    for i in range(1, num.sub_dim):
        dots = dots + qm[:, None, i] * cbf[:, :, i]
    return np.clip(np.rint(dots * ks[:, None] * lut_step(num)), num.lut_min,
                   num.lut_max).astype(np.int64)


def lut_step(num: Numerics) -> float:
    """``log2(e) / sqrt(D) * 2^F``: the factor from a scaled dot product to LUT units."""
    return LOG2E / math.sqrt(num.head_dim) * (1 << num.lut_frac_bits)


# ----------------------------------------------------------------------------------------------
# bank: code storage layout and LUT-accumulate
# ----------------------------------------------------------------------------------------------
def pack_columns(codes: np.ndarray, num: Numerics) -> list[int]:
    """Pack one side's codes (T, M) into 256-bit columns, as the bank stores them.

    ``num`` is the side's configuration (``num.keys`` or ``num.values``). The codes are one
    little-endian bit stream: token ``t``'s code for subspace ``m`` sits at bit
    ``(t*M + m) * b``, and column ``c`` is bits ``[256 c, 256 (c+1))``. So ``tpc = 256 / (M*b)``
    tokens share a column, or one token spans ``M*b / 256`` columns (``aqpim.geometry.CodeSide``).
    Unused slots of the last column are zero. Returns Python ints.
    """
    codes = _int_array("codes", codes, 2)
    m, b = num.subspaces, num.code_bits
    if codes.shape[1] != m:
        raise ValueError(f"codes must have {m} columns, got shape {codes.shape}")
    _check_range("codes", codes, 0, num.centroids - 1)
    side = Geometry(num).key
    ncol = side.used_columns(codes.shape[0])
    stream = 0
    for i, v in enumerate(codes.reshape(-1).tolist()):
        stream |= v << (i * b)
    mask = (1 << WORD_BITS) - 1
    return [(stream >> (c * WORD_BITS)) & mask for c in range(ncol)]


def unpack_columns(columns: list[int], tokens: int, num: Numerics) -> np.ndarray:
    """Inverse of :func:`pack_columns`: returns codes (tokens, M)."""
    m, b = num.subspaces, num.code_bits
    stream = 0
    for c, word in enumerate(columns):
        stream |= int(word) << (c * WORD_BITS)
    mask = (1 << b) - 1
    out = np.zeros((tokens, m), dtype=np.int64)
    for t in range(tokens):
        out[t] = [(stream >> ((t * m + s) * b)) & mask for s in range(m)]
    return out


def lut_accumulate(lut: np.ndarray, codes: np.ndarray, num: Numerics) -> np.ndarray:
    """Scores ``s_t = sum_m LUT[m, code[t, m]]``, exact in ``score_bits`` (no saturation)."""
    lut = _int_array("lut", lut, 2)
    codes = _int_array("codes", codes, 2)
    if lut.shape != (num.subspaces, num.centroids):
        raise ValueError(f"lut must have shape ({num.subspaces}, {num.centroids}), got {lut.shape}")
    if codes.shape[1] != num.subspaces:
        raise ValueError(f"codes must have shape (T, {num.subspaces}), got {codes.shape}")
    _check_range("lut", lut, num.lut_min, num.lut_max)
    _check_range("codes", codes, 0, num.centroids - 1)
    scores = np.zeros(codes.shape[0], dtype=np.int64)
    for s in range(num.subspaces):
        scores += np.take(lut[s], codes[:, s])
    return scores


# ----------------------------------------------------------------------------------------------
# bank: softmax weights, histogram, histogram x centroids
# ----------------------------------------------------------------------------------------------
def softmax_weights(scores: np.ndarray, num: Numerics) -> tuple[int, np.ndarray]:
    """Bank-local max and exp2 weights.

    ``delta = max - s``; ``n = delta >> F``; ``f = delta mod 2^F``;
    ``w = EXP2[f] >> n`` (floor), and 0 once ``n > P``. With no tokens the max is
    ``score_min`` (the register's reset value) and there are no weights.

    Returns (max, weights int64 (T,)).
    """
    scores = _int_array("scores", scores, 1)
    _check_range("scores", scores, num.score_min, num.score_max)
    if scores.size == 0:
        return num.score_min, np.zeros(0, dtype=np.int64)
    mx = int(scores.max())
    delta = mx - scores
    n = delta >> num.lut_frac_bits
    f = delta & ((1 << num.lut_frac_bits) - 1)
    rom = np.asarray(num.exp_rom, dtype=np.int64)
    w = np.where(n > num.exp_bits, 0, rom[f] >> np.minimum(n, num.exp_bits + 1))
    return mx, w.astype(np.int64)


def histogram(weights: np.ndarray, value_codes: np.ndarray, num: Numerics) -> np.ndarray:
    """``hist[m, j] = sum of w_t over tokens with value_codes[t, m] == j``; int64 (M_v, K_v)."""
    num = num.values
    w = _int_array("weights", weights, 1)
    vc = _int_array("value_codes", value_codes, 2)
    if vc.shape != (w.shape[0], num.subspaces):
        raise ValueError(f"value_codes must have shape ({w.shape[0]}, {num.subspaces})")
    _check_range("value_codes", vc, 0, num.centroids - 1)
    if w.size and int(w.sum()) >= 1 << 52:  # float64 bincount is exact below 2^53
        raise ValueError("histogram total exceeds the exact float64 range")
    hist = np.empty((num.subspaces, num.centroids), dtype=np.int64)
    wf = w.astype(np.float64)
    for s in range(num.subspaces):
        hist[s] = np.bincount(vc[:, s], weights=wf, minlength=num.centroids).astype(np.int64)
    return hist


def hist_times_centroids(hist: np.ndarray, value_codebook: np.ndarray, num: Numerics) -> np.ndarray:
    """Partial output ``out[m*d + i] = sum_j hist[m, j] * Cv[m, j, i]``, exact; int64 (D,).

    The value side's (M_v, K_v, d_v) of ``num``.
    """
    num = num.values
    hist = _int_array("hist", hist, 2)
    cv = _int_array("value_codebook", value_codebook, 3)
    if cv.shape != (num.subspaces, num.centroids, num.sub_dim):
        raise ValueError(f"value_codebook has shape {cv.shape}")
    return np.einsum("mk,mkd->md", hist, cv).reshape(num.head_dim)


@dataclass(frozen=True)
class BankPartial:
    """What one bank returns for one head and step (D + 2 words)."""

    max: int  # log2-domain score, F fractional bits
    sum: int  # sum of weights, 2^P is one
    out: np.ndarray  # int64 (D,), sum of weight * integer value centroid

    @property
    def empty(self) -> bool:
        return self.sum == 0


def bank_partial(
    lut: np.ndarray,
    key_codes: np.ndarray,
    value_codes: np.ndarray,
    value_codebook: np.ndarray,
    num: Numerics,
) -> BankPartial:
    """One bank's attention over its tokens: LUT-accumulate, softmax, histogram, product."""
    scores = lut_accumulate(lut, key_codes, num)
    mx, w = softmax_weights(scores, num)
    hist = histogram(w, value_codes, num)
    out = hist_times_centroids(hist, value_codebook, num)
    return BankPartial(max=mx, sum=int(w.sum()), out=out)


# ----------------------------------------------------------------------------------------------
# buffer die: channel merge
# ----------------------------------------------------------------------------------------------
def channel_merge(
    partials: list[BankPartial], num: Numerics, guard_bits: int = MERGE_GUARD_BITS
) -> BankPartial:
    """Merge the bank partials of one channel and head into one partial, in integers.

    With ``R = guard_bits``, ``G = max of max_b over banks with sum_b > 0`` (an empty bank,
    sum 0, takes no part), ``delta_b = G - max_b``, ``n_b = delta_b >> F``,
    ``f_b = delta_b mod 2^F``, the rescale factor is the softmax's exp2 ROM entry shifted with
    R guard bits::

        a_b = (EXP2[f_b] << R) >> n_b        (0 once n_b > P + R)

    so ``a_b`` is ``2^(max_b - G)`` with ``2^(P+R)`` as one; then, exact sums with one rounding
    at the end (half up: ``floor(x / 2^(P+R) + 1/2)``)::

        sum = (sum_b sum_b * a_b + 2^(P+R-1)) >> (P + R)
        out = (sum_b out_b * a_b + 2^(P+R-1)) >> (P + R)      (arithmetic shift)

    The result has the bank partial's meaning (max in log2 units with F fractional bits, sum
    and out scaled by 2^P), so :func:`host_merge` takes channel partials as it takes bank
    partials. With every bank empty it is ``(score_min, 0, 0)``, like an empty bank.
    Widths: :func:`aqpim.numerics.merge_widths`; the arithmetic uses Python integers.
    """
    if not partials:
        raise ValueError("channel_merge: no partials")
    widths = merge_widths(num, len(partials), guard_bits)
    outs = []
    for i, p in enumerate(partials):
        out = _int_array(f"partials[{i}].out", p.out, 1)
        if out.shape != (num.head_dim,):
            raise ValueError(f"partials[{i}].out must have shape ({num.head_dim},)")
        if not num.score_min <= p.max <= num.score_max:
            raise ValueError(f"partials[{i}].max = {p.max} outside the score range")
        if not 0 <= p.sum <= num.token_capacity * num.weight_one:
            raise ValueError(f"partials[{i}].sum = {p.sum} outside [0, T_cap * 2^P]")
        outs.append(out)
    live = [i for i, p in enumerate(partials) if p.sum > 0]
    if not live:
        return BankPartial(max=num.score_min, sum=0, out=np.zeros(num.head_dim, dtype=np.int64))
    g = max(partials[i].max for i in live)
    shift = num.exp_bits + guard_bits
    half = 1 << (shift - 1)
    acc_sum = 0
    acc_out = np.zeros(num.head_dim, dtype=object)  # Python ints: exact at any width
    for i in live:
        a = merge_scale(g - partials[i].max, num, guard_bits)
        acc_sum += partials[i].sum * a
        acc_out += outs[i].astype(object) * a
    out = np.array([(int(v) + half) >> shift for v in acc_out], dtype=object)
    if widths["out"] <= 63:
        out = out.astype(np.int64)
    return BankPartial(max=g, sum=(acc_sum + half) >> shift, out=out)


def merge_scale(delta: int, num: Numerics, guard_bits: int = MERGE_GUARD_BITS) -> int:
    """The merge's rescale factor ``(EXP2[delta mod 2^F] << R) >> (delta >> F)``, 2^(P+R) = 1."""
    if delta < 0:
        raise ValueError(f"delta must be >= 0, got {delta}")
    n = delta >> num.lut_frac_bits
    if n > num.exp_bits + guard_bits:
        return 0
    return (num.exp_rom[delta & ((1 << num.lut_frac_bits) - 1)] << guard_bits) >> n


# ----------------------------------------------------------------------------------------------
# host: merge
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FloatPartial:
    """A full-precision partial (attention-sink and recent-window tokens) in log2 units."""

    max: float  # max of q.k * log2(e) / sqrt(D)
    sum: float  # sum of 2^(s - max)
    out: np.ndarray  # float64 (D,), sum of 2^(s - max) * v


def float_partial(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> FloatPartial | None:
    """Exact partial of the tokens the host keeps in full precision; None when there are none."""
    if k.shape[0] == 0:
        return None
    s = (k.astype(np.float64) @ q.astype(np.float64)) * (LOG2E / math.sqrt(q.shape[0]))
    mx = float(s.max())
    w = np.exp2(s - mx)
    return FloatPartial(max=mx, sum=float(w.sum()), out=w @ v.astype(np.float64))


def host_merge(
    partials: list[BankPartial],
    value_scales: np.ndarray,
    num: Numerics,
    extra: FloatPartial | None = None,
) -> np.ndarray:
    """Flash-decoding merge of per-bank partials (and an optional full-precision partial).

    In float64: each bank's max becomes ``max / 2^F`` (log2 units), its sum and output are
    divided by 2^P and its output multiplied by the per-subspace value scale; then
    ``G = max over non-empty partials``, ``a_b = 2^(max_b - G)`` and
    ``out = sum_b a_b out_b / sum_b a_b sum_b``. Empty banks (sum 0) are skipped. Raises if
    every partial is empty.
    """
    scale_d = np.repeat(np.asarray(value_scales, dtype=np.float64), num.values.sub_dim)
    terms: list[tuple[float, float, np.ndarray]] = []
    inv_one = 1.0 / num.weight_one
    for p in partials:
        if not p.empty:
            terms.append(
                (
                    p.max / (1 << num.lut_frac_bits),
                    p.sum * inv_one,
                    p.out.astype(np.float64) * inv_one * scale_d,
                )
            )
    if extra is not None and extra.sum > 0:
        terms.append((extra.max, extra.sum, extra.out))
    if not terms:
        raise ValueError("host_merge: every partial is empty (no tokens)")
    g = max(t[0] for t in terms)
    num_v = np.zeros(num.head_dim)
    den = 0.0
    for mx, sm, out in terms:
        a = 2.0 ** (mx - g)
        num_v += a * out
        den += a * sm
    return num_v / den
