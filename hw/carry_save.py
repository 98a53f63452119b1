"""Carry-save arithmetic: products and sums kept as two vectors until one final addition.

A ``W``-bit carry-save number is a pair ``(s, c)`` whose value is ``(s + c) mod 2^W``. A 3:2
compressor (a row of full adders) turns three such vectors into two without propagating a
carry, so a tree of them reduces the partial products of a multiplication in about
``2 log_1.5(rows)`` gate levels; the one carry-propagate addition that remains can go in a
pipeline stage of its own. Everything is modulo ``2^W``: a signed result that fits ``W`` bits is
exact when the final sum is read back as signed.

These build combinational expressions; the caller registers them.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, Value, unsigned

__all__ = ["compress", "multiply"]


def _full_adders(m: Module, x: Value, y: Value, z: Value, width: int,
                 name: str) -> tuple[Signal, Signal]:
    """x + y + z == s + c (mod 2^width), without a carry chain."""
    s, c = Signal(unsigned(width), name=f"{name}_s"), Signal(unsigned(width), name=f"{name}_c")
    m.d.comb += [s.eq(x ^ y ^ z), c.eq(((x & y) | (z & (x ^ y))) << 1)]
    return s, c


def compress(m: Module, rows: list[Value], width: int, name: str) -> tuple[Signal, Signal]:
    """Wallace reduction of ``rows`` (each read as ``width`` bits, modulo 2^width) to (s, c)."""
    if not rows:
        raise ValueError(f"{name}: compress needs at least one row")
    level = []
    for i, r in enumerate(rows):  # one signal per row keeps the netlist flat
        row = Signal(unsigned(width), name=f"{name}_r{i}")
        m.d.comb += row.eq(r)
        level.append(row)
    depth = 0
    while len(level) > 2:
        nxt = []
        depth += 1
        for i in range(0, len(level) - 2, 3):
            nxt.extend(_full_adders(m, level[i], level[i + 1], level[i + 2], width,
                                    f"{name}_l{depth}_{i // 3}"))
        nxt.extend(level[len(level) - len(level) % 3:])
        level = nxt
    s, c = Signal(unsigned(width), name=f"{name}_s"), Signal(unsigned(width), name=f"{name}_c")
    m.d.comb += [s.eq(level[0]), c.eq(level[1] if len(level) > 1 else 0)]
    return s, c


def multiply(m: Module, a: Value, b: Value, width: int, name: str,
             parts: int = 1) -> list[Signal]:
    """``a * b`` modulo 2^width in carry-save form; ``a`` signed or unsigned, ``b`` unsigned.

    One partial product per bit of ``b`` (``a`` sign-extended to ``width`` and shifted), cut into
    ``parts`` groups of consecutive rows, each reduced by :func:`compress`: returns ``2 * parts``
    vectors whose sum is the product. More parts: a shallower tree here, more vectors for the
    next stage to compress.
    """
    ext = Signal(unsigned(width), name=f"{name}_a")
    m.d.comb += ext.eq(a)  # sign-extends a signed ``a``
    rows = [Mux(b[j], ext << j, 0)[:width] for j in range(len(b))]
    size = -(-len(rows) // parts)
    out: list[Signal] = []
    for p in range(0, len(rows), size):
        out.extend(compress(m, rows[p:p + size], width, f"{name}_p{p // size}"))
    return out
