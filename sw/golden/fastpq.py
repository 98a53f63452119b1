"""Compiled (numba) kernels for the golden model's two hot loops: PQ encode and the LUT scan.

Plain NumPy stayed below FAISS on both (docs/golden.md, benchmark section), so these kernels
give the same results, element for element, from loops that LLVM can vectorise.
:func:`aqpim.sw.golden.pq.encode` and the assignment step of ``pq.train_codebooks`` run on
:func:`nearest_unchecked` for float32/float64 data; their plain NumPy form stays in
``pq._assign_numpy`` as the reference the tests hold these kernels to.

=================================  ===============================================================
function                           equals
=================================  ===============================================================
:func:`encode`, :func:`nearest`    :func:`~aqpim.sw.golden.pq.encode` (float input, same codes;
                                   ``nearest`` also returns the distances, for k-means)
:func:`encode_int`                 :func:`~aqpim.sw.golden.intmodel.encode` (integer input, codes)
:func:`lut_scan`                   ``s_t = sum_m table[m, codes[m, t]]`` summed in m order, as
                                   the NumPy form in ``aqpim.commands.bench``; integer tables:
                                   exact int64, so :func:`aqpim.sw.golden.intmodel.lut_accumulate`
:func:`lut_scan_packed`            the scan on 4-bit codes packed two per byte (as the bank stores
                                   them): M/2 lookups per token in :func:`pair_lut` tables
=================================  ===============================================================

Exactness rules the kernels keep:

* **Encode** computes ``sum_i (x_i - c_i)^2`` directly, one term at a time in index order, in
  the common dtype of data and centroids (float32 against float32 stays float32, as FAISS
  does); numba compiles without ``fastmath``, so LLVM neither reorders the sum nor fuses the
  multiply and add into an FMA, and every distance is rounded exactly as NumPy rounds it. The
  argmin keeps the first minimum (strict ``<`` over ascending centroid index): ties go to the
  lowest index. Integer input is computed in int64, exact (the wrapper checks that
  ``d * span^2`` fits).
* **Scan** accumulates a token's score over m in ascending order, in the table's dtype for
  float tables (the rounding of ``scores += table[m][codes[m]]`` in NumPy) and in int64 for
  integer tables (exact).

The kernels use no ``prange``: each runs on one thread whatever numba's threading layer, so the
benchmark compares one thread against one FAISS thread. They are compiled with ``cache=True``:
the first call in a fresh checkout compiles (about a second per dtype signature) and stores the
machine code under ``__pycache__``; later processes load it (:func:`warm_up` does both up front
and reports the time).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numba
import numpy as np

from aqpim.checks import check_array as _array
from aqpim.checks import float_array as _float
from aqpim.checks import int_array as _int

__all__ = [
    "encode",
    "nearest",
    "nearest_unchecked",
    "encode_int",
    "lut_scan",
    "lut_scan_packed",
    "ip_table",
    "pair_lut",
    "pack_pairs",
    "warm_up",
]

# Points per encode block: 128 lanes of best distance and index stay in L1 (or registers)
# while every centroid of one subspace streams past them; 128 measured fastest of 16..128.
_BLOCK = 128

# One encode kernel per sub-vector size d (made on first use): d is a compile-time constant,
# so the loop over d unrolls and the loop over points, innermost, vectorises with the distance
# kept in a register. With d a runtime value LLVM vectorised only a memory round trip per term,
# about 3x slower.
_ENCODE_KERNELS: dict[int, Callable[..., None]] = {}


def _make_encode_kernel(d: int) -> Callable[..., None]:
    """Compile-on-demand encode kernel for sub-vectors of ``d`` elements (cached on disk)."""

    @numba.njit(cache=True, nogil=True)
    def kernel(x, cb, init, out, out_dist):  # pragma: no cover - compiled; tested via encode
        """x (N, M*d), cb (M, K, d), init (1,) >= every distance; out (N, M) int64 codes and
        out_dist (N, M) their distances."""
        n_pts = x.shape[0]
        m_sub, k_cen = cb.shape[0], cb.shape[1]
        xb = np.zeros((d, _BLOCK), dtype=init.dtype)
        best = np.empty(_BLOCK, dtype=init.dtype)
        idx = np.empty(_BLOCK, dtype=np.int32)
        for n0 in range(0, n_pts, _BLOCK):
            nb = min(_BLOCK, n_pts - n0)
            for m in range(m_sub):
                # Transpose the block's sub-vectors so the innermost loop runs over points.
                for n in range(nb):
                    for i in range(d):
                        xb[i, n] = x[n0 + n, m * d + i]
                for n in range(_BLOCK):
                    best[n] = init[0]
                    idx[n] = 0
                for j in range(k_cen):
                    c = cb[m, j]
                    jj = np.int32(j)
                    for n in range(_BLOCK):
                        # Direct form, one term at a time in index order: NumPy's rounding.
                        df = xb[0, n] - c[0]
                        s = df * df
                        for i in range(1, d):
                            df = xb[i, n] - c[i]
                            s += df * df
                        # Strict '<' over ascending j: the first minimum wins (lowest index).
                        lt = s < best[n]
                        best[n] = s if lt else best[n]
                        idx[n] = jj if lt else idx[n]
                for n in range(nb):
                    out[n0 + n, m] = idx[n]
                    out_dist[n0 + n, m] = best[n]

    return kernel


def _encode_kernel(d: int) -> Callable[..., None]:
    if d not in _ENCODE_KERNELS:
        _ENCODE_KERNELS[d] = _make_encode_kernel(d)
    return _ENCODE_KERNELS[d]


_BYTE = np.uint64(255)
_S8, _S16, _S24, _S32, _S40, _S48, _S56 = (np.uint64(8 * i) for i in range(1, 8))


@numba.njit(cache=True, nogil=True, inline="always")
def _add_word(row, v, a0, a1, a2, a3, a4, a5, a6, a7):  # pragma: no cover - compiled
    """Add the table entries of the eight codes packed in the 64-bit word ``v``."""
    # uint64 constants throughout: uint64 mixed with int64 would promote to float64.
    a0 += row[v & _BYTE]
    a1 += row[(v >> _S8) & _BYTE]
    a2 += row[(v >> _S16) & _BYTE]
    a3 += row[(v >> _S24) & _BYTE]
    a4 += row[(v >> _S32) & _BYTE]
    a5 += row[(v >> _S40) & _BYTE]
    a6 += row[(v >> _S48) & _BYTE]
    a7 += row[(v >> _S56) & _BYTE]
    return a0, a1, a2, a3, a4, a5, a6, a7


@numba.njit(cache=True, nogil=True, inline="always")
def _store8(scores, t, a0, a1, a2, a3, a4, a5, a6, a7):  # pragma: no cover - compiled
    scores[t] = a0
    scores[t + 1] = a1
    scores[t + 2] = a2
    scores[t + 3] = a3
    scores[t + 4] = a4
    scores[t + 5] = a5
    scores[t + 6] = a6
    scores[t + 7] = a7


@numba.njit(cache=True, nogil=True)
def _scan_kernel(table, codes, scores):  # pragma: no cover - compiled; tested through lut_scan
    """table (M, K); codes (M, T) uint8 with T % 8 == 0; scores (T,) zeroed, accumulator dtype.

    Sixteen tokens at a time: one 64-bit word of a row holds eight tokens' codes, and the
    sixteen partial scores of two words stay in registers across the M rows (16 independent
    add chains hide the add latency). Rows lie T bytes apart, so walking down a column of
    words hits one cache set over and over; each block of 64 tokens (one cache line per row)
    is first copied into a small (8, M) buffer. Measured at M=32, K=256, one thread: 116M
    tokens/s, against 110M with eight tokens at a time, 86M without the copy and 60M for
    per-row passes over a block of scores in memory. Reads the words little-endian (see
    :func:`lut_scan`).
    """
    m_sub = table.shape[0]
    words = codes.view(np.uint64)
    n_words = words.shape[1]
    buf = np.empty((8, m_sub), dtype=np.uint64)
    for w0 in range(0, n_words, 8):
        wn = min(8, n_words - w0)
        for m in range(m_sub):
            for u in range(wn):
                buf[u, m] = words[m, w0 + u]
        for u in range(0, wn - 1, 2):
            c0, c1 = buf[u], buf[u + 1]
            t = 8 * (w0 + u)
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = scores[t]  # zero, in the score dtype
            b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = scores[t]
            for m in range(m_sub):
                row = table[m]
                a0, a1, a2, a3, a4, a5, a6, a7 = _add_word(
                    row, c0[m], a0, a1, a2, a3, a4, a5, a6, a7
                )
                b0, b1, b2, b3, b4, b5, b6, b7 = _add_word(
                    row, c1[m], b0, b1, b2, b3, b4, b5, b6, b7
                )
            _store8(scores, t, a0, a1, a2, a3, a4, a5, a6, a7)
            _store8(scores, t + 8, b0, b1, b2, b3, b4, b5, b6, b7)
        if wn % 2:  # the block's last word alone
            c0 = buf[wn - 1]
            t = 8 * (w0 + wn - 1)
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = scores[t]
            for m in range(m_sub):
                a0, a1, a2, a3, a4, a5, a6, a7 = _add_word(
                    table[m], c0[m], a0, a1, a2, a3, a4, a5, a6, a7
                )
            _store8(scores, t, a0, a1, a2, a3, a4, a5, a6, a7)


@numba.njit(cache=True, nogil=True)
def _scan_kernel_bytes(table, codes, scores):  # pragma: no cover - compiled
    """Byte-order-free form of :func:`_scan_kernel` (big-endian hosts): rows over a block."""
    m_sub = table.shape[0]
    n_tok = codes.shape[1]
    for t0 in range(0, n_tok, 512):
        t1 = min(n_tok, t0 + 512)
        for m in range(m_sub):
            row = table[m]
            crow = codes[m]
            for t in range(t0, t1):
                scores[t] += row[crow[t]]


# ----------------------------------------------------------------------------------------------
# checks
# ----------------------------------------------------------------------------------------------
def _codebook_shape(cb: np.ndarray) -> tuple[int, int, int]:
    m, k, d = cb.shape
    if k < 2 or k & (k - 1):
        raise ValueError(f"centroids (codebook.shape[1]) must be a power of two >= 2, got {k}")
    if m < 1 or d < 1:
        raise ValueError(f"codebook has an empty dimension: shape {cb.shape}")
    return m, k, d


# ----------------------------------------------------------------------------------------------
# encode
# ----------------------------------------------------------------------------------------------
def nearest(x: np.ndarray, codebooks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid per subspace and its squared distance, float input.

    The codes of :func:`aqpim.sw.golden.pq.encode`, plus ``sum_i (x_i - c_i)^2`` of the chosen
    centroid in the computation dtype (what k-means needs for its assignment step).

    Parameters
    ----------
    x:
        float32 or float64, shape (N, D), finite.
    codebooks:
        float32 or float64, shape (M, K, d) with M * d = D, K a power of two >= 2.

    Returns
    -------
    codes:
        int64, shape (N, M), values in [0, K); ties go to the lowest index.
    dist:
        shape (N, M), ``result_type(x, codebooks)``.

    Raises
    ------
    TypeError
        Non-array or non-float input, or a float dtype other than float32/float64 (NumPy's
        float16 arithmetic has no compiled equivalent here; use ``pq.encode``).
    ValueError
        Wrong dimensions, D != M * d, K not a power of two, NaN or Inf.
    """
    x = _float("x", x, 2)
    cb = _float("codebooks", codebooks, 3)
    m, _, d = _codebook_shape(cb)
    if x.shape[1] != m * d:
        raise ValueError(f"x has D = {x.shape[1]}, codebooks need M * d = {m} * {d} = {m * d}")
    dtype = np.result_type(x.dtype, cb.dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"encode computes in float32 or float64, not {dtype}")
    return nearest_unchecked(x, cb)


def nearest_unchecked(x: np.ndarray, codebooks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`nearest` without the input checks, for callers that made them already.

    ``x`` (N, M*d) and ``codebooks`` (M, K, d) must be finite float32/float64 arrays whose
    common dtype is float32 or float64 (``pq._assign`` calls this once per k-means step).
    """
    n, m, d = x.shape[0], codebooks.shape[0], codebooks.shape[2]
    dtype = np.result_type(x.dtype, codebooks.dtype)
    codes = np.empty((n, m), dtype=np.int64)
    dist = np.empty((n, m), dtype=dtype)
    _encode_kernel(d)(
        np.ascontiguousarray(x, dtype=dtype),
        np.ascontiguousarray(codebooks, dtype=dtype),
        np.array([np.inf], dtype=dtype),  # above every distance, overflowed ones included
        codes,
        dist,
    )
    return codes, dist


def encode(x: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """Nearest centroid per subspace, float input: the codes of :func:`aqpim.sw.golden.pq.encode`.

    Parameters
    ----------
    x:
        float32 or float64, shape (N, D), finite.
    codebooks:
        float32 or float64, shape (M, K, d) with M * d = D, K a power of two >= 2.

    Returns
    -------
    codes:
        int64, shape (N, M), values in [0, K); ties go to the lowest index.

    Raises
    ------
    TypeError, ValueError
        As :func:`nearest`.
    """
    return nearest(x, codebooks)[0]


def encode_int(x: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Nearest centroid per subspace, integer input: the codes of ``intmodel.encode``.

    Exact integer ``sum (x - c)^2``, ties to the lowest index. Unlike
    :func:`aqpim.sw.golden.intmodel.encode` it takes no :class:`~aqpim.numerics.Numerics` and checks
    no W-bit range; it only requires that every distance fits in int64.

    Parameters
    ----------
    x:
        int, shape (N, M, d).
    codebook:
        int, shape (M, K, d), K a power of two >= 2.

    Returns
    -------
    codes:
        int64, shape (N, M), values in [0, K).

    Raises
    ------
    TypeError
        Non-array or non-integer input.
    ValueError
        Shapes that disagree, K not a power of two, or values so large that ``d * span^2``
        (span = largest minus smallest value) would overflow int64.
    """
    x = _int("x", x, 3)
    cb = _int("codebook", codebook, 3)
    m, _, d = _codebook_shape(cb)
    if x.shape[1:] != (m, d):
        raise ValueError(f"x must have shape (N, {m}, {d}), got {x.shape}")
    out = np.empty((x.shape[0], m), dtype=np.int64)
    if x.shape[0] == 0:
        return out
    lo = min(int(x.min()), int(cb.min()))
    hi = max(int(x.max()), int(cb.max()))
    worst = d * (hi - lo) ** 2  # largest possible distance, in Python's exact integers
    if worst > np.iinfo(np.int64).max:
        raise ValueError(
            f"values span [{lo}, {hi}]: d * span^2 = {worst} overflows int64 distances"
        )
    _encode_kernel(d)(
        np.ascontiguousarray(x.reshape(x.shape[0], m * d), dtype=np.int64),
        np.ascontiguousarray(cb, dtype=np.int64),
        np.array([np.iinfo(np.int64).max], dtype=np.int64),  # >= every distance (checked)
        out,
        np.empty(out.shape, dtype=np.int64),
    )
    return out


# ----------------------------------------------------------------------------------------------
# LUT scan
# ----------------------------------------------------------------------------------------------
def _table(table: object) -> tuple[np.ndarray, type]:
    """Validate a (rows, K) LUT; return it in its kernel dtype and the accumulator dtype."""
    table = _array("table", table)
    if table.ndim != 2:
        raise ValueError(f"table must have 2 dimensions (M, K), got shape {table.shape}")
    if np.issubdtype(table.dtype, np.integer):
        if table.size and (table.min() < -(1 << 47) or table.max() >= 1 << 47):
            raise ValueError(
                f"table has value {table.min() if table.min() < 0 else table.max()} outside "
                "+-2^47: int64 scores could overflow"
            )
        return np.ascontiguousarray(table, dtype=np.int64), np.int64
    if table.dtype in (np.float32, np.float64):
        if not np.all(np.isfinite(table)):
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(table))[0])
            raise ValueError(f"table has a non-finite value {table[bad]} at index {bad}")
        return np.ascontiguousarray(table), table.dtype.type
    raise TypeError(f"table must be integer, float32 or float64, got {table.dtype}")


def _codes(name: str, codes: object, rows: int, k: int) -> np.ndarray:
    """Validate codes (rows, T) with values in [0, k); return them as contiguous uint8."""
    codes = _int(name, codes, 2)
    if codes.shape[0] != rows:
        raise ValueError(f"{name} must have {rows} rows (one per table row), got {codes.shape}")
    if codes.dtype != np.uint8 and codes.size and (codes.min() < 0 or codes.max() >= k):
        bad = codes.min() if codes.min() < 0 else codes.max()
        raise ValueError(f"{name} has value {bad} outside [0, {k})")
    if codes.dtype == np.uint8 and codes.size and k < 256 and codes.max() >= k:
        raise ValueError(f"{name} has value {codes.max()} outside [0, {k})")
    return np.ascontiguousarray(codes, dtype=np.uint8)


def lut_scan(table: np.ndarray, codes_mt: np.ndarray) -> np.ndarray:
    """Scores ``s_t = sum_m table[m, codes_mt[m, t]]``, codes stored (M, T).

    Parameters
    ----------
    table:
        (M, K) LUT, K <= 256: integer (summed exactly in int64; entries within +-2^47),
        float32 or float64 (summed in that dtype, m in ascending order).
    codes_mt:
        int, shape (M, T), values in [0, K); uint8 is used as is, other dtypes are converted.

    Returns
    -------
    scores:
        shape (T,), int64 for integer tables, else the table's dtype.

    Raises
    ------
    TypeError
        Non-array input, non-integer codes, or a table dtype other than integer/float32/float64.
    ValueError
        Wrong dimensions, K > 256, codes out of range, NaN/Inf or too large entries.
    """
    tab, acc = _table(table)
    if tab.shape[1] > 256:
        raise ValueError(f"table has K = {tab.shape[1]} > 256 centroids (8-bit codes at most)")
    codes = _codes("codes_mt", codes_mt, tab.shape[0], tab.shape[1])
    n_tok = codes.shape[1]
    if sys.byteorder != "little":
        scores = np.zeros(n_tok, dtype=acc)
        _scan_kernel_bytes(tab, codes, scores)
        return scores
    if n_tok % 8:  # the kernel reads eight codes per 64-bit word: pad with code 0, drop after
        codes = np.concatenate(
            [codes, np.zeros((codes.shape[0], 8 - n_tok % 8), dtype=np.uint8)], axis=1
        )
    scores = np.zeros(codes.shape[1], dtype=acc)
    _scan_kernel(tab, codes, scores)
    return scores[:n_tok]


@numba.njit(cache=True, nogil=True)
def _ip_table_kernel(q, cb, out):  # pragma: no cover - compiled; tested through ip_table
    """out[m, j] = sum_i q[m*d + i] * cb[m, j, i], summed in index order.

    The loop over centroids is innermost (each term added to its own output entry) so that it
    vectorises; the order of the terms of every sum stays i = 0, 1, ...
    """
    m_sub, k_cen, d = cb.shape
    for m in range(m_sub):
        q0 = q[m * d]
        for j in range(k_cen):
            out[m, j] = q0 * cb[m, j, 0]
        for i in range(1, d):
            qi = q[m * d + i]
            for j in range(k_cen):
                out[m, j] += qi * cb[m, j, i]


def ip_table(q: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """Inner-product query LUT ``LUT[m, j] = q_m . C_m[j]``, summed over d in index order.

    What ``IndexPQ.search`` builds per query before its scan; ``einsum`` took about 50 us for
    M=32, K=256, d=4 (as long as scanning 4096 tokens), this kernel a few.

    Parameters
    ----------
    q:
        float32 or float64, shape (D,), finite.
    codebooks:
        float32 or float64, shape (M, K, d) with M * d = D.

    Returns
    -------
    table:
        shape (M, K), ``result_type(q, codebooks)``.
    """
    q = _float("q", q, 1)
    cb = _float("codebooks", codebooks, 3)
    m, k, d = _codebook_shape(cb)
    if q.shape[0] != m * d:
        raise ValueError(f"q has D = {q.shape[0]}, codebooks need M * d = {m} * {d} = {m * d}")
    dtype = np.result_type(q.dtype, cb.dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"ip_table computes in float32 or float64, not {dtype}")
    out = np.empty((m, k), dtype=dtype)
    _ip_table_kernel(
        np.ascontiguousarray(q, dtype=dtype), np.ascontiguousarray(cb, dtype=dtype), out
    )
    return out


def pair_lut(table: np.ndarray) -> np.ndarray:
    """(M, 16) 4-bit LUT -> (M/2, 256): ``out[i, a + 16 b] = table[2i, a] + table[2i+1, b]``.

    Integer tables are widened to int64 first (the pair sum is exact); float tables keep their
    dtype (each pair sum rounds once).
    """
    table = _array("table", table)
    if table.ndim != 2 or table.shape[1] != 16 or table.shape[0] % 2:
        raise ValueError(f"pair_lut needs an even M and K = 16, got table shape {table.shape}")
    if np.issubdtype(table.dtype, np.integer):
        table = table.astype(np.int64)
    m = table.shape[0]
    return (table[0::2, None, :] + table[1::2, :, None]).reshape(m // 2, 256)


def pack_pairs(codes_mt: np.ndarray) -> np.ndarray:
    """(M, T) 4-bit codes -> (M/2, T) bytes, subspace 2i in the low nibble, 2i+1 in the high."""
    codes = _int("codes_mt", codes_mt, 2)
    if codes.shape[0] % 2:
        raise ValueError(f"pack_pairs needs an even M, got {codes.shape[0]}")
    if codes.size and (codes.min() < 0 or codes.max() > 15):
        bad = codes.min() if codes.min() < 0 else codes.max()
        raise ValueError(f"codes_mt has value {bad} outside the 4-bit range [0, 16)")
    return (codes[0::2] | (codes[1::2] << 4)).astype(np.uint8)


def lut_scan_packed(table: np.ndarray, packed: np.ndarray) -> np.ndarray:
    """Scan 4-bit codes stored two per byte: ``lut_scan(pair_lut(table), packed)``.

    Each byte indexes one 256-entry pair table, so a token costs M/2 lookups instead of M.
    Integer tables give exactly ``sum_m table[m, code_m]`` (int64); float tables round once per
    pair and then sum the M/2 pair values in order.

    Parameters
    ----------
    table:
        (M, 16) LUT, M even: integer, float32 or float64.
    packed:
        uint8, shape (M/2, T), as :func:`pack_pairs` builds it.

    Returns
    -------
    scores:
        shape (T,), int64 for integer tables, else the table's dtype.
    """
    packed = _int("packed", packed, 2)
    if packed.dtype != np.uint8:
        raise TypeError(f"packed must be uint8 (two 4-bit codes per byte), got {packed.dtype}")
    return lut_scan(pair_lut(table), packed)


# ----------------------------------------------------------------------------------------------
# warm-up
# ----------------------------------------------------------------------------------------------
def warm_up(sub_dims: tuple[int, ...] = (2, 4)) -> dict[str, float | int]:
    """Compile (or load from the on-disk cache) the kernels the golden model uses.

    Parameters
    ----------
    sub_dims:
        Sub-vector sizes d whose encode kernels to prepare (float32, float64 and int64 each);
        the scan kernels (float32, float64, int64 tables) are always prepared.

    Returns
    -------
    dict
        ``seconds`` (wall time), and numba's ``cache_hits`` (signatures loaded from disk) and
        ``cache_misses`` (signatures compiled), so a benchmark reports the JIT cost apart
        from its timed runs.
    """
    t = time.perf_counter()
    rng = np.random.default_rng(0)
    for d in sub_dims:
        for dtype in (np.float32, np.float64):
            encode(rng.standard_normal((3, 2 * d)).astype(dtype), np.ones((2, 2, d), dtype))
        encode_int(np.zeros((3, 2, d), dtype=np.int64), np.ones((2, 2, d), dtype=np.int64))
    for dtype in (np.float32, np.float64, np.int64):
        lut_scan(np.ones((2, 4), dtype=dtype), np.zeros((2, 8), dtype=np.uint8))
    ip_table(np.ones(4, dtype=np.float32), np.ones((2, 2, 2), dtype=np.float32))
    seconds = time.perf_counter() - t
    kernels = [_scan_kernel, _ip_table_kernel, *(_encode_kernel(d) for d in sub_dims)]
    return {
        "seconds": seconds,
        "cache_hits": sum(sum(k.stats.cache_hits.values()) for k in kernels),
        "cache_misses": sum(sum(k.stats.cache_misses.values()) for k in kernels),
    }
