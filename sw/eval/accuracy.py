"""``aqpim eval accuracy``: accuracy of PQ attention on real (or user) activations.

What is measured
----------------
Activations are Q, K, V of shape (layers, tokens, heads, head_dim). The tokens are cut into
sequences of ``window`` tokens (one forward pass each for the MiniLM capture). In every sequence
the first ``prefill`` tokens form the prompt; each decode position ``t`` in ``[prefill, T)``
(every ``stride``-th) is one decode step: query ``Q[t]`` attends causally to tokens ``0..t``.
Per (layer, head), averaged over decode positions and sequences:

* **relative error** ``||o_hat - o|| / ||o||`` and **cosine** of the attention output against
  exact float64 attention with causal masking;
* **top-k overlap** ``|topk(s_hat) & topk(s)| / k`` of the attention scores (k = 8).

Settings (``Setting``): FP16; uniform KIVI-style at 2/3/4 bits (:mod:`.baselines`); PQ with
sub-vector size d and K centroids and the switchable optimizations

* ``sinks``/``recent``: the first ``sinks`` and the last ``recent`` tokens stay FP16 (they join
  the same softmax; the host holds them and merges them as a float partial);
* ``codebooks``: ``"offline"`` (k-means on calibration data = the other sequences of the same
  layer and head, shared by every request), ``"calib"`` (codebooks, transforms and integer
  steps stored by :mod:`.calibrate` from held-out text: ``sw/data/minilm_calib.npz``, 24576
  tokens per head) or ``"prefill"`` (k-means on this sequence's prompt);
* ``refresh``: with prefill codebooks, retrain every ``refresh`` decode tokens on the prompt plus
  the latest ``refresh`` tokens (the host buffers them in full precision before they are
  encoded); later tokens are encoded with the newest codebook, older codes keep theirs, so
  each codebook generation is a separate token segment (its own LUT and partial);
* ``rotate``: an orthogonal channel rotation before PQ (PCA of the training data with OPQ's
  eigenvalue allocation: principal directions dealt to subspaces so that the products of their
  variances balance). Scores are invariant (``q.k = (Rq).(Rk)``) and the output is rotated
  back, so for a model without RoPE (MiniLM) R folds into the K/Q/V/O projection weights and
  costs nothing at run time; with RoPE keys the host rotates k and q (D^2 MACs per token);
* ``qaware``: keys ``Sigma_q^(1/2) k`` and queries ``Sigma_q^(-1/2) q`` before the rotation
  (:func:`.calibrate.key_transform`), so that k-means minimises the score error
  ``E[(q . (k - c))^2]``; folded into W_k/W_q like the rotation;
* ``key_d``/``key_centroids``: keys get their own (d, K) (0: the values' ``d``/``centroids``).

Each PQ setting is evaluated twice: the **float** PQ reference (codebooks in float64, exact
softmax) and the **integer** hardware model (:mod:`aqpim.sw.golden.intmodel`: 8-bit activations and
centroids with per-subspace steps fixed when the codebooks are made, in-bank encode, quantized
LUT, exp2 softmax, histogram x centroids, host merge with the FP16 tokens), so the hardware's
own numerics loss shows as the gap between the two.

Storage (``bits_per_element``), the mean over the key and value caches at the end of a
sequence of T tokens: FP16 tokens 16 bits; codes ``log2 K / d``; codebooks ``K * D * W`` bits
(W = 8, the integer model's centroids) plus M FP16 steps per cache and codebook generation,
amortised over T tokens for prefill codebooks and over ``amortise`` tokens (default 32768: one
long context; they are shared by every sequence) for offline ones.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path

import numpy as np
from aqpim.sw.eval import baselines
from aqpim.sw.golden import intmodel, pq

from aqpim.numerics import Numerics

__all__ = [
    "Acts",
    "Setting",
    "load_acts",
    "check_acts",
    "relative_error",
    "cosine",
    "topk_overlap",
    "rotation",
    "bits_per_element",
    "default_settings",
    "evaluate",
    "main",
]

LOG2E = 1.0 / math.log(2.0)
TOPK = 8
ELEM_BITS = 8  # the integer model's activation and centroid width (Numerics default)
DEFAULT_ACTS = "minilm_qkv.npz"
SEED = 0


# ----------------------------------------------------------------------------------------------
# activations
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Acts:
    """Validated activations: Q, K, V float64 (layers, tokens, heads, head_dim)."""

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    window: int
    source: str
    heads: tuple[int, ...]

    @property
    def layers(self) -> int:
        return self.q.shape[0]

    @property
    def head_dim(self) -> int:
        return self.q.shape[3]

    @property
    def sequences(self) -> int:
        return self.q.shape[1] // self.window


def check_acts(
    arrays: dict[str, np.ndarray], *, window: int | None = None, name: str = "acts"
) -> Acts:
    """Validate Q, K, V arrays and return them as :class:`Acts`.

    Parameters
    ----------
    arrays:
        Mapping with ``Q``, ``K``, ``V`` (layers, tokens, heads, head_dim), float16/32/64, and
        optionally ``window`` (tokens per sequence), ``heads`` (head labels), ``source``.
    window:
        Tokens per sequence; overrides the file's ``window``; default the file's, else all.
    name:
        What to call the input in error messages (the file name).

    Raises
    ------
    ValueError
        Missing array, wrong number of dimensions, mismatched shapes, a non-finite value, too
        few tokens, or a window that does not divide the tokens.
    TypeError
        A non-float array.
    """
    out = {}
    for key in ("Q", "K", "V"):
        if key not in arrays:
            raise ValueError(f"{name}: missing array {key!r} (need Q, K, V); has {sorted(arrays)}")
        a = arrays[key]
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name}: {key} must be a numpy array, got {type(a).__name__}")
        if not np.issubdtype(a.dtype, np.floating):
            raise TypeError(f"{name}: {key} must be float16 or float32, got dtype {a.dtype}")
        if a.ndim != 4:
            raise ValueError(
                f"{name}: {key} must have 4 dimensions (layers, tokens, heads, head_dim), "
                f"got shape {a.shape}"
            )
        if not np.all(np.isfinite(a)):
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
            raise ValueError(f"{name}: {key} has a non-finite value {a[bad]} at index {bad}")
        out[key] = a.astype(np.float64)
    if not out["Q"].shape == out["K"].shape == out["V"].shape:
        raise ValueError(
            f"{name}: Q, K, V shapes differ: {out['Q'].shape}, {out['K'].shape}, {out['V'].shape}"
        )
    layers, tokens, heads, dim = out["Q"].shape
    if min(layers, heads, dim) < 1:
        raise ValueError(f"{name}: empty dimension in shape {out['Q'].shape}")
    if window is None and "window" in arrays:
        window = int(np.asarray(arrays["window"]))
    window = tokens if window is None else window
    if isinstance(window, bool) or not isinstance(window, int | np.integer):
        raise TypeError(f"{name}: window must be an int, got {window!r}")
    if window < 16:
        raise ValueError(f"{name}: sequences need at least 16 tokens, got window {window}")
    if window > tokens or tokens % window:
        raise ValueError(f"{name}: window {window} does not divide the {tokens} tokens")
    labels = tuple(int(h) for h in np.asarray(arrays.get("heads", np.arange(heads))).ravel())
    if len(labels) != heads:
        labels = tuple(range(heads))
    source = str(np.asarray(arrays["source"])) if "source" in arrays else name
    return Acts(out["Q"], out["K"], out["V"], int(window), source, labels)


def load_acts(path: str | Path | None = None, *, window: int | None = None) -> Acts:
    """Load and validate an ``.npz`` of activations (default: the committed MiniLM sample).

    Raises ``ValueError`` naming the file when it is missing, unreadable or malformed.
    """
    if path is None:
        ref = resources.files("aqpim.sw").joinpath("data", DEFAULT_ACTS)
        path = Path(str(ref))
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such activation file")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {key: z[key] for key in z.files}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from exc
    return check_acts(arrays, window=window, name=str(path))


# ----------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------
def relative_error(approx: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Row-wise ``||approx - exact|| / ||exact||`` over the last axis (0 when both are 0)."""
    approx, exact = np.asarray(approx, np.float64), np.asarray(exact, np.float64)
    if approx.shape != exact.shape:
        raise ValueError(f"shapes differ: {approx.shape} vs {exact.shape}")
    num = np.linalg.norm(approx - exact, axis=-1)
    den = np.linalg.norm(exact, axis=-1)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(num > 0, np.inf, 0.0))


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity over the last axis (1 when both rows are 0, else 0 for one)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    both = (na > 0) & (nb > 0)
    dot = np.sum(a * b, axis=-1)
    return np.where(both, dot / np.where(both, na * nb, 1.0), np.where((na == 0) & (nb == 0), 1, 0))


def topk_overlap(approx: np.ndarray, exact: np.ndarray, k: int, valid: np.ndarray | None = None
                 ) -> np.ndarray:
    """Row-wise ``|topk(approx) & topk(exact)| / k'`` with ``k' = min(k, valid tokens)``.

    Ties rank the lower index first (stable sort). ``valid`` (bool, same shape) marks the
    tokens each row may attend to (causal mask); invalid ones never enter a top-k.
    """
    approx, exact = np.atleast_2d(approx).astype(np.float64), np.atleast_2d(exact).astype(
        np.float64
    )
    if approx.shape != exact.shape:
        raise ValueError(f"shapes differ: {approx.shape} vs {exact.shape}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    valid = np.ones(approx.shape, bool) if valid is None else np.atleast_2d(valid)
    out = np.empty(approx.shape[0])
    for i in range(approx.shape[0]):
        idx = np.flatnonzero(valid[i])
        kk = min(k, idx.size)
        if kk == 0:
            out[i] = 1.0
            continue
        ta = idx[np.argsort(-approx[i, idx], kind="stable")[:kk]]
        te = idx[np.argsort(-exact[i, idx], kind="stable")[:kk]]
        out[i] = np.intersect1d(ta, te).size / kk
    return out


# ----------------------------------------------------------------------------------------------
# settings and storage
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """One cache configuration. ``kind`` is ``"fp16"``, ``"uniform"`` or ``"pq"``.

    For PQ, ``d``/``centroids`` are the values' (and the keys' unless ``key_d``/
    ``key_centroids`` are set); the module docstring lists the optimization switches.
    """

    name: str
    kind: str
    group: str = "grid"  # which plot/table block it belongs to
    d: int = 2
    centroids: int = 16
    bits: int = 2  # uniform only
    sinks: int = 0
    recent: int = 0
    codebooks: str = "offline"
    refresh: int = 0
    rotate: bool = False
    qaware: bool = False
    key_d: int = 0  # keys' own sub-vector size; 0: same as ``d`` (which is the values')
    key_centroids: int = 0  # keys' own K; 0: same as ``centroids``
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("fp16", "uniform", "pq"):
            raise ValueError(f"kind must be fp16, uniform or pq, got {self.kind!r}")
        if self.codebooks not in ("offline", "prefill", "calib"):
            raise ValueError(
                f"codebooks must be 'offline', 'prefill' or 'calib', got {self.codebooks!r}"
            )
        for key in ("d", "centroids", "bits", "sinks", "recent", "refresh", "key_d",
                    "key_centroids"):
            val = getattr(self, key)
            if isinstance(val, bool) or not isinstance(val, int) or val < 0:
                raise ValueError(f"{key} must be an int >= 0, got {val!r}")
        if self.refresh and self.codebooks != "prefill":
            raise ValueError("refresh needs prefill codebooks")
        if self.kind == "pq":
            for key in ("d", "centroids", "kd", "kk"):
                if getattr(self, key) < 1:
                    raise ValueError(f"{key} must be >= 1 for PQ, got {getattr(self, key)}")

    @property
    def kd(self) -> int:
        """Keys' sub-vector size (``key_d``, else ``d``)."""
        return self.key_d or self.d

    @property
    def kk(self) -> int:
        """Keys' centroids per subspace (``key_centroids``, else ``centroids``)."""
        return self.key_centroids or self.centroids

    @property
    def split(self) -> bool:
        """Keys and values use different (d, K)."""
        return (self.kd, self.kk) != (self.d, self.centroids)


def _codebook_bits(s: Setting, head_dim: int) -> int:
    """One codebook generation of both caches: K * D integer centroids and M FP16 steps each."""
    return sum(c * head_dim * ELEM_BITS + (head_dim // d) * 16
               for d, c in ((s.kd, s.kk), (s.d, s.centroids)))


def bits_per_element(
    s: Setting, *, tokens: int, head_dim: int, prefill: int, key_group: int, value_group: int,
    amortise: int,
) -> dict[str, float]:
    """Storage of a setting per cached element at the end of a ``tokens``-long sequence.

    Returns a breakdown (``codes``, ``fp16_tokens``, ``codebooks``, ``scales``) and ``total``,
    each in bits per element, the mean of the key and value caches.
    """
    if s.kind == "fp16":
        return {"total": 16.0, "codes": 16.0}
    n_fp = min(s.sinks + s.recent, tokens)
    fp = n_fp * 16.0 / tokens
    frac = (tokens - n_fp) / tokens
    if s.kind == "uniform":
        code = s.bits * frac
        scale = (baselines.uniform_bits(s.bits, key_group, value_group) - s.bits) * frac
        return {"total": code + scale + fp, "codes": code, "scales": scale, "fp16_tokens": fp}
    code = (math.log2(s.kk) / s.kd + math.log2(s.centroids) / s.d) / 2 * frac
    gens = 1 + (_refreshes(s, tokens, prefill) if s.refresh else 0)
    over = tokens if s.codebooks == "prefill" else amortise
    cbits = gens * _codebook_bits(s, head_dim) / (2 * over * head_dim)
    return {"total": code + fp + cbits, "codes": code, "fp16_tokens": fp, "codebooks": cbits}


def _refreshes(s: Setting, tokens: int, prefill: int) -> int:
    return len(range(prefill + s.refresh, tokens, s.refresh)) if s.refresh else 0


def hardware_cost(s: Setting) -> str:
    """What a setting costs the PIM design beyond its bits (for the table and docs)."""
    if s.kind != "pq":
        return "-"
    parts = []
    if s.sinks or s.recent:
        parts.append(f"host keeps {s.sinks + s.recent} FP16 tokens/head, float partial merge")
    if s.codebooks == "prefill":
        parts.append("host k-means at prefill")
    if s.refresh:
        parts.append(f"k-means + codebook rewrite every {s.refresh} tokens, 1 LUT/segment")
    if s.rotate:
        parts.append("rotation folded into W_q/W_k/W_v/W_o (host D^2 MACs/token with RoPE)")
    if s.qaware:
        parts.append("Sigma_q^(1/2) folded into W_k, Sigma_q^(-1/2) into W_q")
    if s.codebooks == "calib":
        parts.append("stored offline codebooks (no run-time k-means)")
    if s.split:
        parts.append(f"keys (d={s.kd}, K={s.kk}) and values (d={s.d}, K={s.centroids}) need "
                     "separate key/value widths in the bank")
    return "; ".join(parts) or "none"


def default_settings(quick: bool = False) -> list[Setting]:
    """The evaluated grid: baselines, the plain PQ (d, K) grid, the best settings, ablations.

    ``best`` (about 2 bits per element, overheads counted) has keys at d=8, K=256 (1-bit
    codes) and values at d=4, K=256 (2-bit codes): the value error dominates once the keys are
    query-aware, and both code widths pack whole codes into a 256-bit column. It keeps one
    attention sink and a recent window of 16 tokens in FP16, and uses the stored offline
    codebooks (``"calib"``: 24576 held-out calibration tokens) with the query-aware key
    transform and the PCA rotation. Each ``best-*`` variant changes exactly one of those
    choices. ``best-eq`` and ``best-eq-win16`` spend the bits uniform 2-bit has
    (2-bit codes for both caches); ``best4`` is the 4-bit mode (d=2, K=256 for both).
    ``old-best`` is the setting before the stored calibration (other-window codebooks, no
    query-aware transform). ``quick`` keeps a small subset (for tests).
    """
    out = [Setting("fp16", "fp16", group="baseline")]
    for b in (2, 3, 4):
        out.append(Setting(f"uniform-{b}", "uniform", group="baseline", bits=b))
    best = Setting("best", "pq", group="ablation", d=4, centroids=256, key_d=8,
                   key_centroids=256, sinks=1, recent=16, codebooks="calib", rotate=True,
                   qaware=True, note="keys d8 K256, values d4 K256, window 16")
    best4 = Setting("best4", "pq", group="best4", d=2, centroids=256, sinks=1, recent=8,
                    codebooks="calib", rotate=True, qaware=True, note="4-bit codes")
    if quick:
        qb = Setting("best", "pq", group="ablation", d=2, centroids=16, key_d=4,
                     key_centroids=16, sinks=1, recent=8, codebooks="offline", rotate=True,
                     qaware=True, note="quick: keys d4 K16, values d2 K16")
        out += [Setting("pq-d2-K16", "pq", d=2, centroids=16),
                Setting("pq-d4-K16", "pq", d=4, centroids=16),
                qb,
                replace(qb, name="best-nowin", sinks=0, recent=0,
                        note="quick: no FP16 sinks/window")]
        return out
    for b in (2, 3, 4):
        out.append(replace(best, name=f"uniform-{b}+win", kind="uniform", group="baseline",
                           bits=b, rotate=False, qaware=False, key_d=0, key_centroids=0,
                           codebooks="offline", note=""))
    for d in (2, 4, 8):
        for k in (16, 64, 256):
            out.append(Setting(f"pq-d{d}-K{k}", "pq", group="grid", d=d, centroids=k))
    eq = replace(best, name="best-eq", key_d=0, key_centroids=0, recent=8,
                 note="2-bit codes for keys and values, window 8")
    out += [
        best,
        replace(best, name="best-nowin", sinks=0, recent=0, note="no FP16 sinks/window"),
        replace(best, name="best-sinkonly", recent=0, note="FP16 sink, no recent window"),
        replace(best, name="best-win8", recent=8, note="recent window of 8"),
        replace(best, name="best-noqaware", qaware=False, note="no query-aware key transform"),
        replace(best, name="best-norot", rotate=False, note="no PCA rotation"),
        replace(best, name="best-offline", codebooks="offline",
                note="codebooks from the other window (512 tokens)"),
        replace(best, name="best-prefill", codebooks="prefill", note="prefill k-means"),
        replace(best, name="best-prefill+refresh", codebooks="prefill", refresh=64,
                note="prefill k-means, refresh every 64"),
        eq,
        replace(eq, name="best-eq-noqaware", qaware=False,
                note="2-bit codes, window 8, no query-aware transform"),
        replace(eq, name="best-eq-win16", recent=16, note="2-bit codes, window of 16"),
        replace(best, name="old-best", group="reference", key_d=0, key_centroids=0,
                recent=8, codebooks="offline", qaware=False,
                note="before: d4 K256, other-window codebooks, rotation"),
        best4,
        replace(best4, name="best4-noqaware", qaware=False, note="4-bit, no query-aware"),
        replace(best4, name="best4-offline", codebooks="offline",
                note="4-bit, other-window codebooks"),
    ]
    return out


# ----------------------------------------------------------------------------------------------
# rotation
# ----------------------------------------------------------------------------------------------
def rotation(x: np.ndarray, d: int) -> np.ndarray:
    """Orthogonal (D, D) matrix R: PCA of ``x`` with OPQ eigenvalue allocation.

    Principal directions (eigenvectors of the covariance), largest variance first, are dealt
    to the D/d subspaces greedily: each goes to the non-full subspace whose product of assigned
    variances is smallest (log-sum, so zero variances cannot stall it). ``x @ R`` is the
    rotated data; column ``m*d + i`` of R is the i-th direction of subspace m.
    """
    x = np.asarray(x, np.float64)
    dim = x.shape[1]
    if dim % d:
        raise ValueError(f"d = {d} does not divide D = {dim}")
    w, vec = np.linalg.eigh(np.cov(x, rowvar=False))
    order = np.argsort(-w, kind="stable")
    w, vec = np.maximum(w[order], 1e-12), vec[:, order]
    m = dim // d
    logs = np.zeros(m)
    slots: list[list[int]] = [[] for _ in range(m)]
    for j in range(dim):
        cand = [s for s in range(m) if len(slots[s]) < d]
        s = min(cand, key=lambda c: (logs[c], c))
        slots[s].append(j)
        logs[s] += math.log(w[j])
    return vec[:, [j for sl in slots for j in sl]]


# ----------------------------------------------------------------------------------------------
# one sequence of one head
# ----------------------------------------------------------------------------------------------
@dataclass
class _Codebooks:
    """Codebook generations of one cache: (first token, float codebook) plus what the int
    model derives from them."""

    starts: list[int]
    cbs: list[np.ndarray]
    scales: np.ndarray | None = None
    ints: list[np.ndarray] = field(default_factory=list)

    def segment_of(self, tokens: int) -> np.ndarray:
        """Codebook generation of each token index (the newest one started at or before it)."""
        return np.searchsorted(np.asarray(self.starts), np.arange(tokens), side="right") - 1


def _train(x: np.ndarray, d: int, centroids: int, seed: int) -> np.ndarray:
    return pq.train_codebooks(
        x, subspaces=x.shape[1] // d, centroids=centroids, iters=25, seed=seed
    )


def _make_codebooks(
    x: np.ndarray, calib: np.ndarray | None, s: Setting, d: int, centroids: int, prefill: int,
    seed: int,
) -> _Codebooks:
    """Codebook generations for one cache (``x`` is the sequence, already transformed)."""
    if s.codebooks == "offline":
        return _Codebooks([0], [_train(calib, d, centroids, seed)])
    starts, cbs = [0], [_train(x[:prefill], d, centroids, seed)]
    for b in range(prefill + s.refresh, x.shape[0], s.refresh) if s.refresh else ():
        data = np.concatenate([x[:prefill], x[b - s.refresh:b]])
        starts.append(b)
        cbs.append(_train(data, d, centroids, seed + len(starts)))
    return _Codebooks(starts, cbs)


def _int_prepare(cb: _Codebooks, train: np.ndarray | None, num: Numerics) -> None:
    """Steps fixed when the first codebook is made (from its data and centroids, unless the
    stored calibration already fixed them); every generation is quantized with them (later
    data that falls outside saturates, as in the bank)."""
    if cb.scales is None:
        first = cb.cbs[0]
        rows = first.transpose(1, 0, 2).reshape(first.shape[1], -1)
        cb.scales = intmodel.subspace_scales(np.concatenate([train, rows]), num)
    cb.ints = []
    for c in cb.cbs:
        flat = c.transpose(1, 0, 2).reshape(c.shape[1], -1)
        cb.ints.append(intmodel.quantize(flat, cb.scales, num).transpose(1, 0, 2))


def _full_mask(tokens: int, positions: np.ndarray, sinks: int, recent: int) -> np.ndarray:
    """(P, T) bool: token j is kept in FP16 at decode position t (sink or in the window)."""
    j = np.arange(tokens)[None, :]
    t = positions[:, None]
    return (j < sinks) | ((j > t - recent) & (j <= t))


def _attend(q: np.ndarray, k_eff: np.ndarray, v_eff: np.ndarray, causal: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Softmax attention for P queries with per-row token sets; returns (outputs, scores)."""
    s = np.einsum("pd,ptd->pt", q, k_eff) / math.sqrt(q.shape[1])
    s = np.where(causal, s, -np.inf)
    w = np.exp(s - s.max(axis=1, keepdims=True))
    return np.einsum("pt,ptd->pd", w, v_eff) / w.sum(axis=1, keepdims=True), s


def _metrics(out: np.ndarray, ref: np.ndarray, s: np.ndarray, s_ref: np.ndarray,
             causal: np.ndarray) -> dict[str, float]:
    return {
        "rel_err": float(np.mean(relative_error(out, ref))),
        "cosine": float(np.mean(cosine(out, ref))),
        "topk": float(np.mean(topk_overlap(s, s_ref, TOPK, causal))),
    }


@dataclass(frozen=True)
class Stored:
    """Stored offline codebooks of one head (``codebooks="calib"``): a
    :class:`~aqpim.sw.eval.calibrate.Calibration`, the layer and the heads-axis index."""

    calibration: object
    layer: int
    head: int


def evaluate_sequence(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, s: Setting, *, prefill: int, stride: int,
    calib_k: np.ndarray | None = None, calib_v: np.ndarray | None = None,
    calib_q: np.ndarray | None = None, stored: Stored | None = None,
    key_group: int = 128, value_group: int | None = None, integer: bool = True, seed: int = SEED,
) -> dict[str, dict[str, float]]:
    """Metrics of one setting on one head's sequence; ``{"float": {...}, "int": {...}}``.

    ``q``, ``k``, ``v`` are (T, D); decode positions are ``prefill, prefill + stride, ...``;
    ``calib_q``/``calib_k``/``calib_v`` are the offline calibration data (same head, other
    sequences); ``stored`` the stored calibration codebooks (``codebooks="calib"``).
    """
    tokens, dim = k.shape
    pos = np.arange(prefill, tokens, stride)
    causal = np.arange(tokens)[None, :] <= pos[:, None]
    qp = q[pos]
    ref, s_ref = _attend(qp, np.broadcast_to(k, (pos.size, tokens, dim)),
                         np.broadcast_to(v, (pos.size, tokens, dim)), causal)
    full = _full_mask(tokens, pos, s.sinks, s.recent) & causal
    if s.kind == "fp16":
        kh, vh = baselines.fp16(k), baselines.fp16(v)
    elif s.kind == "uniform":
        kh = baselines.uniform_keys(k, s.bits, key_group)
        vh = baselines.uniform_values(v, s.bits, value_group or dim)
    else:
        return _evaluate_pq(q, k, v, s, pos, causal, full, ref, s_ref, prefill,
                            (calib_q, calib_k, calib_v), stored, integer, seed)
    k_eff = np.where(full[:, :, None], k[None], kh[None])
    v_eff = np.where(full[:, :, None], v[None], vh[None])
    out, sc = _attend(qp, k_eff, v_eff, causal)
    return {"float": _metrics(out, ref, sc, s_ref, causal)}


def _transforms(q, k, v, s, prefill, calib, stored):  # noqa: ANN001, ANN202
    """Key transform A, value transform Rv and the codebooks (stored ones, or None)."""
    from aqpim.sw.eval import calibrate

    if s.codebooks == "calib":
        if stored is None:
            raise ValueError(f"{s.name}: 'calib' codebooks need a stored calibration")
        kb = calibrate.Book("K", s.kd, s.kk, rotate=s.rotate, qaware=s.qaware)
        vb = calibrate.Book("V", s.d, s.centroids, rotate=s.rotate)
        a, cbk, sck = stored.calibration.get(kb, stored.layer, stored.head)
        rv, cbv, scv = stored.calibration.get(vb, stored.layer, stored.head)
        return a, rv, (cbk, sck, cbv, scv)
    cq, ck, cv = calib
    if s.codebooks == "offline":
        if ck is None:
            raise ValueError("offline codebooks need calibration data (a second sequence)")
        src = (cq if cq is not None else q[:0], ck, cv)
    else:
        src = (q[:prefill], k[:prefill], v[:prefill])
    if s.qaware and src[0].shape[0] == 0:
        raise ValueError("the query-aware key transform needs calibration queries")
    a = calibrate.key_transform(src[0], src[1], s.kd, qaware=s.qaware, rotate=s.rotate)
    rv = calibrate.value_transform(src[2], s.d, rotate=s.rotate)
    return a, rv, None


def _split_partial(lut: np.ndarray, key_codes: np.ndarray, value_codes: np.ndarray,
                   value_codebook: np.ndarray, num_k: Numerics, num_v: Numerics
                   ) -> intmodel.BankPartial:
    """:func:`intmodel.bank_partial` with the key side (LUT-accumulate, softmax) at ``num_k``
    and the value side (histogram, product) at ``num_v``: the same units in the same order,
    so with ``num_k == num_v`` it is bank_partial exactly."""
    if num_k == num_v:
        return intmodel.bank_partial(lut, key_codes, value_codes, value_codebook, num_k)
    scores = intmodel.lut_accumulate(lut, key_codes, num_k)
    mx, w = intmodel.softmax_weights(scores, num_k)
    hist = intmodel.histogram(w, value_codes, num_v)
    out = intmodel.hist_times_centroids(hist, value_codebook, num_v)
    return intmodel.BankPartial(max=mx, sum=int(w.sum()), out=out)


def _evaluate_pq(q, k, v, s, pos, causal, full, ref, s_ref, prefill, calib, stored, integer,
                 seed):  # noqa: ANN001 - private helper of evaluate_sequence
    tokens, dim = k.shape
    a, rv, books = _transforms(q, k, v, s, prefill, calib, stored)
    # Keys k @ A and queries q @ inv(A)^T keep every score q.k; values rotate back at the end.
    a_q = np.linalg.inv(a).T
    rv_back = np.linalg.inv(rv)
    kr, vr, qr = k @ a, v @ rv, q @ a_q
    cq, ck, cv = calib
    ck = None if ck is None else ck @ a
    cv = None if cv is None else cv @ rv
    if books is not None:
        cbk = _Codebooks([0], [books[0]], scales=books[1])
        cbv = _Codebooks([0], [books[2]], scales=books[3])
    else:
        cbk = _make_codebooks(kr, ck, s, s.kd, s.kk, prefill, seed)
        cbv = _make_codebooks(vr, cv, s, s.d, s.centroids, prefill, seed + 1000)
    seg_k, seg_v = cbk.segment_of(tokens), cbv.segment_of(tokens)
    khr = np.empty_like(kr)
    vhr = np.empty_like(vr)
    codes_k = np.empty((tokens, dim // s.kd), np.int64)
    codes_v = np.empty((tokens, dim // s.d), np.int64)
    for g, cb in enumerate(cbk.cbs):
        sel = seg_k == g
        codes_k[sel] = pq.encode(kr[sel], cb)
        khr[sel] = pq.decode(codes_k[sel], cb)
    for g, cb in enumerate(cbv.cbs):
        sel = seg_v == g
        codes_v[sel] = pq.encode(vr[sel], cb)
        vhr[sel] = pq.decode(codes_v[sel], cb)
    # Float PQ reference: decoded centroids in the transformed space, output rotated back. LUT
    # scores sum_m q_m . C_m[code] equal q . decode(codes), so decoding is the same math.
    qp = qr[pos]
    k_eff = np.where(full[:, :, None], kr[None], khr[None])
    v_eff = np.where(full[:, :, None], vr[None], vhr[None])
    out, sc = _attend(qp, k_eff, v_eff, causal)
    res = {"float": _metrics(out @ rv_back, ref, sc, s_ref, causal)}
    if not integer:
        return res

    # Integer model: steps from the first codebook's training data (or the stored ones).
    cap = max(4096, tokens)
    num_k = Numerics(head_dim=dim, subspaces=dim // s.kd, centroids=s.kk, token_capacity=cap)
    num_v = Numerics(head_dim=dim, subspaces=dim // s.d, centroids=s.centroids,
                     token_capacity=cap)
    train_k = ck if s.codebooks == "offline" else kr[:prefill]
    train_v = cv if s.codebooks == "offline" else vr[:prefill]
    _int_prepare(cbk, train_k, num_k)
    _int_prepare(cbv, train_v, num_v)
    ik = np.empty((tokens, num_k.subspaces), np.int64)
    iv = np.empty((tokens, num_v.subspaces), np.int64)
    for g, cbi in enumerate(cbk.ints):
        sel = seg_k == g
        ik[sel] = intmodel.encode(intmodel.quantize(kr[sel], cbk.scales, num_k), cbi, num_k)
    for g, cbi in enumerate(cbv.ints):
        sel = seg_v == g
        iv[sel] = intmodel.encode(intmodel.quantize(vr[sel], cbv.scales, num_v), cbi, num_v)
    outs = np.empty((pos.size, dim))
    scores = np.full((pos.size, tokens), -np.inf)
    for i, t in enumerate(pos):
        fmask = full[i]
        comp = np.flatnonzero(causal[i] & ~fmask)
        parts = []
        for g in range(len(cbk.ints)):
            # A token's key and value may sit in different generations only if the two
            # caches refresh differently; they refresh together, so one segment holds both.
            sel = comp[seg_k[comp] == g]
            lut = intmodel.build_lut(qr[t], cbk.ints[g], cbk.scales, num_k)
            sc_int = intmodel.lut_accumulate(lut, ik[sel], num_k)
            scores[i, sel] = sc_int / (1 << num_k.lut_frac_bits)
            parts.append(_split_partial(lut, ik[sel], iv[sel], cbv.ints[g], num_k, num_v))
        fidx = np.flatnonzero(fmask)
        extra = intmodel.float_partial(qr[t], kr[fidx], vr[fidx])
        if extra is not None:
            scores[i, fidx] = (kr[fidx] @ qr[t]) * (LOG2E / math.sqrt(dim))
        outs[i] = intmodel.host_merge(parts, cbv.scales, num_v, extra) @ rv_back
    res["int"] = _metrics(outs, ref, scores, s_ref, causal)
    return res


# ----------------------------------------------------------------------------------------------
# the whole evaluation
# ----------------------------------------------------------------------------------------------
def evaluate(
    acts: Acts, settings: list[Setting], *, prefill_frac: float = 0.5, stride: int = 4,
    key_group: int = 128, value_group: int | None = None, amortise: int = 32768,
    integer: bool = True, max_heads: int | None = None, progress: bool = True,
    calibration: object | None = None,
) -> dict:
    """Run every setting on every (layer, head, sequence); return the JSON-ready results.

    ``calibration`` (a :class:`~aqpim.sw.eval.calibrate.Calibration` for these activations)
    supplies the stored codebooks of ``codebooks="calib"`` settings; without it they are
    skipped.
    """
    from aqpim.sw.eval import calibrate
    from tqdm import tqdm

    dim, win = acts.head_dim, acts.window
    prefill = max(1, int(round(win * prefill_frac)))
    if not 1 <= prefill < win:
        raise ValueError(f"prefill {prefill} must be in [1, window {win})")
    vg = value_group or dim
    if dim % vg:
        raise ValueError(f"value group {vg} does not divide head_dim {dim}")
    pairs = [(lay, h) for lay in range(acts.layers) for h in range(acts.q.shape[2])]
    if max_heads is not None:
        step = max(1, len(pairs) // max_heads)
        pairs = pairs[::step][:max_heads]
    runnable, skipped = [], {}
    why_not = "no stored calibration (--calib)" if calibration is None else (
        calibration.matches(acts))
    for s in settings:
        if s.kind == "pq" and (dim % s.d or dim % s.kd):
            skipped[s.name] = f"d={s.d}/{s.kd} does not divide head_dim {dim}"
        elif s.kind == "pq" and s.codebooks == "calib" and why_not:
            skipped[s.name] = why_not
        elif s.kind == "pq" and s.codebooks == "calib" and not all(
            calibration.has(b) for b in (
                calibrate.Book("K", s.kd, s.kk, rotate=s.rotate, qaware=s.qaware),
                calibrate.Book("V", s.d, s.centroids, rotate=s.rotate))):
            skipped[s.name] = "the calibration file lacks its codebooks"
        elif s.kind == "pq" and s.codebooks == "offline" and acts.sequences < 2:
            skipped[s.name] = "offline codebooks need >= 2 sequences (pass --window)"
        elif s.kind == "pq" and s.codebooks == "prefill" and prefill < max(s.centroids, s.kk):
            skipped[s.name] = f"prefill of {prefill} tokens < K = {max(s.centroids, s.kk)}"
        elif s.kind == "pq" and s.codebooks == "offline" and (acts.sequences - 1) * win < max(
            s.centroids, s.kk
        ):
            skipped[s.name] = f"calibration of {(acts.sequences - 1) * win} tokens < K"
        else:
            runnable.append(s)
    per: dict[str, dict[str, list]] = {s.name: {"float": [], "int": []} for s in runnable}
    jobs = [(lay, h, w) for lay, h in pairs for w in range(acts.sequences)]
    bar = tqdm(total=len(jobs) * len(runnable), disable=not progress, desc="accuracy",
               unit="run", file=sys.stderr)
    for lay, h, w in jobs:
        sl = slice(w * win, (w + 1) * win)
        q, k, v = acts.q[lay, sl, h], acts.k[lay, sl, h], acts.v[lay, sl, h]
        other = np.r_[0:w * win, (w + 1) * win:acts.q.shape[1]]
        cq = acts.q[lay, other, h] if other.size else None
        ck = acts.k[lay, other, h] if other.size else None
        cv = acts.v[lay, other, h] if other.size else None
        stored = None if calibration is None else Stored(calibration, lay, h)
        for s in runnable:
            r = evaluate_sequence(q, k, v, s, prefill=prefill, stride=stride, calib_k=ck,
                                  calib_v=cv, calib_q=cq, stored=stored, key_group=key_group,
                                  value_group=vg, integer=integer, seed=SEED)
            for kind, m in r.items():
                per[s.name][kind].append((lay, acts.heads[h], w, m))
            bar.update(1)
    bar.close()
    results = []
    for s in runnable:
        bits = bits_per_element(s, tokens=win, head_dim=dim, prefill=prefill,
                                key_group=key_group, value_group=vg, amortise=amortise)
        entry = {"setting": asdict(s), "bits": bits, "hardware_cost": hardware_cost(s)}
        for kind, rows in per[s.name].items():
            if not rows:
                continue
            agg = {key: float(np.mean([r[3][key] for r in rows])) for key in rows[0][3]}
            heads: dict[tuple[int, int], list[float]] = {}
            for lay, h, _w, m in rows:
                heads.setdefault((lay, h), []).append(m["rel_err"])
            agg["rel_err_worst_head"] = float(max(np.mean(x) for x in heads.values()))
            agg["per_head"] = [
                {"layer": lay, "head": h, "rel_err": float(np.mean(x))}
                for (lay, h), x in sorted(heads.items())
            ]
            entry[kind] = agg
        results.append(entry)
    return {
        "source": acts.source,
        "shape": list(acts.q.shape),
        "window": win,
        "sequences": acts.sequences,
        "prefill": prefill,
        "stride": stride,
        "decode_positions_per_sequence": len(range(prefill, win, stride)),
        "heads_evaluated": len(pairs),
        "key_group": key_group,
        "value_group": vg,
        "amortise_tokens": amortise,
        "calibration": None if calibration is None or why_not else {
            "source": calibration.source, "tokens": calibration.tokens},
        "topk": TOPK,
        "results": results,
        "skipped": skipped,
    }


def targets(report: dict) -> dict:
    """The issue's targets, checked on the float PQ error (and shown for the int model).

    At 2 bits: the best PQ setting with at most 2.1 bits per element (2 bits of codes plus 5 %
    for overheads) and, at equal bits, the best one within the uniform 2-bit cache's own bits
    (overheads included) must have at most half the error of uniform 2-bit and
    no more than uniform 3-bit; at 4 bits: the best PQ setting at most uniform 4-bit's bits
    must match uniform 4-bit (error no more than 1.1x).
    """
    by = {r["setting"]["name"]: r for r in report["results"]}
    out: dict = {}
    if not all(f"uniform-{b}" in by for b in (2, 3, 4)):
        return out
    u = {b: by[f"uniform-{b}"] for b in (2, 3, 4)}
    pqs = [r for r in report["results"] if r["setting"]["kind"] == "pq"]

    def best(limit: float, kind: str) -> dict | None:
        cand = [r for r in pqs if r["bits"]["total"] <= limit + 1e-9 and kind in r]
        return min(cand, key=lambda r: r[kind]["rel_err"], default=None)

    for kind in ("float", "int"):
        res = {}
        for label, limit in (("2.1", 2.1), ("uniform-2", u[2]["bits"]["total"])):
            b2 = best(limit, kind)
            if b2 is not None:
                e = b2[kind]["rel_err"]
                res[f"at_{label}_bits"] = {
                    "setting": b2["setting"]["name"], "bits": b2["bits"]["total"],
                    "rel_err": e, "uniform2": u[2]["float"]["rel_err"],
                    "uniform3": u[3]["float"]["rel_err"],
                    "half_of_uniform2": e <= 0.5 * u[2]["float"]["rel_err"],
                    "le_uniform3": e <= u[3]["float"]["rel_err"],
                }
        b4 = best(u[4]["bits"]["total"], kind)
        if b4 is not None:
            e = b4[kind]["rel_err"]
            res["at_uniform-4_bits"] = {
                "setting": b4["setting"]["name"], "bits": b4["bits"]["total"], "rel_err": e,
                "uniform4": u[4]["float"]["rel_err"],
                "matches_uniform4": e <= 1.1 * u[4]["float"]["rel_err"],
            }
        out[kind] = res
    return out


# ----------------------------------------------------------------------------------------------
# task-level metric: MiniLM sentence embeddings with PQ K/V (needs torch)
# ----------------------------------------------------------------------------------------------
SENTENCE_PAIRS: tuple[tuple[str, str], ...] = (
    ("A man is playing a guitar on stage.", "Someone performs music with a guitar."),
    ("The cat sleeps on the warm windowsill.", "A kitten is napping in the sun by the window."),
    ("The stock market fell sharply today.", "Share prices dropped a lot this afternoon."),
    ("She is cooking pasta in the kitchen.", "A woman prepares spaghetti for dinner."),
    ("The function returns a sorted list.", "This routine gives back the items in order."),
    ("Open the file and read every line.", "Read all lines from the opened file."),
    ("The train leaves at seven in the morning.", "Bananas are rich in potassium."),
    ("Children are playing football in the park.", "The compiler reports a syntax error."),
    ("A dog runs across the beach.", "A puppy is chasing a ball along the shore."),
    ("The weather will be rainy tomorrow.", "Expect showers and clouds the next day."),
    ("He fixed the bug in the parser.", "The painting hangs in a famous museum."),
    ("Raise an exception when the key is missing.", "An error is thrown if the key is absent."),
)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra = np.argsort(np.argsort(a, kind="stable"), kind="stable").astype(float)
    rb = np.argsort(np.argsort(b, kind="stable"), kind="stable").astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def task_metric(settings: list[Setting], *, calib_windows: int = 4, seed: int = SEED) -> dict:
    """Sentence embeddings of all-MiniLM-L6-v2 with PQ (or uniform) K/V against exact ones.

    Calibration codebooks and transforms (``calib`` and ``offline`` settings alike) come from
    Q/K/V of every head captured on the held-out docstrings of
    :data:`~aqpim.sw.eval.calibrate.CALIB_MODULES`; then every layer's key and value
    projections are replaced by
    their quantized reconstruction (the first ``sinks`` tokens kept exact; an encoder has no
    recent window, so none is kept) and the mean-pooled, normalised embeddings of
    :data:`SENTENCE_PAIRS` are compared with the exact ones: mean cosine per sentence, and the
    Spearman correlation of the pair similarities (exact ranking vs quantized ranking).

    Raises ImportError when torch or the model package is missing.
    """
    import torch
    from aqpim.sw.eval import calibrate, capture

    model, tok = capture.load_minilm()
    cal = capture.capture_qkv(capture.stdlib_text(calibrate.CALIB_MODULES),
                              windows=calib_windows, window=512)
    cfg = model.config
    nh, hd = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    sentences = [s for p in SENTENCE_PAIRS for s in p]

    def embed(transform) -> np.ndarray:  # noqa: ANN001
        handles = []
        if transform is not None:
            for i, blk in enumerate(model.encoder.layer):
                for kind, mod in (("K", blk.attention.self.key), ("V", blk.attention.self.value)):
                    def fn(_m, _i, out, i=i, kind=kind):  # noqa: ANN001, ANN202
                        x = out[0].double().numpy().reshape(-1, nh, hd)
                        y = np.stack([transform(i, kind, h, x[:, h]) for h in range(nh)], axis=1)
                        return torch.from_numpy(y.reshape(1, -1, nh * hd)).to(out.dtype)
                    handles.append(mod.register_forward_hook(fn))
        embs = []
        try:
            with torch.no_grad():
                for s in sentences:
                    enc = tok(s, return_tensors="pt")
                    h = model(**enc).last_hidden_state[0].double().numpy()
                    e = h.mean(axis=0)  # mean pooling (one sentence, no padding)
                    embs.append(e / np.linalg.norm(e))
        finally:
            for hd_ in handles:
                hd_.remove()
        return np.stack(embs)

    exact = embed(None)
    sim_exact = np.sum(exact[0::2] * exact[1::2], axis=1)
    out = {"pairs": len(SENTENCE_PAIRS), "calibration_tokens": int(cal["K"].shape[1]),
           "pair_similarity_exact": sim_exact.round(4).tolist(), "settings": {}}
    for s in settings:
        books: dict[tuple[int, str, int], tuple[np.ndarray, np.ndarray]] = {}
        if s.kind == "pq":
            for i in range(cfg.num_hidden_layers):
                for kind in ("K", "V"):
                    for h in range(nh):
                        x = cal[kind][i, :, h].astype(np.float64)
                        if kind == "K":
                            r = calibrate.key_transform(cal["Q"][i, :, h].astype(np.float64), x,
                                                        s.kd, qaware=s.qaware, rotate=s.rotate)
                            cb = _train(x @ r, s.kd, s.kk, seed)
                        else:
                            r = calibrate.value_transform(x, s.d, rotate=s.rotate)
                            cb = _train(x @ r, s.d, s.centroids, seed + 1000)
                        books[(i, kind, h)] = (r, np.linalg.inv(r), cb)

        def transform(i: int, kind: str, h: int, x: np.ndarray, s: Setting = s,
                      books: dict = books) -> np.ndarray:
            if s.kind == "uniform":
                y = (baselines.uniform_keys(x, s.bits, 128) if kind == "K"
                     else baselines.uniform_values(x, s.bits, hd))
            else:
                r, r_inv, cb = books[(i, kind, h)]
                y = pq.decode(pq.encode(x @ r, cb), cb) @ r_inv
            y[: s.sinks] = x[: s.sinks]
            return y

        emb = embed(transform)
        sim = np.sum(emb[0::2] * emb[1::2], axis=1)
        out["settings"][s.name] = {
            "embedding_cosine_mean": float(np.mean(np.sum(emb * exact, axis=1))),
            "embedding_cosine_min": float(np.min(np.sum(emb * exact, axis=1))),
            "pair_similarity_spearman": _spearman(sim_exact, sim),
            "pair_similarity_max_abs_diff": float(np.max(np.abs(sim - sim_exact))),
        }
    return out


# ----------------------------------------------------------------------------------------------
# output: table and plots
# ----------------------------------------------------------------------------------------------
def format_table(report: dict) -> str:
    """Plain-text table: setting, bits per element, float and int errors, cosine, top-k."""
    head = (f"{'setting':<22}{'bits/el':>8}{'relerr':>9}{'int':>9}{'worst':>8}{'cosine':>9}"
            f"{'top-8':>7}  note")
    lines = [head, "-" * len(head)]
    for r in report["results"]:
        s, f = r["setting"], r["float"]
        i = r.get("int", {}).get("rel_err")
        lines.append(
            f"{s['name']:<22}{r['bits']['total']:>8.3f}{f['rel_err']:>9.4f}"
            f"{'' if i is None else f'{i:.4f}':>9}{f['rel_err_worst_head']:>8.3f}"
            f"{f['cosine']:>9.4f}{f['topk']:>7.3f}  {s['note']}"
        )
    for name, why in report.get("skipped", {}).items():
        lines.append(f"{name:<22} skipped: {why}")
    return "\n".join(lines)


def plot(report: dict, out: Path) -> list[Path]:
    """Write the PNG plots into ``out``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = report["results"]
    paths = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for group, marker, color in (("grid", "o", "tab:blue"), ("ablation", "*", "tab:green")):
        rs = [r for r in res if r["setting"]["kind"] == "pq"
              and (r["setting"]["group"] == "grid") == (group == "grid")]
        if rs:
            ax.scatter([r["bits"]["total"] for r in rs], [r["float"]["rel_err"] for r in rs],
                       marker=marker, color=color, s=60 if marker == "*" else 30,
                       label="PQ plain (d, K grid)" if group == "grid" else "PQ optimized")
            for r in rs:
                ax.annotate(r["setting"]["name"].replace("pq-", ""),
                            (r["bits"]["total"], r["float"]["rel_err"]), fontsize=6,
                            xytext=(3, 2), textcoords="offset points")
    for suffix, color, label in (("", "tab:red", "uniform KIVI"),
                                 ("+win", "tab:orange", "uniform KIVI + FP16 sink/window")):
        rs = [r for r in res if r["setting"]["kind"] == "uniform"
              and r["setting"]["name"].endswith(suffix) and ("+win" in r["setting"]["name"]) ==
              bool(suffix)]
        rs.sort(key=lambda r: r["bits"]["total"])
        if rs:
            ax.plot([r["bits"]["total"] for r in rs], [r["float"]["rel_err"] for r in rs],
                    "s-", color=color, label=label)
    # Prefill codebooks at short contexts cost many bits; keep the axis on the useful range.
    far = [r["setting"]["name"] for r in res if r["bits"]["total"] > 8]
    ax.set_xlim(0, 8)
    if far:
        ax.text(0.99, 0.01, "off axis (> 8 bits): " + ", ".join(far), transform=ax.transAxes,
                ha="right", va="bottom", fontsize=6)
    ax.set_xlabel("bits per element (overheads counted)")
    ax.set_ylabel("attention-output relative error")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("PQ vs uniform: error vs bits")
    p = out / "error_vs_bits.png"
    fig.tight_layout()
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)

    rs = [r for r in res if r["setting"]["kind"] == "pq" and r["setting"]["group"] != "grid"]
    if rs:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        x = np.arange(len(rs))
        ax.bar(x - 0.2, [r["float"]["rel_err"] for r in rs], 0.4, label="float PQ")
        ax.bar(x + 0.2, [r.get("int", r["float"])["rel_err"] for r in rs], 0.4,
               label="integer model")
        for name, color in (("uniform-2", "tab:red"), ("uniform-3", "tab:orange"),
                            ("uniform-4", "tab:purple")):
            u = next((r for r in res if r["setting"]["name"] == name), None)
            if u:
                ax.axhline(u["float"]["rel_err"], color=color, ls="--", lw=1, label=name)
        ax.set_xticks(x, [f"{r['setting']['name']}\n{r['bits']['total']:.2f} b" for r in rs],
                      fontsize=6, rotation=30)
        ax.set_ylabel("relative error")
        ax.set_title("optimizations, one at a time")
        ax.legend(fontsize=7)
        fig.tight_layout()
        p = out / "ablation.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """``aqpim eval accuracy [--acts FILE.npz] [--out DIR] [--quick] ...``."""
    ap = argparse.ArgumentParser(
        prog="aqpim eval accuracy",
        description="accuracy of PQ attention (float and integer model) against exact attention "
        "and uniform KIVI-style quantization at equal bits per element",
    )
    ap.add_argument("--acts", type=Path, default=None,
                    help="npz with Q, K, V (layers, tokens, heads, head_dim) float16/float32 "
                    "(default: the committed MiniLM sample)")
    ap.add_argument("--window", type=int, default=None,
                    help="tokens per sequence (default: the file's 'window', else all tokens)")
    ap.add_argument("--out", type=Path, default=Path("out/accuracy"), help="output directory")
    ap.add_argument("--quick", action="store_true",
                    help="small grid, few heads and positions (for tests)")
    ap.add_argument("--stride", type=int, default=None, help="decode-position stride")
    ap.add_argument("--max-heads", type=int, default=None, help="evaluate at most N heads")
    ap.add_argument("--prefill-frac", type=float, default=0.5, help="prompt share of a sequence")
    ap.add_argument("--key-group", type=int, default=128, help="uniform: tokens per key group")
    ap.add_argument("--value-group", type=int, default=None,
                    help="uniform: channels per value group (default head_dim)")
    ap.add_argument("--amortise", type=int, default=32768,
                    help="tokens offline codebooks are amortised over")
    ap.add_argument("--calib", type=Path, default=None,
                    help="stored offline codebooks for 'calib' settings (default: the committed "
                    "MiniLM calibration, with the committed sample only)")
    ap.add_argument("--no-int", action="store_true", help="skip the integer model")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--task", choices=("auto", "on", "off"), default="auto",
                    help="task-level MiniLM embedding metric (needs torch); auto: if available")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--json", action="store_true",
                    help="print one JSON document (the report) to stdout; text goes to stderr")
    args = ap.parse_args(argv)
    # With --json, stdout carries exactly one JSON document; everything else goes to stderr.
    out_stream = sys.stderr if args.json else sys.stdout

    def say(*parts: object) -> None:
        print(*parts, file=out_stream)

    for key in ("stride", "max_heads", "window", "key_group", "value_group", "amortise"):
        val = getattr(args, key)
        if val is not None and val < 1:
            ap.error(f"--{key.replace('_', '-')} must be >= 1, got {val}")
    if not 0.0 < args.prefill_frac < 1.0:
        ap.error(f"--prefill-frac must be in (0, 1), got {args.prefill_frac}")
    try:
        acts = load_acts(args.acts, window=args.window)
    except (ValueError, TypeError) as exc:
        print(f"aqpim eval accuracy: {exc}", file=sys.stderr)
        return 2
    calibration = None
    if args.calib is not None or args.acts is None:
        from aqpim.sw.eval import calibrate

        try:
            calibration = calibrate.load_calibration(args.calib)
        except ValueError as exc:
            print(f"aqpim eval accuracy: {exc}", file=sys.stderr)
            return 2
    stride = args.stride or (32 if args.quick else 16)
    max_heads = args.max_heads or (2 if args.quick else None)
    t0 = time.time()
    report = evaluate(
        acts, default_settings(args.quick), prefill_frac=args.prefill_frac, stride=stride,
        key_group=args.key_group, value_group=args.value_group, amortise=args.amortise,
        integer=not args.no_int, max_heads=max_heads, progress=not args.no_progress,
        calibration=calibration,
    )
    report["targets"] = targets(report)
    task_wanted = args.task == "on" or (args.task == "auto" and not args.quick)
    if task_wanted:
        try:
            import torch  # noqa: F401
        except ImportError:
            report["task"] = {"skipped": "torch is not installed (pip install '.[eval]')"}
            say("task-level metric skipped: torch is not installed (pip install '.[eval]')")
        else:
            names = ("best", "best-eq", "best4", "uniform-2", "uniform-3", "uniform-4")
            sel = [s for s in default_settings() if s.name in names]
            report["task"] = task_metric(sel)
    else:
        report["task"] = {"skipped": "disabled (--quick or --task off)"}
    report["seconds"] = round(time.time() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "accuracy.json").write_text(json.dumps(report, indent=1))
    table = format_table(report)
    (args.out / "accuracy.txt").write_text(table + "\n")
    say(f"{acts.source}\nshape {report['shape']}, {report['sequences']} sequence(s) of "
          f"{report['window']} tokens, {report['heads_evaluated']} heads, "
          f"{report['decode_positions_per_sequence']} decode positions each")
    say(table)
    for kind, res in report["targets"].items():
        for label, r in res.items():
            say(f"target {kind} {label}: {json.dumps(r)}")
    task = report.get("task", {})
    for name, r in task.get("settings", {}).items():
        say(f"task {name}: {json.dumps(r)}")
    if not args.no_plots:
        for p in plot(report, args.out):
            say(f"wrote {p}")
    say(f"wrote {args.out / 'accuracy.json'} ({report['seconds']} s)")
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
