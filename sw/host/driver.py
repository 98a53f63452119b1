"""Host driver: runs PQ attention for several KV heads on a PIM device.

The driver owns the host's half of the dataflow (docs/driver.md):

* **Mapping.** The device has ``num_banks`` banks with ``geometry.heads`` head slots each. The
  (bank, slot) places are enumerated slot-major - ``(0, 0), (1, 0), ..., (B-1, 0), (0, 1),
  ...`` - and cut into ``kv_heads`` equal groups: KV head ``h`` owns group ``h``. Tokens of a
  head are spread round-robin over its places (token ``t`` -> place ``t % G``), so every bank
  of a head holds within one token of the same count. Bank ``b`` sits in channel
  ``b // banks_per_channel``.
* **Prefill.** Per head: train K and V codebooks on the prompt (:func:`aqpim.sw.golden.pq.
  train_codebooks`), pick per-subspace scales (:func:`aqpim.sw.golden.intmodel.subspace_scales`),
  quantize the centroids and the tokens to the W-bit format, load the codebooks into every
  place of the head and write the tokens (the banks encode them in place).
* **Decode step.** Per head: quantize and append the new token, build the query LUT
  (:func:`aqpim.sw.golden.intmodel.build_lut`), load it into the head's banks (one all-bank
  broadcast
  when the head owns a whole slot of every bank), SCORE, AGGREGATE, READ_PARTIAL on each
  place, then :func:`aqpim.sw.golden.intmodel.host_merge`.
* **Sinks and recent window** (``sinks``, ``recent``; 0 and 0 by default). The first ``sinks``
  tokens and the last ``recent`` tokens of each head stay on the host in FP16 and never reach
  the device. A new token enters the recent window; the oldest one leaves it and is written
  and encoded in the banks (the normal WRITE_KV path, from its FP16 copy). Decode merges the
  device partials with the host tokens' :func:`aqpim.sw.golden.intmodel.float_partial` through
  ``host_merge(extra=...)``. Codebooks and scales are trained on the prompt's tokens after the
  sinks (the ones that are, or will be, banked; all tokens when fewer than K).

All input checks run before the first command is sent: a bad shape, dtype, NaN, an
over-capacity append or a bad configuration raises ValueError/TypeError and the device sees
nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from aqpim.sw.golden import intmodel, pq
from aqpim.sw.host.device import Device

from aqpim import isa
from aqpim.geometry import Geometry
from aqpim.isa import Command, Response, Status

__all__ = [
    "Driver", "DeviceError", "HeadState", "quantize_codebook", "head_places", "split_round_robin",
]


class DeviceError(RuntimeError):
    """A device rejected a command the driver believed valid."""

    def __init__(self, bank: int | None, cmd: Command, status: Status) -> None:
        super().__init__(f"bank {bank} rejected {cmd!r} with {status.name}")
        self.bank = bank
        self.cmd = cmd
        self.status = status


@dataclass
class HeadState:
    """What the host keeps per KV head: codebooks, scales and where the tokens are."""

    places: list[tuple[int, int]]  # (bank, slot) per place, in token round-robin order
    key_codebook: np.ndarray  # int64 (M, K, d), as loaded into the banks
    value_codebook: np.ndarray
    key_scales: np.ndarray  # float64 (M,)
    value_scales: np.ndarray
    tokens: int = 0  # tokens written to the device so far (all places together)
    # Host-kept tokens, stored as FP16 as a real host would: sinks, then the recent window
    # (oldest first). Float codebooks as trained, for references.
    sink_k: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float16))
    sink_v: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float16))
    recent_k: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float16))
    recent_v: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float16))
    key_codebook_float: np.ndarray | None = None
    value_codebook_float: np.ndarray | None = None

    @property
    def host_tokens(self) -> int:
        """Tokens kept on the host (sinks and recent window)."""
        return self.sink_k.shape[0] + self.recent_k.shape[0]

    @property
    def total_tokens(self) -> int:
        """Every token of the head: on the device and on the host."""
        return self.tokens + self.host_tokens

    def host_kv(self) -> tuple[np.ndarray, np.ndarray]:
        """The host-kept keys and values as float64 (sinks first, then the window)."""
        k = np.concatenate([self.sink_k, self.recent_k]).astype(np.float64)
        v = np.concatenate([self.sink_v, self.recent_v]).astype(np.float64)
        return k, v

    def place_tokens(self, place: int) -> int:
        """Tokens stored at place index ``place``."""
        g = len(self.places)
        return self.tokens // g + (1 if place < self.tokens % g else 0)


def quantize_codebook(
    codebook: np.ndarray, scales: np.ndarray, num: intmodel.Numerics
) -> np.ndarray:
    """Float centroids (M, K, d) to the bank's W-bit integers with the head's subspace scales."""
    m, k, d = codebook.shape
    flat = codebook.transpose(1, 0, 2).reshape(k, m * d)  # one "vector" per centroid index
    return intmodel.quantize(flat, scales, num).transpose(1, 0, 2).copy()


def head_places(
    kv_heads: int, num_banks: int, slots: int
) -> list[list[tuple[int, int]]]:
    """The (bank, slot) places of each KV head (slot-major enumeration, equal groups)."""
    total = num_banks * slots
    if kv_heads < 1 or total % kv_heads:
        raise ValueError(
            f"kv_heads {kv_heads} must divide banks x head slots = {num_banks} x {slots} = {total}"
        )
    places = [(b, s) for s in range(slots) for b in range(num_banks)]
    size = total // kv_heads
    return [places[h * size:(h + 1) * size] for h in range(kv_heads)]


def _float_input(name: str, x: object, shape: tuple[int, ...]) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if x.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {x.shape}")
    if not np.all(np.isfinite(x)):
        bad = tuple(np.argwhere(~np.isfinite(x))[0])
        raise ValueError(f"{name} has a non-finite value {x[bad]} at index {bad}")
    return x.astype(np.float64)


FP16_MAX = float(np.finfo(np.float16).max)


def _check_fp16(name: str, x: np.ndarray) -> None:
    """Host-kept tokens are stored as FP16: a value beyond its range would become inf."""
    big = np.abs(x) > FP16_MAX
    if np.any(big):
        bad = tuple(int(i) for i in np.argwhere(big)[0])
        raise ValueError(f"{name} has {x[bad]} at index {bad}, beyond the FP16 range the host "
                         "keeps sinks and the recent window in")


class Driver:
    """PQ attention for ``kv_heads`` heads on a :class:`aqpim.sw.host.device.Device`.

    Parameters
    ----------
    device:
        The banks (golden, RTL, or a recorder around either).
    kv_heads:
        KV heads to place; must divide ``num_banks * geometry.heads``.
    banks_per_channel:
        Banks per (pseudo-)channel, for :meth:`mapping` only (HBM3: 16 per pseudo-channel).
    iters, seed:
        k-means iterations and seed for codebook training at prefill.
    sinks, recent:
        Tokens per head kept on the host in FP16: the first ``sinks`` and the last ``recent``
        (default 0 and 0: every token goes to the device).
    """

    def __init__(
        self,
        device: Device,
        *,
        kv_heads: int,
        banks_per_channel: int = 16,
        iters: int = 25,
        seed: int = 0,
        sinks: int = 0,
        recent: int = 0,
    ) -> None:
        for name, value in (("kv_heads", kv_heads), ("banks_per_channel", banks_per_channel),
                            ("iters", iters), ("seed", seed), ("sinks", sinks),
                            ("recent", recent)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {value!r}")
        for name, value in (("sinks", sinks), ("recent", recent)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if banks_per_channel < 1:
            raise ValueError(f"banks_per_channel must be >= 1, got {banks_per_channel}")
        if iters < 0:
            raise ValueError(f"iters must be >= 0, got {iters}")
        if not isinstance(device.geometry, Geometry):
            raise TypeError("device.geometry must be an aqpim.geometry.Geometry")
        self._dev = device
        self._g = device.geometry
        self._places = head_places(kv_heads, device.num_banks, self._g.heads)
        self._kv_heads = kv_heads
        self._bpc = banks_per_channel
        self._iters = iters
        self._seed = seed
        self._sinks = sinks
        self._recent = recent
        self._heads: list[HeadState] | None = None

    # ------------------------------------------------------------------------------------------
    @property
    def num(self) -> intmodel.Numerics:
        return self._g.num

    @property
    def kv_heads(self) -> int:
        return self._kv_heads

    @property
    def sinks(self) -> int:
        """Leading tokens per head kept on the host in FP16."""
        return self._sinks

    @property
    def recent(self) -> int:
        """Trailing tokens per head (the recent window) kept on the host in FP16."""
        return self._recent

    @property
    def heads(self) -> list[HeadState]:
        if self._heads is None:
            raise RuntimeError("no prefill yet")
        return self._heads

    @property
    def capacity(self) -> int:
        """Most tokens one head can hold (its places x the bank's token capacity)."""
        return len(self._places[0]) * self.num.token_capacity

    def mapping(self) -> list[dict[str, object]]:
        """Per KV head: its (channel, bank, slot) places."""
        return [
            {"head": h, "places": [
                {"channel": b // self._bpc, "bank": b, "slot": s} for b, s in places
            ]}
            for h, places in enumerate(self._places)
        ]

    # ------------------------------------------------------------------------------------------
    def _send(self, items: list[tuple[int | None, Command]]) -> list[list[Response]]:
        results = self._dev.execute_batch(items)
        for (bank, cmd), resps in zip(items, results, strict=True):
            for r in resps:
                if r.status != Status.OK:
                    raise DeviceError(bank, cmd, r.status)
        return results

    def reset(self) -> None:
        """RESET every bank and forget the prefill."""
        self._send([(None, isa.reset())])
        self._heads = None

    def prefill(self, k: np.ndarray, v: np.ndarray) -> None:
        """Train codebooks on the prompt and write + encode its tokens.

        Tokens ``[0, sinks)`` and ``[T - recent, T)`` (where they do not overlap the sinks)
        stay on the host in FP16; the rest go to the device.

        Parameters
        ----------
        k, v:
            float (kv_heads, T, D), finite; T >= K (k-means needs K points); the tokens that
            go to the device within :attr:`capacity`; host-kept values within FP16 range.
        """
        n = self.num
        if not isinstance(k, np.ndarray):
            raise TypeError(f"k must be a numpy array, got {type(k).__name__}")
        if k.ndim != 3:
            raise ValueError(f"k must have shape (kv_heads, T, D), got {k.shape}")
        t = k.shape[1]
        shape = (self._kv_heads, t, n.head_dim)
        k = _float_input("k", k, shape)
        v = _float_input("v", v, shape)
        kmax = max(n.centroids, n.values.centroids)
        if t < kmax:
            raise ValueError(f"prefill needs at least K = {kmax} tokens, got {t}")
        first, last = self.prefill_split(t)  # device tokens: [first, last)
        if last - first > self.capacity:
            raise ValueError(f"{last - first} tokens exceed the per-head capacity "
                             f"{self.capacity}")
        if self._heads is not None:
            raise RuntimeError("prefill already done; call reset() first")
        host = np.r_[0:first, last:t]
        _check_fp16("k (host-kept tokens)", k[:, host])
        _check_fp16("v (host-kept tokens)", v[:, host])
        # Everything that can fail on the host runs before the first command goes out.
        heads: list[HeadState] = []
        for h in range(self._kv_heads):
            # Train on the tokens that are or will be banked (sinks never are), when enough.
            tk, tv = (k[h, first:], v[h, first:]) if t - first >= kmax else (k[h], v[h])
            nk, nv = n.keys, n.values  # keys (M_k, K_k), values (M_v, K_v)
            ks = intmodel.subspace_scales(tk, nk)
            vs = intmodel.subspace_scales(tv, nv)
            kcb = pq.train_codebooks(tk, subspaces=nk.subspaces, centroids=nk.centroids,
                                     iters=self._iters, seed=self._seed)
            vcb = pq.train_codebooks(tv, subspaces=nv.subspaces, centroids=nv.centroids,
                                     iters=self._iters, seed=self._seed)
            heads.append(HeadState(
                places=self._places[h],
                key_codebook=quantize_codebook(kcb, ks, nk),
                value_codebook=quantize_codebook(vcb, vs, nv),
                key_scales=ks, value_scales=vs,
                sink_k=k[h, :first].astype(np.float16), sink_v=v[h, :first].astype(np.float16),
                recent_k=k[h, last:].astype(np.float16), recent_v=v[h, last:].astype(np.float16),
                key_codebook_float=kcb, value_codebook_float=vcb,
            ))
        items: list[tuple[int | None, Command]] = []
        for h, hs in enumerate(heads):
            items += self._codebook_commands(hs)
            items += self._write_commands(hs, k[h, first:last], v[h, first:last])
            hs.tokens = last - first
        self._send(items)
        self._heads = heads

    def prefill_split(self, tokens: int) -> tuple[int, int]:
        """Device tokens ``[first, last)`` of a ``tokens``-long prompt; the rest stay on the host.

        ``first = min(sinks, tokens)``, ``last = max(first, tokens - recent)``.
        """
        first = min(self._sinks, tokens)
        return first, max(first, tokens - self._recent)

    def _codebook_commands(self, hs: HeadState) -> list[tuple[int | None, Command]]:
        n = self.num
        items: list[tuple[int | None, Command]] = []
        for bank, slot in hs.places:
            for kv, cb in ((0, hs.key_codebook), (1, hs.value_codebook)):
                for m in range(n.side(kv).subspaces):
                    items.append((bank, isa.load_cb(self._g, head=slot, kv=kv, subspace=m,
                                                    centroids=cb[m].reshape(-1).tolist())))
        return items

    def _write_commands(
        self, hs: HeadState, k: np.ndarray, v: np.ndarray
    ) -> list[tuple[int | None, Command]]:
        """WRITE_KV for tokens ``hs.tokens ...`` (does not advance ``hs.tokens``)."""
        n = self.num
        kq = intmodel.quantize(k, hs.key_scales, n.keys).reshape(k.shape[0], n.head_dim)
        vq = intmodel.quantize(v, hs.value_scales, n.values).reshape(v.shape[0], n.head_dim)
        g = len(hs.places)
        items: list[tuple[int | None, Command]] = []
        for p, (bank, slot) in enumerate(hs.places):
            first = (p - hs.tokens) % g  # first new token index (relative) that lands on p
            idx = np.arange(first, k.shape[0], g)
            start = hs.place_tokens(p)
            step = self._g.max_tokens_per_write
            for c in range(0, idx.size, step):
                sel = idx[c:c + step]
                items.append((bank, isa.write_kv(
                    self._g, head=slot, token=start + c,
                    keys=kq[sel].tolist(), values=vq[sel].tolist(),
                )))
        return items

    # ------------------------------------------------------------------------------------------
    def step(
        self, q: np.ndarray, k_new: np.ndarray | None = None, v_new: np.ndarray | None = None
    ) -> np.ndarray:
        """One decode step: append (k_new, v_new) if given, then attend with q.

        A new token becomes a sink while there are fewer than ``sinks``; otherwise it enters
        the recent window, whose oldest token (if the window overflows) is written to the
        device from its FP16 copy. With ``recent == 0`` it goes to the device directly.

        Parameters
        ----------
        q:
            float (kv_heads, D) queries (one per KV head), or (kv_heads, Q, D): Q query heads
            per KV head (GQA). The banks score ``Geometry.queries`` (G) query heads per pass
            over the key codes; a larger group takes ``ceil(Q / G)`` passes.
        k_new, v_new:
            float (kv_heads, D) the new token's key and value, or both None.

        Returns
        -------
        float64 (kv_heads, D), or (kv_heads, Q, D) for grouped queries: the attention output.
        """
        heads = self.heads
        n = self.num
        shape = (self._kv_heads, n.head_dim)
        grouped = isinstance(q, np.ndarray) and q.ndim == 3
        if grouped:
            if q.shape[1] < 1:
                raise ValueError(f"q must have at least one query head per KV head, got {q.shape}")
            q = _float_input("q", q, (self._kv_heads, q.shape[1], n.head_dim))
        else:
            q = _float_input("q", q, shape)[:, None]
        if (k_new is None) != (v_new is None):
            raise ValueError("give both k_new and v_new, or neither")
        items: list[tuple[int | None, Command]] = []
        if k_new is not None:
            k_new = _float_input("k_new", k_new, shape)
            v_new = _float_input("v_new", v_new, shape)
            if self._sinks or self._recent:
                _check_fp16("k_new", k_new)
                _check_fp16("v_new", v_new)
            # Where each head's new token goes, decided (and checked) before any state changes.
            plans = [self._plan(hs) for hs in heads]
            if any(p in ("device", "evict") and hs.tokens + 1 > self.capacity
                   for hs, p in zip(heads, plans, strict=True)):
                raise ValueError(
                    f"appending a token exceeds the per-head capacity {self.capacity}"
                )
            for h, (hs, plan) in enumerate(zip(heads, plans, strict=True)):
                if plan == "device":
                    items += self._write_commands(hs, k_new[h:h + 1], v_new[h:h + 1])
                elif plan == "evict":  # the window's oldest token, from its FP16 copy
                    items += self._write_commands(hs, hs.recent_k[:1].astype(np.float64),
                                                  hs.recent_v[:1].astype(np.float64))
        luts = [[intmodel.build_lut(qi, hs.key_codebook, hs.key_scales, n) for qi in q[h]]
                for h, hs in enumerate(heads)]
        if k_new is not None:
            for h, (hs, plan) in enumerate(zip(heads, plans, strict=True)):
                kh, vh = k_new[h:h + 1].astype(np.float16), v_new[h:h + 1].astype(np.float16)
                if plan == "sink":
                    hs.sink_k = np.concatenate([hs.sink_k, kh])
                    hs.sink_v = np.concatenate([hs.sink_v, vh])
                    continue
                if plan != "device":
                    hs.recent_k = np.concatenate([hs.recent_k, kh])
                    hs.recent_v = np.concatenate([hs.recent_v, vh])
                if plan == "evict":
                    hs.recent_k, hs.recent_v = hs.recent_k[1:], hs.recent_v[1:]
                if plan != "window":
                    hs.tokens += 1
        # Heads sharing a bank share its LUT and scratch: finish one head before the next.
        # Per head, passes of G query heads: G LUTs, one SCORE / AGGREGATE, G partials.
        nq, per_pass = q.shape[1], self._g.queries
        reads: list[tuple[int, int, int]] = []  # (head, query, index into items)
        for h, hs in enumerate(heads):
            if hs.tokens == 0:  # every token on the host: nothing to ask the banks
                continue
            lut_cmd_slots = {s for _, s in hs.places}
            banks = [b for b, _ in hs.places]
            whole = len(lut_cmd_slots) == 1 and sorted(banks) == list(range(self._dev.num_banks))
            for first in range(0, nq, per_pass):
                group = range(first, min(first + per_pass, nq))
                for j, i in enumerate(group):
                    lut = luts[h][i].reshape(-1).tolist()
                    if whole:  # the head owns one slot of every bank: one all-bank write
                        items.append((None, isa.load_lut(self._g, head=hs.places[0][1], lut=lut,
                                                         query=j)))
                    else:
                        items += [(b, isa.load_lut(self._g, head=s, lut=lut, query=j))
                                  for b, s in hs.places]
                for b, s in hs.places:
                    items.append((b, isa.score(head=s)))
                    items.append((b, isa.aggregate(head=s)))
                    for j, i in enumerate(group):
                        reads.append((h, i, len(items)))
                        items.append((b, isa.read_partial(head=s, query=j)))
        results = self._send(items)
        partials: list[list[list[intmodel.BankPartial]]] = [[[] for _ in range(nq)]
                                                            for _ in heads]
        for h, i, idx in reads:
            mx, sm, out = isa.decode_partial(self._g, results[idx][0])
            partials[h][i].append(intmodel.BankPartial(max=mx, sum=sm, out=np.array(out)))
        out = np.stack([
            np.stack([intmodel.host_merge(partials[h][i], hs.value_scales, n,
                                          intmodel.float_partial(q[h, i], *hs.host_kv()))
                      for i in range(nq)])
            for h, hs in enumerate(heads)
        ])
        return out if grouped else out[:, 0]

    def _plan(self, hs: HeadState) -> str:
        """Where a new token of head ``hs`` goes: "sink", "window" (the window has room),
        "evict" (into the window, its oldest token to the device) or "device"."""
        if hs.sink_k.shape[0] < self._sinks:
            return "sink"
        if self._recent == 0:
            return "device"
        return "evict" if hs.recent_k.shape[0] >= self._recent else "window"


def split_round_robin(x: np.ndarray, groups: int) -> Sequence[np.ndarray]:
    """Tokens (T, ...) of one head as the driver places them: group ``p`` gets ``t % G == p``."""
    return [x[p::groups] for p in range(groups)]
