"""Exact squared L2 distance between two signed sub-vectors, combinational or pipelined.

``dist = sum_i (a[i] - b[i])^2`` over ``sub_dim`` elements of ``elem_bits``-bit signed values.
Each difference needs ``elem_bits + 1`` signed bits, each square at most ``(2^W - 1)^2``, so the
sum fits in ``Numerics.dist_bits = bits(d * (2^W - 1)^2)`` unsigned bits: the output is exact for
every input in range (no truncation of a value that can occur).

Combinational (``pipelined=False``): latency 0, the caller registers the output. Pipelined: a
register after the absolute differences ``|a[i] - b[i]|`` (W unsigned bits each), then the
d x W partial-product rows of the squares reduced in carry-save form
(:mod:`aqpim.hw.carry_save`) in groups of at most 9 rows (4 compressor levels) per registered
stage until at most 6 vectors remain (:func:`aqpim.numerics.distance_latency`); those are
compressed and added on the output (the caller registers it). Every
stage then holds one adder or one 9-row tree, within the 20 gate levels of tCK x 2
(docs/silicon.md). :attr:`SquaredDistance.latency` cycles (2 for d <= 2 at W = 8, 3 for
d = 4 and 8), one pair per cycle, all stages advanced by ``en``.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from aqpim.checks import check_int

# one formula for the RTL and the contract
from aqpim.numerics import DIST_ROWS_PER_STAGE, dist_bits, distance_latency

from . import carry_save

__all__ = ["SquaredDistance", "dist_bits"]

def _groups(rows: int) -> int:
    return -(-rows // DIST_ROWS_PER_STAGE)


class SquaredDistance(wiring.Component):
    """``dist = ||a - b||^2``, exact, combinational.

    Parameters
    ----------
    sub_dim:
        d, elements per sub-vector (1..64).
    elem_bits:
        W, signed element width (2..32).
    pipelined:
        Registered stages (see the module docstring) instead of one combinational path.

    Ports
    -----
    a, b: In(ArrayLayout(signed(W), d))
    en: In(1)
        Advance the pipeline (ignored when not pipelined).
    dist: Out(unsigned(dist_bits))
    """

    def __init__(self, *, sub_dim: int, elem_bits: int, pipelined: bool = False) -> None:
        self._sub_dim = check_int("sub_dim", sub_dim, 1, 64)
        self._elem_bits = check_int("elem_bits", elem_bits, 2, 32)
        if not isinstance(pipelined, bool):
            raise TypeError(f"pipelined must be a bool, got {pipelined!r}")
        self._pipelined = pipelined
        vec = data.ArrayLayout(signed(elem_bits), sub_dim)
        super().__init__({
            "a": In(vec), "b": In(vec), "en": In(1),
            "dist": Out(unsigned(dist_bits(sub_dim, elem_bits))),
        })

    @property
    def latency(self) -> int:
        """Cycles from ``a``/``b`` to ``dist`` (0 when combinational)."""
        if not self._pipelined:
            return 0
        return distance_latency(self._sub_dim, self._elem_bits)

    @property
    def sub_dim(self) -> int:
        return self._sub_dim

    @property
    def elem_bits(self) -> int:
        return self._elem_bits

    @property
    def dist_bits(self) -> int:
        return dist_bits(self._sub_dim, self._elem_bits)

    def elaborate(self, platform: object) -> Module:
        if self._pipelined:
            return self._elaborate_pipelined()
        m = Module()
        total = 0
        for i in range(self._sub_dim):
            diff = self.a[i] - self.b[i]  # W+1 signed bits: never wraps
            total = total + diff * diff
        # The sum is >= 0 and < 2^dist_bits, so dropping the (always zero) top bits is exact.
        m.d.comb += self.dist.eq(total)
        return m

    def _elaborate_pipelined(self) -> Module:
        m = Module()
        d, w, width = self._sub_dim, self._elem_bits, self.dist_bits
        # |a - b| < 2^W: both differences in parallel and a select, not a negation after them
        absd = [Signal(unsigned(w), name=f"abs{i}") for i in range(d)]
        with m.If(self.en):
            for i in range(d):
                diff = self.a[i] - self.b[i]
                m.d.sync += absd[i].eq(Mux(diff < 0, self.b[i] - self.a[i], diff))
        rows = [Mux(absd[i][j], absd[i] << j, 0)[:width] for i in range(d) for j in range(w)]
        for stage in range(self.latency - 1):
            size = -(-len(rows) // _groups(len(rows)))
            vectors = []
            for g in range(0, len(rows), size):
                vectors.extend(carry_save.compress(m, rows[g:g + size], width, f"t{stage}_{g}"))
            regs = [Signal(unsigned(width), name=f"t{stage}_r{k}") for k in range(len(vectors))]
            with m.If(self.en):
                m.d.sync += [r.eq(v) for r, v in zip(regs, vectors, strict=True)]
            rows = regs
        s, c = carry_save.compress(m, rows, width, "out")
        m.d.comb += self.dist.eq(s + c)  # < 2^dist_bits: the carry out of the top is zero
        return m
