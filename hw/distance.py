"""Exact squared L2 distance between two signed sub-vectors (combinational).

``dist = sum_i (a[i] - b[i])^2`` over ``sub_dim`` elements of ``elem_bits``-bit signed values.
Each difference needs ``elem_bits + 1`` signed bits, each square at most ``(2^W - 1)^2``, so the
sum fits in ``Numerics.dist_bits = bits(d * (2^W - 1)^2)`` unsigned bits: the output is exact for
every input in range (no truncation of a value that can occur).

Latency: 0 (combinational; the encoder registers its output). Throughput: one pair per cycle.
"""

from __future__ import annotations

from amaranth import Module, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from aqpim.checks import check_int
from aqpim.numerics import dist_bits  # one formula for the RTL and the contract

__all__ = ["SquaredDistance", "dist_bits"]


class SquaredDistance(wiring.Component):
    """``dist = ||a - b||^2``, exact, combinational.

    Parameters
    ----------
    sub_dim:
        d, elements per sub-vector (1..64).
    elem_bits:
        W, signed element width (2..32).

    Ports
    -----
    a, b: In(ArrayLayout(signed(W), d))
    dist: Out(unsigned(dist_bits))
    """

    def __init__(self, *, sub_dim: int, elem_bits: int) -> None:
        self._sub_dim = check_int("sub_dim", sub_dim, 1, 64)
        self._elem_bits = check_int("elem_bits", elem_bits, 2, 32)
        vec = data.ArrayLayout(signed(elem_bits), sub_dim)
        super().__init__(
            {"a": In(vec), "b": In(vec), "dist": Out(unsigned(dist_bits(sub_dim, elem_bits)))}
        )

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
        m = Module()
        total = 0
        for i in range(self._sub_dim):
            diff = self.a[i] - self.b[i]  # W+1 signed bits: never wraps
            total = total + diff * diff
        # The sum is >= 0 and < 2^dist_bits, so dropping the (always zero) top bits is exact.
        m.d.comb += self.dist.eq(total)
        return m
