"""Argmin over N unsigned values, ties to the lowest index (combinational tree).

A balanced tree of ``N - 1`` compare-select nodes, ``ceil(log2 N)`` levels. Each node keeps its
left (lower-index) input unless the right one is strictly smaller, which is what makes ties go
to the lowest index at every level and therefore overall.

Latency: 0 (combinational; the encoder registers its output). Throughput: one set per cycle.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from aqpim.checks import check_int

__all__ = ["ArgminTree"]


class ArgminTree(wiring.Component):
    """``index = argmin(values)`` (first minimum), ``min = values[index]``.

    Parameters
    ----------
    count:
        N, number of values (1..4096).
    value_bits:
        Width of each unsigned value (1..64).

    Ports
    -----
    values: In(ArrayLayout(unsigned(value_bits), N))
    min:    Out(unsigned(value_bits))
    index:  Out(unsigned(max(1, ceil(log2 N))))
    """

    def __init__(self, *, count: int, value_bits: int) -> None:
        self._count = count = check_int("count", count, 1, 4096)
        self._value_bits = value_bits = check_int("value_bits", value_bits, 1, 64)
        super().__init__(
            {
                "values": In(data.ArrayLayout(unsigned(value_bits), count)),
                "min": Out(unsigned(value_bits)),
                "index": Out(unsigned(self.index_bits)),
            }
        )

    @property
    def count(self) -> int:
        return self._count

    @property
    def value_bits(self) -> int:
        return self._value_bits

    @property
    def index_bits(self) -> int:
        return max(1, (self._count - 1).bit_length())

    def elaborate(self, platform: object) -> Module:
        m = Module()
        level = [(self.values[i], i) for i in range(self._count)]  # (value, index) pairs
        depth = 0
        while len(level) > 1:
            nxt = []
            for k in range(0, len(level) - 1, 2):
                (va, ia), (vb, ib) = level[k], level[k + 1]
                # Each node is a named signal: reusing the expression would copy the whole
                # subtree into every parent (exponential Verilog).
                take_b = Signal(name=f"l{depth}_n{k // 2}_take")
                v = Signal(self._value_bits, name=f"l{depth}_n{k // 2}_min")
                i = Signal(self.index_bits, name=f"l{depth}_n{k // 2}_idx")
                m.d.comb += [
                    take_b.eq(vb < va),  # strict: on a tie the lower index (a) stays
                    v.eq(Mux(take_b, vb, va)),
                    i.eq(Mux(take_b, ib, ia)),
                ]
                nxt.append((v, i))
            if len(level) % 2:
                nxt.append(level[-1])
            level = nxt
            depth += 1
        value, index = level[0]
        m.d.comb += [self.min.eq(value), self.index.eq(index)]
        return m
