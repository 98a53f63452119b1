"""Host driver: runs PQ attention for several KV heads on a PIM device.

The driver owns the host's half of the dataflow (docs/driver.md):

* **Mapping.** The device has ``num_banks`` banks with ``geometry.heads`` head slots each. The
  (bank, slot) places are enumerated slot-major - ``(0, 0), (1, 0), ..., (B-1, 0), (0, 1),
  ...`` - and cut into ``kv_heads`` equal groups: KV head ``h`` owns group ``h``. Tokens of a
  head are spread round-robin over its places (token ``t`` -> place ``t % G``), so every bank
  of a head holds within one token of the same count. Bank ``b`` sits in channel
  ``b // banks_per_channel``.
* **Prefill.** Per head: train K and V codebooks on the prompt (:func:`aqpim.sw.pq.
  train_codebooks`), pick per-subspace scales (:func:`aqpim.sw.intmodel.subspace_scales`),
  quantize the centroids and the tokens to the W-bit format, load the codebooks into every
  place of the head and write the tokens (the banks encode them in place).
* **Decode step.** Per head: quantize and append the new token, build the query LUT
  (:func:`aqpim.sw.intmodel.build_lut`), load it into the head's banks (one all-bank broadcast
  when the head owns a whole slot of every bank), SCORE, AGGREGATE, READ_PARTIAL on each
  place, then :func:`aqpim.sw.intmodel.host_merge`.

All input checks run before the first command is sent: a bad shape, dtype, NaN, an
over-capacity append or a bad configuration raises ValueError/TypeError and the device sees
nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from aqpim.sw import intmodel, pq
from aqpim.sw.device import Device

from aqpim import isa
from aqpim.isa import Command, Geometry, Response, Status

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
    tokens: int = 0  # tokens written so far (all places together)

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


class Driver:
    """PQ attention for ``kv_heads`` heads on a :class:`aqpim.sw.device.Device`.

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
    """

    def __init__(
        self,
        device: Device,
        *,
        kv_heads: int,
        banks_per_channel: int = 16,
        iters: int = 25,
        seed: int = 0,
    ) -> None:
        for name, value in (("kv_heads", kv_heads), ("banks_per_channel", banks_per_channel),
                            ("iters", iters), ("seed", seed)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {value!r}")
        if banks_per_channel < 1:
            raise ValueError(f"banks_per_channel must be >= 1, got {banks_per_channel}")
        if iters < 0:
            raise ValueError(f"iters must be >= 0, got {iters}")
        if not isinstance(device.geometry, Geometry):
            raise TypeError("device.geometry must be an aqpim.isa.Geometry")
        self._dev = device
        self._g = device.geometry
        self._places = head_places(kv_heads, device.num_banks, self._g.heads)
        self._kv_heads = kv_heads
        self._bpc = banks_per_channel
        self._iters = iters
        self._seed = seed
        self._heads: list[HeadState] | None = None

    # ------------------------------------------------------------------------------------------
    @property
    def num(self) -> intmodel.Numerics:
        return self._g.num

    @property
    def kv_heads(self) -> int:
        return self._kv_heads

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

        Parameters
        ----------
        k, v:
            float (kv_heads, T, D), finite; T >= K (k-means needs K points) and T within
            :attr:`capacity`.
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
        if t < n.centroids:
            raise ValueError(f"prefill needs at least K = {n.centroids} tokens, got {t}")
        if t > self.capacity:
            raise ValueError(f"{t} tokens exceed the per-head capacity {self.capacity}")
        if self._heads is not None:
            raise RuntimeError("prefill already done; call reset() first")
        # Everything that can fail on the host runs before the first command goes out.
        heads: list[HeadState] = []
        for h in range(self._kv_heads):
            ks = intmodel.subspace_scales(k[h], n)
            vs = intmodel.subspace_scales(v[h], n)
            kcb = pq.train_codebooks(k[h], subspaces=n.subspaces, centroids=n.centroids,
                                     iters=self._iters, seed=self._seed)
            vcb = pq.train_codebooks(v[h], subspaces=n.subspaces, centroids=n.centroids,
                                     iters=self._iters, seed=self._seed)
            heads.append(HeadState(
                places=self._places[h],
                key_codebook=quantize_codebook(kcb, ks, n),
                value_codebook=quantize_codebook(vcb, vs, n),
                key_scales=ks, value_scales=vs,
            ))
        items: list[tuple[int | None, Command]] = []
        for h, hs in enumerate(heads):
            items += self._codebook_commands(hs)
            items += self._write_commands(hs, k[h], v[h])
            hs.tokens = t
        self._send(items)
        self._heads = heads

    def _codebook_commands(self, hs: HeadState) -> list[tuple[int | None, Command]]:
        n = self.num
        items: list[tuple[int | None, Command]] = []
        for bank, slot in hs.places:
            for kv, cb in ((0, hs.key_codebook), (1, hs.value_codebook)):
                for m in range(n.subspaces):
                    items.append((bank, isa.load_cb(self._g, head=slot, kv=kv, subspace=m,
                                                    centroids=cb[m].reshape(-1).tolist())))
        return items

    def _write_commands(
        self, hs: HeadState, k: np.ndarray, v: np.ndarray
    ) -> list[tuple[int | None, Command]]:
        """WRITE_KV for tokens ``hs.tokens ...`` (does not advance ``hs.tokens``)."""
        n = self.num
        kq = intmodel.quantize(k, hs.key_scales, n).reshape(k.shape[0], n.head_dim)
        vq = intmodel.quantize(v, hs.value_scales, n).reshape(v.shape[0], n.head_dim)
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

        Parameters
        ----------
        q:
            float (kv_heads, D) queries (one per KV head).
        k_new, v_new:
            float (kv_heads, D) the new token's key and value, or both None.

        Returns
        -------
        float64 (kv_heads, D): the attention output of every head.
        """
        heads = self.heads
        n = self.num
        shape = (self._kv_heads, n.head_dim)
        q = _float_input("q", q, shape)
        if (k_new is None) != (v_new is None):
            raise ValueError("give both k_new and v_new, or neither")
        items: list[tuple[int | None, Command]] = []
        if k_new is not None:
            k_new = _float_input("k_new", k_new, shape)
            v_new = _float_input("v_new", v_new, shape)
            for hs in heads:
                if hs.tokens + 1 > self.capacity:
                    raise ValueError(
                        f"appending a token exceeds the per-head capacity {self.capacity}"
                    )
            for h, hs in enumerate(heads):
                items += self._write_commands(hs, k_new[h:h + 1], v_new[h:h + 1])
        luts = [intmodel.build_lut(q[h], hs.key_codebook, hs.key_scales, n)
                for h, hs in enumerate(heads)]
        if k_new is not None:
            for hs in heads:
                hs.tokens += 1
        # Heads sharing a bank share its LUT and scratch: finish one head before the next.
        reads: list[tuple[int, int]] = []  # (head, index into items) of each READ_PARTIAL
        for h, hs in enumerate(heads):
            lut_cmd_slots = {s for _, s in hs.places}
            banks = [b for b, _ in hs.places]
            whole = len(lut_cmd_slots) == 1 and sorted(banks) == list(range(self._dev.num_banks))
            lut = luts[h].reshape(-1).tolist()
            if whole:  # the head owns one slot of every bank: one all-bank write
                items.append((None, isa.load_lut(self._g, head=hs.places[0][1], lut=lut)))
            else:
                items += [(b, isa.load_lut(self._g, head=s, lut=lut)) for b, s in hs.places]
            for b, s in hs.places:
                items.append((b, isa.score(head=s)))
                items.append((b, isa.aggregate(head=s)))
                reads.append((h, len(items)))
                items.append((b, isa.read_partial(head=s)))
        results = self._send(items)
        partials: list[list[intmodel.BankPartial]] = [[] for _ in heads]
        for h, i in reads:
            mx, sm, out = isa.decode_partial(self._g, results[i][0])
            partials[h].append(intmodel.BankPartial(max=mx, sum=sm, out=np.array(out)))
        return np.stack([
            intmodel.host_merge(partials[h], hs.value_scales, n) for h, hs in enumerate(heads)
        ])


def split_round_robin(x: np.ndarray, groups: int) -> Sequence[np.ndarray]:
    """Tokens (T, ...) of one head as the driver places them: group ``p`` gets ``t % G == p``."""
    return [x[p::groups] for p in range(groups)]
