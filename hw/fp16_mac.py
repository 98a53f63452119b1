"""Area reference: AttAcc's per-bank unit, 16 FP16 multiply-accumulate lanes (synthesis only).

AttAcc's bank-level PIM unit multiplies 16 FP16 pairs per column command and accumulates them
(BRIEF, "Hardware numbers"). This is an FP16 MAC datapath of the usual shape, written so that
``aqpim synth fp16_mac16`` counts it with the same flow, the same gates and the same NAND2
weights as the AQPIM units (docs/silicon.md). It is a faithful-size datapath, not an IEEE
unit: normal numbers only (a zero exponent is flushed to zero), no infinities or NaNs, round
to nearest with ties away from zero, saturation at the largest exponent.

Per lane, stage 1: 11 x 11-bit mantissa product, exponent sum, sign; stage 2: compare the
exponents with the accumulator's, align the smaller operand (26-bit shifter), add or subtract,
count leading zeros, normalise (26-bit shifter), round to 11 bits and write the FP16
accumulator. Latency 2, one set of 16 products per cycle when ``en`` is high.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from aqpim.checks import check_int

__all__ = ["FP16MAC", "fp16_mac_ref"]

_W = 26  # aligned mantissa field: 22 product bits + 1 carry + 3 guard bits


def fp16_mac_ref(acc: int, a: int, b: int) -> int:
    """Bit model of one lane's step ``acc + a * b`` (FP16 bit patterns in and out)."""

    def unpack(x: int) -> tuple[int, int, int]:
        s, e, m = x >> 15, (x >> 10) & 31, x & 1023
        return s, e, (m | 1024) if e else 0

    sa, ea, ma = unpack(a)
    sb, eb, mb = unpack(b)
    sc, ec, mc = unpack(acc)
    pm = ma * mb  # in [2^20, 2^22): value pm * 2^(ea + eb - 15 - 15 - 20)
    pe = ea + eb - 15
    # normalise to a leading one at bit 21: value pm * 2^(pe - 15 - 21)
    if pm >> 21:
        pe += 1
    else:
        pm <<= 1
    ps = sa ^ sb
    # both as mant * 2^(exp - 15 - 24): leading one at bit 24 (3 guard bits below the product)
    xm, xe, xs = pm << 3, pe, ps
    ym, ye, ys = (mc << 14), ec, sc
    if not xm:
        xe = -64
    if not ym:
        ye = -64
    if (xe, xm) < (ye, ym):
        xm, xe, xs, ym, ye, ys = ym, ye, ys, xm, xe, xs
    d = min(xe - ye, _W)
    ym >>= d
    r = xm + ym if xs == ys else xm - ym
    if r == 0:
        return 0
    lz = _W - r.bit_length()
    r <<= lz  # leading one at bit W-1
    e = xe + 1 - lz  # a leading one at bit 24 (lz = 1) means exponent xe
    top = (r >> (_W - 11)) + ((r >> (_W - 12)) & 1)
    if top >> 11:
        top >>= 1
        e += 1
    if e <= 0:
        return 0
    if e >= 31:
        e, top = 30, 2047
    return (xs << 15) | (e << 10) | (top & 1023)


class FP16MAC(wiring.Component):
    """``lanes`` FP16 multiply-accumulate lanes: ``acc[i] += a[i] * b[i]`` when ``en``.

    Ports
    -----
    a, b : In(ArrayLayout(16, lanes))  FP16 bit patterns.
    en : In(1)        accumulate this cycle's products (they land two cycles later).
    clear : In(1)     zero the accumulators.
    acc : Out(ArrayLayout(16, lanes))
    """

    def __init__(self, *, lanes: int = 16) -> None:
        self._lanes = check_int("lanes", lanes, 1, 256)
        vec = data.ArrayLayout(16, self._lanes)
        super().__init__({"a": In(vec), "b": In(vec), "en": In(1), "clear": In(1),
                          "acc": Out(vec)})

    @property
    def lanes(self) -> int:
        return self._lanes

    def elaborate(self, platform: object) -> Module:
        m = Module()
        s1_en = Signal()
        m.d.sync += s1_en.eq(self.en)
        for i in range(self._lanes):
            self._lane(m, i, s1_en)
        return m

    def _lane(self, m: Module, i: int, s1_en: Signal) -> None:
        a, b, acc = self.a[i], self.b[i], self.acc[i]

        # Stage 1: mantissa product (the multiplier), exponent sum and sign, registered.
        ea, eb = a[10:15], b[10:15]
        ma = Mux(ea == 0, 0, Cat(a[:10], Const(1, 1)))
        mb = Mux(eb == 0, 0, Cat(b[:10], Const(1, 1)))
        pm = Signal(22, name=f"l{i}_pm")
        m.d.comb += pm.eq(ma * mb)
        s1_pm = Signal(22, name=f"l{i}_s1_pm")
        s1_pe = Signal(signed(8), name=f"l{i}_s1_pe")
        s1_ps = Signal(name=f"l{i}_s1_ps")
        # normalised to a leading one at bit 21 (the product of two 1.x is in [1, 4))
        m.d.sync += [s1_pm.eq(Mux(pm[21], pm, pm << 1)), s1_pe.eq(ea + eb - 15 + pm[21]),
                     s1_ps.eq(a[15] ^ b[15])]

        # Stage 2: align, add, normalise, round into the accumulator.
        ec = acc[10:15]
        mc = Mux(ec == 0, 0, Cat(acc[:10], Const(1, 1)))
        xm0 = Signal(_W, name=f"l{i}_xm0")
        ym0 = Signal(_W, name=f"l{i}_ym0")
        xe0 = Signal(signed(8), name=f"l{i}_xe0")
        ye0 = Signal(signed(8), name=f"l{i}_ye0")
        m.d.comb += [
            xm0.eq(s1_pm << 3), xe0.eq(Mux(s1_pm == 0, -64, s1_pe)),
            ym0.eq(mc << 14), ye0.eq(Mux(mc == 0, -64, ec)),
        ]
        swap = Signal(name=f"l{i}_swap")
        m.d.comb += swap.eq((xe0 < ye0) | ((xe0 == ye0) & (xm0 < ym0)))
        xm, ym = Signal(_W, name=f"l{i}_xm"), Signal(_W, name=f"l{i}_ym")
        xe, ye = Signal(signed(8), name=f"l{i}_xe"), Signal(signed(8), name=f"l{i}_ye")
        xs, ys = Signal(name=f"l{i}_xs"), Signal(name=f"l{i}_ys")
        m.d.comb += [
            xm.eq(Mux(swap, ym0, xm0)), ym.eq(Mux(swap, xm0, ym0)),
            xe.eq(Mux(swap, ye0, xe0)), ye.eq(Mux(swap, xe0, ye0)),
            xs.eq(Mux(swap, acc[15], s1_ps)), ys.eq(Mux(swap, s1_ps, acc[15])),
        ]
        diff = Signal(unsigned(9), name=f"l{i}_diff")
        m.d.comb += diff.eq(xe - ye)
        d = Signal(range(_W + 1), name=f"l{i}_d")
        m.d.comb += d.eq(Mux(diff > _W, _W, diff))
        r = Signal(_W + 1, name=f"l{i}_r")
        m.d.comb += r.eq(Mux(xs == ys, xm + (ym >> d), xm - (ym >> d)))
        # leading-zero count of the 26-bit magnitude (a priority encoder)
        lz = Signal(range(_W + 1), name=f"l{i}_lz")
        m.d.comb += lz.eq(_W)
        for bit in range(_W):  # the last assignment (the highest set bit) wins
            with m.If(r[bit]):
                m.d.comb += lz.eq(_W - 1 - bit)
        rn = Signal(_W, name=f"l{i}_rn")
        m.d.comb += rn.eq(r << lz)
        e = Signal(signed(9), name=f"l{i}_e")
        top = Signal(12, name=f"l{i}_top")
        m.d.comb += [e.eq(xe + 1 - lz), top.eq(rn[_W - 11:] + rn[_W - 12])]
        e2 = Signal(signed(9), name=f"l{i}_e2")
        man = Signal(11, name=f"l{i}_man")
        m.d.comb += [e2.eq(e + top[11]), man.eq(Mux(top[11], top[1:12], top[:11]))]
        res = Signal(16, name=f"l{i}_res")
        with m.If((r == 0) | (e2 <= 0)):
            m.d.comb += res.eq(0)
        with m.Elif(e2 >= 31):
            m.d.comb += res.eq(Cat(Const(1023, 10), Const(30, 5), xs))
        with m.Else():
            m.d.comb += res.eq(Cat(man[:10], e2[:5], xs))
        with m.If(self.clear):
            m.d.sync += acc.eq(0)
        with m.Elif(s1_en):
            m.d.sync += acc.eq(res)
