"""Float references for one head's decode step, and the integer pipeline end to end.

Three attentions over the same (q, K, V), from most to least exact:

* :func:`exact_attention`: ``softmax(K q / sqrt(D)) V`` in float64.
* :func:`pq_attention`: PQ attention in float64 with float codebooks: LUT of ``q_m . Ck_m[j]``,
  scores by LUT lookups, softmax, values by histogram x centroids (``bincount`` per subspace,
  never decoding V). The first ``sinks`` tokens and the last ``recent`` tokens stay in full
  precision and join the same softmax.
* :func:`int_attention`: the PIM pipeline in the contract's integer arithmetic
  (:mod:`aqpim.sw.golden.intmodel`): codebooks trained in float, activations and centroids quantized
  with per-subspace scales, in-bank encode, tokens spread over banks, per-bank partials, host
  merge with the full-precision sinks and recent window.

Token split shared by :func:`pq_attention` and :func:`int_attention`: tokens ``[0, sinks)`` and
``[T - recent, T)`` are full precision (they overlap when ``sinks + recent > T``: then every
token is full precision); the rest, ``[sinks, T - recent)``, are PQ-compressed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from aqpim.sw.golden import intmodel, pq

from aqpim.checks import check_int, float_array
from aqpim.numerics import Numerics

__all__ = [
    "exact_attention",
    "lut",
    "pq_scores",
    "value_aggregate",
    "pq_attention",
    "split_tokens",
    "bank_assignment",
    "IntAttention",
    "int_attention",
]

LAYOUTS = ("round-robin", "blocks")


# ----------------------------------------------------------------------------------------------
# checks
# ----------------------------------------------------------------------------------------------
def _check_qkv(q: object, k: object, v: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q = float_array("q", q, 1)
    k = float_array("k", k, 2)
    v = float_array("v", v, 2)
    if k.shape[1] != q.shape[0]:
        raise ValueError(f"k must have shape (T, {q.shape[0]}), got {k.shape}")
    if v.shape[0] != k.shape[0]:
        raise ValueError(f"v must have {k.shape[0]} tokens like k, got shape {v.shape}")
    if k.shape[0] == 0:
        raise ValueError("attention needs at least one token, got T = 0")
    return q.astype(np.float64), k.astype(np.float64), v.astype(np.float64)


def _check_count(name: str, value: object) -> int:
    return check_int(name, value, 0)


def split_tokens(tokens: int, sinks: int, recent: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the full-precision tokens and of the PQ-compressed tokens.

    Returns (full, compressed), both sorted int64 arrays; their union is ``range(tokens)``.
    """
    sinks = _check_count("sinks", sinks)
    recent = _check_count("recent", recent)
    idx = np.arange(tokens)
    full = (idx < sinks) | (idx >= tokens - recent)
    return idx[full], idx[~full]


# ----------------------------------------------------------------------------------------------
# float references
# ----------------------------------------------------------------------------------------------
def exact_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``softmax(K q / sqrt(D)) V`` in float64.

    Parameters
    ----------
    q: float (D,).  k: float (T, D).  v: float (T, Dv).

    Returns
    -------
    float64 (Dv,)
    """
    q, k, v = _check_qkv(q, k, v)
    s = k @ q / math.sqrt(q.shape[0])
    p = np.exp(s - s.max())
    return (p @ v) / p.sum()


def lut(q: np.ndarray, key_codebooks: np.ndarray) -> np.ndarray:
    """Query LUT ``LUT[m, j] = q_m . Ck_m[j]`` (no 1/sqrt(D)); float64 (M, K)."""
    q = float_array("q", q, 1)
    cb = pq.check_codebooks(key_codebooks)
    m, _, d = cb.shape
    if q.shape[0] != m * d:
        raise ValueError(f"q has D = {q.shape[0]}, key_codebooks need M * d = {m * d}")
    return np.einsum("md,mkd->mk", q.reshape(m, d).astype(np.float64), cb)


def _check_codes(name: str, codes: object, m: int, k: int) -> np.ndarray:
    if not isinstance(codes, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(codes).__name__}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise TypeError(f"{name} must have an integer dtype, got {codes.dtype}")
    if codes.ndim != 2 or codes.shape[1] != m:
        raise ValueError(f"{name} must have shape (T, {m}), got {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= k):
        bad = codes.min() if codes.min() < 0 else codes.max()
        raise ValueError(f"{name} has value {bad} outside [0, {k})")
    return codes


def pq_scores(table: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``s_t = sum_m LUT[m, codes[t, m]]`` for codes (T, M); float64 (T,)."""
    table = float_array("table", table, 2)
    codes = _check_codes("codes", codes, *table.shape)
    s = np.zeros(codes.shape[0])
    for m in range(table.shape[0]):  # take per subspace: the fastest plain-NumPy form
        s += np.take(table[m], codes[:, m])
    return s


def value_aggregate(
    weights: np.ndarray, value_codes: np.ndarray, value_codebooks: np.ndarray
) -> np.ndarray:
    """``out_m = sum_j hist_m[j] Cv_m[j]`` with ``hist_m[j] = sum of w_t over code_v[t,m] = j``.

    Returns float64 (M * d,); the values are never decoded token by token.
    """
    cb = pq.check_codebooks(value_codebooks)
    m, k, _ = cb.shape
    w = float_array("weights", weights, 1)
    vc = _check_codes("value_codes", value_codes, m, k)
    if vc.shape[0] != w.shape[0]:
        raise ValueError(f"value_codes has {vc.shape[0]} tokens, weights {w.shape[0]}")
    hist = np.stack([np.bincount(vc[:, s], weights=w, minlength=k) for s in range(m)])
    return np.einsum("mk,mkd->md", hist, cb).reshape(-1)


def pq_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    key_codebooks: np.ndarray,
    value_codebooks: np.ndarray,
    *,
    sinks: int = 0,
    recent: int = 0,
) -> np.ndarray:
    """Float PQ attention with full-precision attention sinks and recent window.

    The compressed tokens are encoded with :func:`aqpim.sw.golden.pq.encode`; their scores come from
    the LUT, the full-precision tokens' from ``q . k``; one softmax over all T scores; the
    compressed tokens' values by histogram x centroids, the others' exactly.

    Parameters
    ----------
    q, k, v:
        float (D,), (T, D), (T, D).
    key_codebooks, value_codebooks:
        float (M, K, d) each, M * d = D.
    sinks, recent:
        Full-precision leading and trailing tokens (0 allowed).

    Returns
    -------
    float64 (D,)
    """
    q, k, v = _check_qkv(q, k, v)
    full, comp = split_tokens(k.shape[0], sinks, recent)
    scale = 1.0 / math.sqrt(q.shape[0])
    s_full = k[full] @ q * scale
    if comp.size:
        kc = pq.encode(k[comp], key_codebooks)
        vc = pq.encode(v[comp], value_codebooks)
        s_comp = pq_scores(lut(q, key_codebooks), kc) * scale
    else:
        s_comp = np.zeros(0)
    mx = max(s_full.max(initial=-np.inf), s_comp.max(initial=-np.inf))
    p_full = np.exp(s_full - mx)
    p_comp = np.exp(s_comp - mx)
    out = p_full @ v[full]
    if comp.size:
        out = out + value_aggregate(p_comp, vc, value_codebooks)
    return out / (p_full.sum() + p_comp.sum())


# ----------------------------------------------------------------------------------------------
# the integer pipeline
# ----------------------------------------------------------------------------------------------
def bank_assignment(tokens: int, banks: int, layout: str = "round-robin") -> list[np.ndarray]:
    """Which of ``tokens`` compressed tokens each bank holds (indices into them, sorted).

    ``"round-robin"``: token i goes to bank ``i % banks`` (new tokens rotate over the banks,
    so every bank's load grows evenly during decoding). ``"blocks"``: contiguous blocks of
    ``ceil(tokens / banks)`` tokens (bank b holds a stretch of the context).
    """
    tokens = _check_count("tokens", tokens)
    banks = check_int("banks", banks, 1)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    idx = np.arange(tokens)
    if layout == "round-robin":
        return [idx[b::banks] for b in range(banks)]
    per = -(-tokens // banks) if tokens else 0
    return [idx[b * per:(b + 1) * per] for b in range(banks)]


def _quantize_codebook(cb: np.ndarray, scales: np.ndarray, num: Numerics) -> np.ndarray:
    """Float (M, K, d) -> int (M, K, d) with the per-subspace scales of the data."""
    m, k, d = cb.shape
    flat = cb.transpose(1, 0, 2).reshape(k, m * d)  # (K, D): one "vector" per centroid index
    return intmodel.quantize(flat, scales, num).transpose(1, 0, 2)


@dataclass(frozen=True)
class IntAttention:
    """Result of :func:`int_attention` for one head, with what it used."""

    out: np.ndarray  # float64 (D,), the merged output
    numerics: Numerics
    key_codebooks: np.ndarray  # float (M, K, d), as trained
    value_codebooks: np.ndarray
    key_scales: np.ndarray  # float (M,), quantization steps
    value_scales: np.ndarray
    key_codebook_int: np.ndarray  # int (M, K, d), what the banks hold
    value_codebook_int: np.ndarray
    lut: np.ndarray  # int (M, K), broadcast to every bank
    key_codes: np.ndarray  # int (Tc, M), compressed tokens in order
    value_codes: np.ndarray
    banks: list[np.ndarray]  # per bank, indices into the compressed tokens
    partials: list[intmodel.BankPartial]
    full_tokens: np.ndarray  # indices of the full-precision tokens


def int_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    subspaces: int = 64,
    centroids: int = 16,
    banks: int = 4,
    sinks: int = 4,
    recent: int = 32,
    layout: str = "round-robin",
    numerics: Numerics | None = None,
    iters: int = 25,
    seed: int = 0,
    key_codebooks: np.ndarray | None = None,
    value_codebooks: np.ndarray | None = None,
) -> IntAttention:
    """One head's decode step through the integer golden model, end to end.

    Steps: train float codebooks on the compressed tokens' keys and values (unless given;
    with fewer compressed tokens than centroids, on all T tokens); per-subspace scales from
    the compressed tokens (:func:`intmodel.subspace_scales`); quantize activations and
    centroids; encode in the banks (:func:`intmodel.encode`); spread tokens over ``banks``
    (:func:`bank_assignment`); quantized LUT (:func:`intmodel.build_lut`); per-bank
    :func:`intmodel.bank_partial`; the full-precision tokens as an
    :func:`intmodel.float_partial`; :func:`intmodel.host_merge`.

    Parameters
    ----------
    q, k, v:
        float (D,), (T, D), (T, D).
    subspaces, centroids:
        M and K (ignored when ``numerics`` is given, which then fixes them).
    banks, layout:
        Number of banks and how tokens are spread over them.
    sinks, recent:
        Full-precision leading and trailing tokens.
    numerics:
        The contract's parameters; default ``Numerics(head_dim=D, subspaces, centroids)``
        with ``token_capacity`` raised to the busiest bank's load if that exceeds 4096.
    iters, seed:
        k-means iterations and seed.
    key_codebooks, value_codebooks:
        Float codebooks to use instead of training.

    Returns
    -------
    IntAttention
    """
    q, k, v = _check_qkv(q, k, v)
    dim = q.shape[0]
    full, comp = split_tokens(k.shape[0], sinks, recent)
    banks = check_int("banks", banks, 1)
    assign = bank_assignment(comp.size, banks, layout)
    load = max(a.size for a in assign)
    if numerics is None:
        numerics = Numerics(
            head_dim=dim, subspaces=subspaces, centroids=centroids,
            token_capacity=max(4096, load),
        )
    elif not isinstance(numerics, Numerics):
        raise TypeError(f"numerics must be a Numerics, got {type(numerics).__name__}")
    num = numerics
    if num.head_dim != dim:
        raise ValueError(f"numerics.head_dim = {num.head_dim} but q has D = {dim}")
    if load > num.token_capacity:
        raise ValueError(f"a bank holds {load} tokens > token_capacity {num.token_capacity}")

    kc_f, vc_f = k[comp], v[comp]
    train_k, train_v = (kc_f, vc_f) if comp.size >= num.centroids else (k, v)
    shape = (num.subspaces, num.centroids, num.sub_dim)
    # With no compressed token the codebooks are never used: zeros avoid training on < K.
    if key_codebooks is None:
        key_codebooks = np.zeros(shape) if comp.size == 0 else pq.train_codebooks(
            train_k, subspaces=num.subspaces, centroids=num.centroids, iters=iters, seed=seed
        )
    if value_codebooks is None:
        value_codebooks = np.zeros(shape) if comp.size == 0 else pq.train_codebooks(
            train_v, subspaces=num.subspaces, centroids=num.centroids, iters=iters, seed=seed + 1
        )
    for name, cb in (("key_codebooks", key_codebooks), ("value_codebooks", value_codebooks)):
        if pq.check_codebooks(cb).shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {cb.shape}")

    # Scales cover the data and the centroids, so neither saturates when quantized.
    def scales(x: np.ndarray, cb: np.ndarray) -> np.ndarray:
        both = np.concatenate([x, cb.transpose(1, 0, 2).reshape(num.centroids, dim)])
        return intmodel.subspace_scales(both, num)

    ks, vs = scales(kc_f, key_codebooks), scales(vc_f, value_codebooks)
    kcb = _quantize_codebook(key_codebooks, ks, num)
    vcb = _quantize_codebook(value_codebooks, vs, num)
    key_codes = intmodel.encode(intmodel.quantize(kc_f, ks, num), kcb, num)
    value_codes = intmodel.encode(intmodel.quantize(vc_f, vs, num), vcb, num)
    table = intmodel.build_lut(q, kcb, ks, num)
    partials = [
        intmodel.bank_partial(table, key_codes[a], value_codes[a], vcb, num) for a in assign
    ]
    extra = intmodel.float_partial(q, k[full], v[full])
    out = intmodel.host_merge(partials, vs, num, extra)
    return IntAttention(
        out=out, numerics=num, key_codebooks=key_codebooks, value_codebooks=value_codebooks,
        key_scales=ks, value_scales=vs, key_codebook_int=kcb, value_codebook_int=vcb,
        lut=table, key_codes=key_codes, value_codes=value_codes, banks=assign,
        partials=partials, full_tokens=full,
    )
