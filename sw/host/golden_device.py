"""Golden device: N bank-accurate PIM banks in NumPy, built on :mod:`aqpim.sw.golden.intmodel`.

Each :class:`GoldenBank` holds what the bank controller (``hw/bank.py``) holds - per head slot
the token count, the key and value codes, the K and V codebooks with a loaded mask per
subspace; the shared LUT, score scratch and partial-output registers, each tagged with the
head they belong to - and executes :mod:`aqpim.isa` commands with the same checks, in the same
order, and the same integer arithmetic (intmodel's encode, lut_accumulate, softmax_weights,
histogram, hist_times_centroids). A rejected command changes nothing. docs/isa.md is the
specification this file implements.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from aqpim.sw.golden import intmodel
from aqpim.sw.host.device import check_bank

from aqpim import isa
from aqpim.checks import check_int
from aqpim.geometry import Geometry
from aqpim.isa import Command, Flag, Opcode, Response, Status
from aqpim.numerics import Numerics

__all__ = ["GoldenBank", "GoldenDevice", "check_command"]

# opcodes whose head field must name an existing head slot
_USES_HEAD = {
    Opcode.LOAD_CB, Opcode.WRITE_KV, Opcode.LOAD_LUT, Opcode.SCORE, Opcode.AGGREGATE,
    Opcode.READ_PARTIAL, Opcode.READ_CODES, Opcode.READ_CB, Opcode.READ_LUT,
}
_USES_SUBSPACE = {Opcode.LOAD_CB, Opcode.READ_CB}


def _sign_extend(values: np.ndarray, bits: int) -> np.ndarray:
    """Low ``bits`` of each (unsigned) value, read as two's complement: the bank's view."""
    low = values & ((1 << bits) - 1)
    return np.where(low >= 1 << (bits - 1), low - (1 << bits), low)


@dataclass
class _Head:
    tokens: int
    codes: tuple[np.ndarray, np.ndarray]  # int64 (T_cap, M_k) key codes, (T_cap, M_v) values
    codebook: tuple[np.ndarray, np.ndarray]  # int64 (M_k, K_k, d_k), (M_v, K_v, d_v)
    mask: tuple[np.ndarray, np.ndarray]  # bool (M_k,), (M_v,): subspace loaded

    def all_loaded(self) -> bool:
        return bool(self.mask[0].all() and self.mask[1].all())


class GoldenBank:
    """One bank controller's state and command semantics.

    Parameters
    ----------
    geometry:
        Numerics and head slots of the bank.
    """

    def __init__(self, geometry: Geometry) -> None:
        if not isinstance(geometry, Geometry):
            raise TypeError(f"geometry must be a Geometry, got {type(geometry).__name__}")
        self._g = geometry
        self._reset()

    @property
    def geometry(self) -> Geometry:
        return self._g

    def _reset(self) -> None:
        n = self._g.num
        sides = (n.keys, n.values)
        self.heads = [
            _Head(
                tokens=0,
                codes=tuple(np.zeros((n.token_capacity, s.subspaces), dtype=np.int64)
                            for s in sides),
                codebook=tuple(np.zeros((s.subspaces, s.centroids, s.sub_dim), dtype=np.int64)
                               for s in sides),
                mask=tuple(np.zeros(s.subspaces, dtype=bool) for s in sides),
            )
            for _ in range(self._g.heads)
        ]
        # GQA: G query-head LUTs of one KV head (``lut_count`` loaded), scored in one pass
        self.lut = np.zeros((self._g.queries, n.subspaces, n.centroids), dtype=np.int64)
        self.lut_head: int | None = None
        self.lut_count = 0
        self.scores = np.zeros((0, 0), dtype=np.int64)  # (queries scored, tokens)
        self.scores_head: int | None = None
        self.partials: list[intmodel.BankPartial] = []  # one per query head scored
        self.partial_head: int | None = None

    # ------------------------------------------------------------------------------------------
    def flags(self, h: int) -> Flag:
        """READ_STATUS flags of head slot ``h``."""
        hd = self.heads[h]
        f = Flag(0)
        if hd.mask[0].all():
            f |= Flag.K_CODEBOOK
        if hd.mask[1].all():
            f |= Flag.V_CODEBOOK
        if self.lut_head == h:
            f |= Flag.LUT
        if self.scores_head == h:
            f |= Flag.SCORES
        if self.partial_head == h:
            f |= Flag.PARTIAL
        return f

    def state(self) -> dict[str, object]:
        """Everything a command can observe, as plain Python (to compare two devices)."""
        heads = []
        for h, hd in enumerate(self.heads):
            cols = [
                intmodel.pack_columns(hd.codes[kv][: hd.tokens], self._g.num.side(kv))
                for kv in (0, 1)
            ]
            heads.append({
                "tokens": hd.tokens,
                "flags": int(self.flags(h)),
                "mask": [m.tolist() for m in hd.mask],
                "codebook": [hd.codebook[kv][hd.mask[kv]].tolist() for kv in (0, 1)],
                "columns": cols,
            })
        return {
            "heads": heads,
            "lut": self.lut[:self.lut_count].tolist() if self.lut_head is not None else None,
            "lut_head": self.lut_head,
            "lut_count": self.lut_count,
            "scores_head": self.scores_head,
            "partial": [(p.max, p.sum, p.out.tolist()) for p in self.partials],
            "partial_head": self.partial_head,
        }

    # ------------------------------------------------------------------------------------------
    def execute(self, cmd: Command) -> Response:
        """Check ``cmd``; if accepted apply it. A rejected command changes nothing."""
        if not isinstance(cmd, Command):
            raise TypeError(f"expected a Command, got {type(cmd).__name__}")
        status = check_command(self, cmd)
        if status != Status.OK:
            return Response(status, int(cmd.opcode))
        return Response(Status.OK, int(cmd.opcode), tuple(self._apply(cmd)))

    def _apply(self, cmd: Command) -> list[int]:
        g, n = self._g, self._g.num
        op = cmd.opcode
        if op == Opcode.NOP:
            return []
        if op == Opcode.RESET:
            self._reset()
            return []
        if op == Opcode.READ_STATUS:
            out = []
            for h, hd in enumerate(self.heads):
                queries = self.lut_count if self.lut_head == h else 0
                out.append(hd.tokens | int(self.flags(h)) << 32 | queries << 40)
                for kv in (0, 1):
                    out.append(sum(1 << m for m in np.flatnonzero(hd.mask[kv]).tolist()))
            return out
        hd = self.heads[cmd.head]
        if op == Opcode.LOAD_CB:
            ns = n.side(cmd.kv)
            vals = self._elems(cmd.data, ns.centroids * ns.sub_dim, g.elem_width, n.elem_bits)
            hd.codebook[cmd.kv][cmd.subspace] = vals.reshape(ns.centroids, ns.sub_dim)
            hd.mask[cmd.kv][cmd.subspace] = True
            return []
        if op == Opcode.WRITE_KV:
            per_vec = g.vec_beats
            kx = []
            vx = []
            for t in range(cmd.count):
                base = t * g.token_beats
                kx.append(self._elems(cmd.data[base:base + per_vec], n.head_dim,
                                      g.elem_width, n.elem_bits))
                vx.append(self._elems(cmd.data[base + per_vec:base + 2 * per_vec], n.head_dim,
                                      g.elem_width, n.elem_bits))
            for kv, x in ((0, kx), (1, vx)):
                ns = n.side(kv)
                shape = (cmd.count, ns.subspaces, ns.sub_dim)
                codes = intmodel.encode(np.array(x).reshape(shape), hd.codebook[kv], ns)
                hd.codes[kv][cmd.addr:cmd.addr + cmd.count] = codes
            hd.tokens += cmd.count
            if self.scores_head == cmd.head:  # the scores no longer cover every token
                self.scores_head = None
            return []
        if op == Opcode.LOAD_LUT:
            vals = self._elems(cmd.data, n.subspaces * n.centroids, g.lut_width, n.lut_bits)
            q = cmd.subspace  # 0 starts a new set of query heads, q appends the q-th
            self.lut[q] = vals.reshape(n.subspaces, n.centroids)
            self.lut_head = cmd.head
            self.lut_count = q + 1
            self.scores_head = None  # the scratch holds scores of the previous query
            return []
        if op == Opcode.SCORE:
            codes = hd.codes[0][: hd.tokens]
            self.scores = np.stack([intmodel.lut_accumulate(self.lut[q], codes, n)
                                    for q in range(self.lut_count)])
            self.scores_head = cmd.head
            return []
        if op == Opcode.AGGREGATE:
            # one pass over the value codes: a histogram per query head's softmax weights
            self.partials = []
            for s in self.scores:
                mx, w = intmodel.softmax_weights(s, n)
                hist = intmodel.histogram(w, hd.codes[1][: hd.tokens], n)
                out = intmodel.hist_times_centroids(hist, hd.codebook[1], n)
                self.partials.append(intmodel.BankPartial(max=mx, sum=int(w.sum()), out=out))
            self.partial_head = cmd.head
            self.scores_head = None  # the attention pass pair consumes the scores
            return []
        if op == Opcode.READ_PARTIAL:
            p = self.partials[cmd.subspace]
            words = [p.max, p.sum, *p.out.tolist()]
            return isa.pack_values(words, isa.PARTIAL_WORD_BITS)
        if op == Opcode.READ_CODES:
            cols = intmodel.pack_columns(hd.codes[cmd.kv][: hd.tokens], n.side(cmd.kv))
            return cols[cmd.addr:cmd.addr + cmd.count]
        if op == Opcode.READ_CB:
            vals = hd.codebook[cmd.kv][cmd.subspace].reshape(-1).tolist()
            return isa.pack_values(vals, g.elem_width)
        if op == Opcode.READ_LUT:
            return isa.pack_values(self.lut[cmd.subspace].reshape(-1).tolist(), g.lut_width)
        raise AssertionError(f"unhandled opcode {op!r}")  # check_command rejects the rest

    @staticmethod
    def _elems(beats: Sequence[int], count: int, width: int, bits: int) -> np.ndarray:
        raw = np.array(isa.unpack_values(beats, width, count, signed=False), dtype=np.int64)
        return _sign_extend(raw, bits)


def check_command(bank: GoldenBank, cmd: Command) -> Status:
    """The status a bank gives ``cmd`` in its current state (the checks of docs/isa.md).

    Order: opcode; head and subspace fields; length and count; token index or column;
    capacity; codebook; LUT; scores; partial.
    """
    g = bank.geometry
    n: Numerics = g.num
    op = cmd.opcode
    if not isinstance(op, Opcode):
        return Status.BAD_OPCODE
    if op in _USES_HEAD and cmd.head >= g.heads:
        return Status.ADDR_RANGE
    if op in _USES_SUBSPACE and cmd.subspace >= n.side(cmd.kv).subspaces:
        return Status.ADDR_RANGE
    if op in isa.QUERY_OPCODES and cmd.subspace >= g.queries:  # the query-head index
        return Status.ADDR_RANGE
    expected = {
        Opcode.LOAD_CB: g.side(cmd.kv).cb_beats,
        Opcode.LOAD_LUT: g.lut_beats,
        Opcode.WRITE_KV: cmd.count * g.token_beats,
    }.get(op, 0)
    if cmd.length != expected:
        return Status.BAD_LENGTH
    if op in (Opcode.WRITE_KV, Opcode.READ_CODES) and cmd.count == 0:
        return Status.BAD_LENGTH
    if op == Opcode.LOAD_LUT and cmd.subspace and (bank.lut_head != cmd.head
                                                   or cmd.subspace != bank.lut_count):
        return Status.ADDR_RANGE  # query heads load in order: 0 starts a set, q appends
    if op == Opcode.WRITE_KV:
        hd = bank.heads[cmd.head]
        if cmd.addr != hd.tokens:  # append-only: the next token slot of the head
            return Status.ADDR_RANGE
        if cmd.addr + cmd.count > n.token_capacity:
            return Status.CAPACITY
        if not hd.all_loaded():
            return Status.NO_CODEBOOK
    if op == Opcode.READ_CODES:
        used = g.used_columns(bank.heads[cmd.head].tokens, cmd.kv)
        if cmd.addr + cmd.count > used:
            return Status.ADDR_RANGE
    if op == Opcode.READ_CB and not bank.heads[cmd.head].mask[cmd.kv][cmd.subspace]:
        return Status.NO_CODEBOOK
    if op == Opcode.AGGREGATE and not bank.heads[cmd.head].mask[1].all():
        return Status.NO_CODEBOOK
    if op in (Opcode.SCORE, Opcode.READ_LUT) and bank.lut_head != cmd.head:
        return Status.NO_LUT
    if op == Opcode.READ_LUT and cmd.subspace >= bank.lut_count:
        return Status.NO_LUT
    if op == Opcode.AGGREGATE and bank.scores_head != cmd.head:
        return Status.NO_SCORES
    if op == Opcode.READ_PARTIAL and (bank.partial_head != cmd.head
                                      or cmd.subspace >= len(bank.partials)):
        return Status.NO_PARTIAL
    return Status.OK


class GoldenDevice:
    """``num_banks`` golden banks behind the :class:`aqpim.sw.host.device.Device` interface.

    Parameters
    ----------
    geometry:
        Numerics and head slots shared by every bank.
    num_banks:
        Banks of the device (>= 1).
    """

    def __init__(self, geometry: Geometry, num_banks: int) -> None:
        num_banks = check_int("num_banks", num_banks, 1)
        self._banks = [GoldenBank(geometry) for _ in range(num_banks)]
        self._g = geometry

    @property
    def geometry(self) -> Geometry:
        return self._g

    @property
    def num_banks(self) -> int:
        return len(self._banks)

    @property
    def banks(self) -> list[GoldenBank]:
        return list(self._banks)

    @property
    def last_cycles(self) -> None:
        """The golden model counts no cycles."""
        return None

    @property
    def last_batch_cycles(self) -> None:
        return None

    def execute(self, bank: int | None, cmd: Command) -> list[Response]:
        check_bank(bank, self.num_banks)
        targets = self._banks if bank is None else [self._banks[bank]]
        return [b.execute(cmd) for b in targets]

    def execute_batch(
        self, items: Sequence[tuple[int | None, Command]]
    ) -> list[list[Response]]:
        return [self.execute(bank, cmd) for bank, cmd in items]
