"""Argmin over N unsigned values, ties to the lowest index (a tree, optionally pipelined).

A balanced tree of ``N - 1`` compare-select nodes, ``ceil(log2 N)`` levels. Each node keeps its
left (lower-index) input unless the right one is strictly smaller, which is what makes ties go
to the lowest index at every level and therefore overall.

With ``stage_levels = s > 0`` the (value, index) pairs are registered after every s tree levels
(not after the last: the user registers the output), so a clock period holds s compare-select
levels (about 12 generic gate levels each at 18-bit distances: s = 1 fits the 20-level
budget of tCK x 2, s = 2 measured 26, docs/silicon.md). The registers load when ``en`` is
high (the user's pipeline enable), so back-pressure freezes the tree with the rest of the
pipeline.

Latency: :attr:`ArgminTree.latency` = ``(ceil(log2 N) - 1) // s`` cycles (0 when s = 0:
combinational). Throughput: one set per cycle.
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
    stage_levels:
        Tree levels per registered stage; 0 (default) for a combinational tree.

    Ports
    -----
    values: In(ArrayLayout(unsigned(value_bits), N))
    en:     In(1)   register enable of the internal stages (unused when combinational)
    min:    Out(unsigned(value_bits))
    index:  Out(unsigned(max(1, ceil(log2 N))))
    """

    def __init__(self, *, count: int, value_bits: int, stage_levels: int = 0) -> None:
        self._count = count = check_int("count", count, 1, 4096)
        self._value_bits = value_bits = check_int("value_bits", value_bits, 1, 64)
        self._stage_levels = check_int("stage_levels", stage_levels, 0, 12)
        super().__init__(
            {
                "values": In(data.ArrayLayout(unsigned(value_bits), count)),
                "en": In(1),
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

    @property
    def stage_levels(self) -> int:
        return self._stage_levels

    @property
    def depth(self) -> int:
        """Compare-select levels of the tree, ceil(log2 N)."""
        return (self._count - 1).bit_length()

    @property
    def latency(self) -> int:
        """Registered stages inside the tree: cycles from ``values`` to ``min``/``index``."""
        if not self._stage_levels or self.depth == 0:
            return 0
        return (self.depth - 1) // self._stage_levels

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
            # Register the pairs after every stage_levels levels, except after the last one.
            if self._stage_levels and depth % self._stage_levels == 0 and len(level) > 1:
                regs = []
                for n, (v, i) in enumerate(level):
                    rv = Signal(self._value_bits, name=f"s{depth // self._stage_levels}_n{n}_min")
                    ri = Signal(self.index_bits, name=f"s{depth // self._stage_levels}_n{n}_idx")
                    with m.If(self.en):
                        m.d.sync += [rv.eq(v), ri.eq(i)]
                    regs.append((rv, ri))
                level = regs
        value, index = level[0]
        m.d.comb += [self.min.eq(value), self.index.eq(index)]
        return m
