"""KV caches in the loop of a decoder's forward pass, vectorized over a whole window.

Decode-time compression, evaluated without decoding token by token: query ``t`` sees its
``sinks`` first tokens and its ``recent`` most recent tokens ``(t - recent, t]`` in FP16 and
every other earlier token ``s`` (``sinks <= s <= t - recent``) through its compressed form, so

    scores[t, s] = q_t . k16_s        if s is a sink or recent for t, else  q_t . k_hat_s
    out[t]       = sum_s p[t, s] * (v16_s if s is a sink or recent for t else v_hat_s)

with ``p`` the causal softmax of the scores / sqrt(D). Because a token's compressed form
never depends on the query (codebooks are fixed offline, uniform statistics are causal), this
equals the token-by-token decode exactly. Caches (:class:`Cache` subclasses):

* :class:`FP16Cache`: every token FP16 (the baseline; the FP16 rounding is the only loss).
* :class:`UniformCache`: KIVI-style asymmetric min-max round-to-nearest (``baselines``):
  keys per channel over groups of ``key_group`` tokens (counted from the first non-sink token),
  values per token over groups of ``value_group`` channels; FP16 scale and zero. Streaming and
  causal: a key group is quantized only when its last token leaves the FP16 window (all its
  tokens are written by then), so until then its tokens stay FP16 (KIVI's residual); a value
  is quantized as it leaves the window. INT8 is this cache at 8 bits.
* :class:`PQCache` (float): PQ codes against float codebooks trained offline per (layer, KV
  head); compressed tokens are their decoded centroids.
* :class:`PQCache` (``integer=True``): the bank's integer arithmetic of docs/numerics.md,
  vectorized: int8 per-subspace steps fixed at calibration, in-bank encoding of the int8
  vectors against int8 centroids, the query LUT quantized in the log2 domain per query head,
  exact integer LUT sums, the exp2-ROM softmax with the bank-local max, the histogram of value
  codes times the integer value centroids, and the host's float64 flash-decoding merge with
  the FP16 tokens' partial (:func:`aqpim.sw.golden.intmodel.host_merge`, here over all queries
  at once).
  The bank part is a numba kernel checked against :func:`aqpim.sw.golden.intmodel.bank_partial`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
from aqpim.sw.eval import baselines
from aqpim.sw.golden import fastpq, intmodel

from aqpim.numerics import Numerics

__all__ = [
    "LOG2E",
    "Cache",
    "FP16Cache",
    "UniformCache",
    "PQCache",
    "PQBooks",
    "compressed_mask",
    "bank_partials",
]

LOG2E = 1.0 / math.log(2.0)


def compressed_mask(tokens: int, sinks: int, recent: int, group: int = 1):
    """(T, T) torch bool: token s is read in compressed form by query t.

    ``s >= sinks`` and the whole group of ``s`` (groups of ``group`` tokens counted from
    ``sinks``) has left the window: ``last(s) <= t - recent``. ``group = 1`` is the plain rule.
    """
    import torch

    if sinks < 0 or recent < 1 or group < 1:
        raise ValueError(f"need sinks >= 0, recent >= 1, group >= 1; got {sinks}, {recent}, "
                         f"{group}")
    s = torch.arange(tokens)
    last = sinks + ((s - sinks) // group + 1) * group - 1
    t = torch.arange(tokens)[:, None]
    return (s[None, :] >= sinks) & (last[None, :] <= t - recent)


class Cache:
    """Base: ``attend(layer, q, k, v)`` with q (H, T, D), k, v (Hkv, T, D) float32 tensors."""

    sinks: int = 0
    recent: int = 1

    def attend(self, layer: int, q, k, v):  # noqa: ANN001, ANN201
        raise NotImplementedError

    @staticmethod
    def _fp16(x):  # noqa: ANN001, ANN205
        import torch

        return x.to(torch.float16).to(torch.float32)

    def _mixed(self, q, k16, v16, khat, vhat, mask_k, mask_v):  # noqa: ANN001, ANN202
        """Softmax attention over FP16 and compressed tokens, masks (T, T), GQA by repeat."""
        import torch

        g = q.shape[0] // k16.shape[0]
        T, D = q.shape[1], q.shape[2]

        def rep(z):  # noqa: ANN001, ANN202 - GQA: each KV head serves g query heads
            return z.repeat_interleave(g, 0)

        causal = torch.ones(T, T, dtype=torch.bool).tril()
        s = torch.where(mask_k, q @ rep(khat).transpose(1, 2), q @ rep(k16).transpose(1, 2))
        s = (s / math.sqrt(D)).masked_fill(~causal, float("-inf"))
        p = torch.softmax(s, dim=-1)
        pc = p * mask_v
        return (p - pc) @ rep(v16) + pc @ rep(vhat)


class FP16Cache(Cache):
    """Every token in FP16: exact attention over FP16-rounded keys and values."""

    def attend(self, layer: int, q, k, v):  # noqa: ANN001, ANN201
        import torch

        g = q.shape[0] // k.shape[0]
        return torch.nn.functional.scaled_dot_product_attention(
            q, self._fp16(k).repeat_interleave(g, 0), self._fp16(v).repeat_interleave(g, 0),
            is_causal=True)


@dataclass
class UniformCache(Cache):
    """KIVI-style streaming uniform cache (module docstring); INT8 at ``bits = 8``."""

    bits: int
    sinks: int = 4
    recent: int = 32
    key_group: int = 128
    value_group: int = 64

    def attend(self, layer: int, q, k, v):  # noqa: ANN001, ANN201
        import torch

        T = q.shape[1]
        k16, v16 = self._fp16(k), self._fp16(v)
        khat = torch.empty_like(k16)
        vhat = torch.empty_like(v16)
        for h in range(k.shape[0]):
            kh = k16[h].double().numpy()
            out = kh.copy()
            for t0 in range(self.sinks, T, self.key_group):
                blk = kh[t0:t0 + self.key_group]
                out[t0:t0 + self.key_group] = baselines.quantize_groups(blk.T, self.bits).T
            khat[h] = torch.from_numpy(out).float()
            vh = v16[h].double().numpy()
            d = vh.shape[1]
            vq = baselines.quantize_groups(vh.reshape(-1, self.value_group), self.bits)
            vhat[h] = torch.from_numpy(vq.reshape(T, d)).float()
        mk = compressed_mask(T, self.sinks, self.recent, self.key_group)
        mv = compressed_mask(T, self.sinks, self.recent)
        return self._mixed(q, k16, v16, khat, vhat, mk, mv)


# ----------------------------------------------------------------------------------------------
# PQ
# ----------------------------------------------------------------------------------------------
@dataclass
class PQBooks:
    """Offline codebooks of one cache side (keys or values) for every (layer, KV head).

    ``float`` (L, Hkv, M, K, d) float64; ``ints`` the same shape int64 (W-bit centroids) and
    ``scales`` (L, Hkv, M) the per-subspace steps, both fixed from the calibration vectors.
    """

    float: np.ndarray
    ints: np.ndarray
    scales: np.ndarray
    xf: np.ndarray | None = None  # (L, Hkv, D, D) transform A: the codebooks are of x @ A

    def transform(self, layer: int, head: int):  # noqa: ANN201
        """(A, inverse of A) of a (layer, KV head) as float64 torch tensors, or None.

        The products with A run in torch, not NumPy: NumPy's BLAS threads spin after each
        call and, beside torch's and numba's threads on the same cores, doubled the cost of
        the whole integer-model forward.
        """
        import torch

        if self.xf is None:
            return None
        a = torch.from_numpy(np.ascontiguousarray(self.xf[layer, head]))
        return a, torch.linalg.inv(a)

    @property
    def d(self) -> int:
        return int(self.float.shape[-1])

    @property
    def centroids(self) -> int:
        return int(self.float.shape[-2])


@numba.njit(parallel=True, cache=True)
def _bank_kernel(q, kcb, ks, step, lmin, lmax, kct, vdec, rom, frac, pbits, sinks, recent,
                 mx, sm, out):  # pragma: no cover
    """Per query t: the quantized LUT, LUT sums, bank-local max and exp2-ROM weights.

    Exactly ``intmodel.build_lut`` then the score and weight part of
    ``intmodel.bank_partial`` over tokens ``[sinks, t - recent]``: the LUT dot products in
    element order, then ``* step[m] * c``, round half even, saturate (as ``build_lut``); the
    rest in int64. ``q`` (T, Mk, dk) float64, ``kcb`` (Mk, Kk, dk) the integer key centroids as
    float64, ``kct`` (Mk, T) key codes (token-contiguous, so the score loop is a gather over
    contiguous codes). Token s's weight for query t goes to ``wmat[t, s]`` (zero-initialised).
    """
    T, Mk, dk = q.shape
    Kk = kcb.shape[1]
    dim = vdec.shape[1]
    fmask = (1 << frac) - 1
    for i in numba.prange(T):
        # Query t has ~t tokens: pair short and long queries so the threads' shares are equal.
        t = i // 2 if i % 2 == 0 else T - 1 - i // 2
        hi = t - recent
        mx[t] = 0
        sm[t] = 0
        if hi < sinks:
            continue
        n = hi - sinks + 1
        # Scores fit int32 (bank_partials checks score_bits <= 32).
        sc = np.zeros(n, np.int32)
        row = np.empty(Kk, np.int32)
        for m in range(Mk):
            for c in range(Kk):
                acc = q[t, m, 0] * kcb[m, c, 0]
                for e in range(1, dk):
                    acc = acc + q[t, m, e] * kcb[m, c, e]
                x = np.rint(acc * ks[m] * step)
                row[c] = int(min(max(x, lmin), lmax))
            codes = kct[m, sinks:sinks + n]
            for j in range(n):
                sc[j] += row[codes[j]]
        best = np.int64(sc.max())
        vacc = np.zeros(dim, np.int64)
        tot = 0
        for j in range(n):
            delta = best - np.int64(sc[j])
            nsh = delta >> frac
            if nsh > pbits:
                continue
            w = rom[delta & fmask] >> nsh
            tot += w
            s = sinks + j
            for e in range(dim):
                vacc[e] += w * vdec[s, e]
        for e in range(dim):
            out[t, e] = vacc[e]
        mx[t] = best
        sm[t] = tot


def bank_partials(q: np.ndarray, key_codebook: np.ndarray, key_scales: np.ndarray,
                  key_codes: np.ndarray, value_codes: np.ndarray, value_codebook: np.ndarray,
                  num_k: Numerics, sinks: int, recent: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bank partials of every query of a window: (max (T,), sum (T,), out (T, D)) int64.

    ``q`` (T, D) float queries (the host builds each query's LUT, :func:`intmodel.build_lut`,
    here inside the kernel), ``key_codebook`` (Mk, Kk, dk) int with ``key_scales`` (Mk,),
    ``key_codes`` (T, Mk), ``value_codes`` (T, Mv), ``value_codebook`` (Mv, Kv, dv) int. Query
    t's bank holds tokens ``sinks .. t - recent``; a query with none reports sum 0 (empty bank).
    """
    if num_k.score_bits > 32:
        raise ValueError(f"score_bits {num_k.score_bits} > 32: the kernel sums scores in int32")
    T = q.shape[0]
    mk, kk, dk = key_codebook.shape
    dim = value_codebook.shape[0] * value_codebook.shape[2]
    mx = np.zeros(T, np.int64)
    sm = np.zeros(T, np.int64)
    out = np.zeros((T, dim), np.int64)
    # The value side, sum_c hist[m, c] Cv[m, c], equals sum_s w_s Cv[m, code_v[s, m]]: the
    # kernel sums the latter over each token's value centroids (int16 rows: half the bytes
    # streamed per query of an int32 copy; int64 sums, exact).
    mv = np.arange(value_codebook.shape[0])[None, :]
    vdec = np.asarray(value_codebook, np.int16)[mv, np.asarray(value_codes)].reshape(T, dim)
    cdt = np.uint8 if kk <= 256 else np.uint16
    _bank_kernel(np.ascontiguousarray(np.asarray(q, np.float64).reshape(T, mk, dk)),
                 np.ascontiguousarray(key_codebook, np.float64),
                 np.ascontiguousarray(key_scales, np.float64), intmodel.lut_step(num_k),
                 float(num_k.lut_min), float(num_k.lut_max),
                 np.ascontiguousarray(np.asarray(key_codes).T, cdt), np.ascontiguousarray(vdec),
                 np.asarray(num_k.exp_rom, np.int64), num_k.lut_frac_bits, num_k.exp_bits,
                 sinks, recent, mx, sm, out)
    return mx, sm, out


@dataclass
class PQCache(Cache):
    """PQ cache with offline codebooks; float reference or the integer bank model."""

    keys: PQBooks
    values: PQBooks
    sinks: int = 4
    recent: int = 32
    integer: bool = False

    def _nums(self, dim: int, tokens: int) -> tuple[Numerics, Numerics]:
        cap = max(4096, tokens)
        nk = Numerics(head_dim=dim, subspaces=dim // self.keys.d, centroids=self.keys.centroids,
                      token_capacity=cap)
        nv = Numerics(head_dim=dim, subspaces=dim // self.values.d,
                      centroids=self.values.centroids, token_capacity=cap)
        return nk, nv

    def attend(self, layer: int, q, k, v):  # noqa: ANN001, ANN201
        import torch

        k16, v16 = self._fp16(k), self._fp16(v)
        if self.integer:
            return self._attend_int(layer, q, k16, v16)
        T = q.shape[1]
        khat = torch.empty_like(k16)
        vhat = torch.empty_like(v16)
        for h in range(k.shape[0]):
            for x, books, dst in ((k16, self.keys, khat), (v16, self.values, vhat)):
                cb = books.float[layer, h]
                xf = books.transform(layer, h)
                xh = x[h].double() if xf is None else x[h].double() @ xf[0]
                codes = fastpq.encode(xh.numpy(), cb)
                m = np.arange(cb.shape[0])[None, :]
                rec = torch.from_numpy(cb[m, codes].reshape(T, -1))
                # q . (k' A^-1) = (q A^-T) . k': the transformed scores, in the original basis.
                dst[h] = (rec if xf is None else rec @ xf[1]).float()
        mask = compressed_mask(T, self.sinks, self.recent)
        return self._mixed(q, k16, v16, khat, vhat, mask, mask)

    def _attend_int(self, layer: int, q, k16, v16):  # noqa: ANN001, ANN202
        import torch

        H, T, D = q.shape
        g = H // k16.shape[0]
        nk, nv = self._nums(D, T)
        out = torch.empty_like(q)
        for hk in range(k16.shape[0]):
            # Host writes int8 vectors; the bank encodes them against its int8 centroids.
            kb_i, ks = self.keys.ints[layer, hk], self.keys.scales[layer, hk]
            vb_i, vs = self.values.ints[layer, hk], self.values.scales[layer, hk]
            kx, vx = k16[hk].double().numpy(), v16[hk].double().numpy()
            # With a transform the host writes k A_k and v A_v (D^2 MACs per token), builds the
            # LUT from q A_k^-T and turns the bank's output back with A_v^-1 before the merge.
            kt, vt = self.keys.transform(layer, hk), self.values.transform(layer, hk)
            kw = kx if kt is None else (k16[hk].double() @ kt[0]).numpy()
            vw = vx if vt is None else (v16[hk].double() @ vt[0]).numpy()
            kc = fastpq.encode_int(intmodel.quantize(kw, ks, nk), kb_i)
            vc = fastpq.encode_int(intmodel.quantize(vw, vs, nv), vb_i)
            for hq in range(hk * g, (hk + 1) * g):
                qh = q[hq].double()
                qb = (qh if kt is None else qh @ kt[1].T).numpy()
                # The query's LUT (host, float64, intmodel.build_lut) is built in the kernel.
                mx, sm, po = bank_partials(qb, kb_i, ks, kc, vc, vb_i, nk,
                                           self.sinks, self.recent)
                merged = _merge(qh, kx, vx, self.sinks, self.recent, mx, sm, po, vs, nk, nv,
                                None if vt is None else vt[1])
                out[hq] = merged.float()
        return out


@numba.njit(parallel=True, cache=True)
def _merge_kernel(q, k, v, sinks, recent, bmax, bsum, bout, inv_sqrt_d, out):  # pragma: no cover
    """Per query: the FP16 tokens' partial (log2 units) merged with the bank partial."""
    T, D = q.shape
    for t in numba.prange(T):
        # FP16 tokens: sinks not in the window, then the window (t - recent, t].
        lo = max(t - recent + 1, 0)
        nfp = 0
        idx = np.empty(sinks + recent, np.int64)
        for s in range(min(sinks, lo)):
            idx[nfp] = s
            nfp += 1
        for s in range(lo, t + 1):
            idx[nfp] = s
            nfp += 1
        sc = np.empty(nfp)
        fmax = -np.inf
        for j in range(nfp):
            acc = 0.0
            for i in range(D):
                acc += q[t, i] * k[idx[j], i]
            sc[j] = acc * inv_sqrt_d
            fmax = max(fmax, sc[j])
        g = fmax
        if bsum[t] > 0.0:
            g = max(g, bmax[t])
        af = 2.0 ** (fmax - g)
        ab = 2.0 ** (bmax[t] - g) if bsum[t] > 0.0 else 0.0
        den = ab * bsum[t]
        for i in range(D):
            out[t, i] = ab * bout[t, i]
        for j in range(nfp):
            w = 2.0 ** (sc[j] - fmax) * af
            den += w
            for i in range(D):
                out[t, i] += w * v[idx[j], i]
        for i in range(D):
            out[t, i] /= den


def _merge(q, k, v, sinks, recent, mx, sm, po, vscale, nk: Numerics, nv: Numerics,  # noqa: ANN001, ANN202
           vinv=None):  # noqa: ANN001
    """Host merge of every query's bank partial with its FP16 tokens' partial, float64.

    The vectorized form of ``intmodel.float_partial`` + ``intmodel.host_merge`` (numba, one
    query per iteration): scores in log2 units, ``G = max(bank max, FP16 max)``,
    ``out = (a_b out_b + a_f out_f) / (a_b sum_b + a_f sum_f)``; an empty bank (sum 0) is
    skipped. Checked against intmodel per query in tests/test_llm.py.
    """
    import torch

    T, D = q.shape
    bmax = mx.astype(np.float64) / (1 << nk.lut_frac_bits)
    bsum = sm.astype(np.float64) / nv.weight_one
    bout = po.astype(np.float64) / nv.weight_one * np.repeat(vscale, nv.sub_dim)[None, :]
    if vinv is not None:  # the bank's output is sum w (v A_v); back to the value basis
        bout = (torch.from_numpy(bout) @ vinv).numpy()
    out = np.empty((T, D))
    _merge_kernel(np.ascontiguousarray(q.numpy()), np.ascontiguousarray(k),
                  np.ascontiguousarray(v), sinks, recent, bmax, bsum, bout,
                  LOG2E / math.sqrt(D), out)
    return torch.from_numpy(out)
