"""Histogram times value centroids: the bank's D-vector partial output.

``out[m*d + i] = sum_j hist[m, j] * Cv[m, j, i]``, exact (golden model:
:func:`aqpim.sw.golden.intmodel.hist_times_centroids`).
"""

from __future__ import annotations

from amaranth.hdl import C, Cat, Module, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from aqpim.checks import check_int
from aqpim.numerics import Numerics

from . import carry_save
from .attn_params import check_numerics
from .histogram import bins_layout
from .lut_accumulate import index_shape

__all__ = ["DEFAULT_MAC_LANES", "ValueMAC", "codebook_write_layout", "partial_out_layout"]

# 16 multipliers, as many as AttAcc's per-bank FP16 unit: the bank's logic at the default
# configuration (D = 128, M = 64, K = 16) comes under the issue's 150k NAND2-eq with them
# (docs/silicon.md), and the K x D / 16 = 128 cycles of the product stay below a bank's value
# stream at the token counts a bank holds in decode (docs/attention.md).
DEFAULT_MAC_LANES = 16


def codebook_write_layout(num: Numerics) -> data.StructLayout:
    """One value centroid per beat: ``Cv[subspace, index, :] = vector`` (d signed elements)."""
    return data.StructLayout({
        "subspace": index_shape(num.subspaces),
        "index": unsigned(num.code_bits),
        "vector": data.ArrayLayout(signed(num.elem_bits), num.sub_dim),
    })


def partial_out_layout(num: Numerics) -> data.StructLayout:
    """The D-vector ``out`` (``out[m*d + i]``), signed ``out_bits`` each."""
    return data.StructLayout({
        "out": data.ArrayLayout(signed(num.out_bits), num.head_dim),
    })


def check_lanes(num: Numerics, lanes: object) -> int:
    """Return the MAC lane count: ``lanes`` (None: ``min(16, D)``), checked against D and d.

    Lanes must divide D (each bin index takes ``D / lanes`` cycles) and be a multiple of d
    (a centroid is one codebook row: one write per ``i_cb`` beat).
    """
    d, dim = num.sub_dim, num.head_dim
    if lanes is None:
        lanes = min(DEFAULT_MAC_LANES, dim)
    lanes = check_int("lanes", lanes, 1, dim)
    if dim % lanes or lanes % d:
        raise ValueError(
            f"lanes must divide D = {dim} and be a multiple of d = {d}, got {lanes}")
    return lanes


class ValueMAC(wiring.Component):
    """``lanes`` multiply-accumulates per cycle: each bin index takes ``D / lanes`` cycles.

    The value codebook lives in ``lanes / d`` memories of centroids (d signed ``elem_bits``
    elements per row). Centroid ``Cv[m, j]`` sits in memory ``m % (lanes/d)``, row
    ``j * n + m // (lanes/d)`` with ``n = D / lanes``, so one synchronous read of all memories
    at row ``j*n + g`` gives the ``lanes`` elements of output group g
    (``out[g*lanes : (g+1)*lanes]``) for bin j.

    Each ``i_bins`` beat (bin ``index`` j of all M histograms) is held by the source for n
    cycles; in cycle g the unit reads row ``j*n + g`` and selects the ``lanes/d`` bins of group
    g, and takes the beat in cycle ``n - 1``. A lane's ``hist_bits x elem_bits`` product is
    reduced by carry-save adders to two rows in one stage, the two rows are added in the next
    and the product is added to its accumulator in the third, so that no stage is deeper than
    the tCK x 2 budget of 20 gate levels (docs/silicon.md). The D accumulators
    (``out_bits``, exact: a subspace's bins sum to at most ``token_capacity * 2^P``, so sums
    modulo ``2^out_bits`` are the exact sums) form a ring of n rows of ``lanes``: each product
    is added to the head row, which moves to the tail, so the ``lanes`` adders never need a
    row select; after whole bins the ring is back in place. After the beat marked ``last``
    the D-vector is offered on ``o_out`` and the accumulators are cleared when it is taken.

    Ports
    -----
    i_cb : In(stream of :func:`codebook_write_layout`)
        Value codebook writes, one centroid per beat (M*K beats load it all). Refused while a
        product is in progress; a pending write holds off new bins.
    i_bins : In(stream of :func:`aqpim.hw.histogram.bins_layout`)
        Bins in any index order, each index once per product; ``last`` on the final one. The
        payload is read while the beat waits (the stream rule: it holds until taken).
    o_out : Out(stream of :func:`partial_out_layout`)

    Latency and throughput
    ----------------------
    One bin index per ``n = D / lanes`` cycles: a product takes ``K x n`` cycles (K beats from
    the histogram's read-out) plus :attr:`latency` = 4 cycles of pipeline (codebook read,
    carry-save rows, product, accumulate) from the ``last`` beat's transfer to ``o_out``
    valid. A new product starts after ``o_out`` is taken. At ``lanes = D`` (n = 1) this is one
    bin per cycle as before the lanes, with one more cycle of latency.

    Parameters (keyword-only)
    -------------------------
    numerics : Numerics
        The configuration (:mod:`aqpim.numerics`); every width follows from it.
    lanes : int or None
        Multipliers; divides D, a multiple of d. None: ``min(16, D)``
        (:data:`DEFAULT_MAC_LANES`).
    slots : int
        Codebooks held (1..8, a bank's head slots): each memory is ``slots`` times as deep and
        the ``slot`` input (present when ``slots > 1``) picks the codebook that ``i_cb`` writes
        and a product reads; it must stay fixed from a codebook write or a product's first
        bin to its end.
    """

    def __init__(
        self,
        *,
        numerics: Numerics,
        lanes: int | None = None,
        slots: int = 1,
    ) -> None:
        num = check_numerics(numerics)
        self._num = num
        self._lanes = check_lanes(num, lanes)
        self._slots = check_int("slots", slots, 1, 8)
        ports = {
            "i_cb": In(stream.Signature(codebook_write_layout(num))),
            "i_bins": In(stream.Signature(bins_layout(num))),
            "o_out": Out(stream.Signature(partial_out_layout(num))),
        }
        if slots > 1:
            ports["slot"] = In(range(slots))
        super().__init__(ports)

    @property
    def numerics(self) -> Numerics:
        return self._num

    @property
    def slots(self) -> int:
        return self._slots

    @property
    def lanes(self) -> int:
        """Multipliers (output elements per cycle)."""
        return self._lanes

    @property
    def cycles_per_bin(self) -> int:
        """Cycles per bin index, ``n = D / lanes``."""
        return self._num.head_dim // self._lanes

    @property
    def latency(self) -> int:
        """Cycles from the ``last`` bin beat's transfer to ``o_out`` valid."""
        return 4

    def elaborate(self, platform) -> Module:
        m = Module()
        num = self._num
        nsub, d, lanes = num.subspaces, num.sub_dim, self._lanes
        n = self.cycles_per_bin
        gs = lanes // d  # subspaces per output group
        bins = self.i_bins.payload

        # A product runs from its first bin beat until o_out is taken; the codebook is frozen
        # meanwhile and a second product waits.
        active = Signal()
        seen_last = Signal()
        out_valid = Signal()
        grp = Signal(range(n))  # the output group issued in this cycle
        last_grp = grp == n - 1
        cb_fire = self.i_cb.valid & self.i_cb.ready
        issue = Signal()
        m.d.comb += [
            self.i_cb.ready.eq(~active),
            issue.eq(self.i_bins.valid & ~seen_last & ~cb_fire),
            self.i_bins.ready.eq(issue & last_grp),
            self.o_out.valid.eq(out_valid),
        ]
        bins_fire = self.i_bins.valid & self.i_bins.ready
        out_fire = self.o_out.valid & self.o_out.ready
        with m.If(issue):
            m.d.sync += [active.eq(1), grp.eq(0 if n == 1 else grp + 1)]
            with m.If(last_grp):
                m.d.sync += grp.eq(0)
        with m.If(bins_fire & bins.last):
            m.d.sync += seen_last.eq(1)

        # Codebook: centroid (m, j) in memory m % gs at row j*n + m // gs, written whole; slot
        # s's codebook in rows s*K*n .. (s+1)*K*n - 1.
        cb = self.i_cb.payload
        cb_row = Signal(range(n))
        cb_mem = Signal(range(gs))
        if gs & (gs - 1) == 0:  # a power of two: bit fields of the subspace index
            lg = gs.bit_length() - 1
            m.d.comb += [cb_row.eq(cb.subspace[lg:]), cb_mem.eq(cb.subspace[:lg])]
        else:
            with m.Switch(cb.subspace):
                for s in range(nsub):
                    with m.Case(s):
                        m.d.comb += [cb_row.eq(s // gs), cb_mem.eq(s % gs)]
        vec_layout = data.ArrayLayout(signed(num.elem_bits), d)
        slot = self.slot if self._slots > 1 else C(0, 0)
        rows = []
        for q in range(gs):
            mem = Memory(shape=vec_layout, depth=self._slots * num.centroids * n, init=[])
            m.submodules[f"cv{q}"] = mem
            wp = mem.write_port()
            rp = mem.read_port(domain="sync")
            m.d.comb += [
                wp.addr.eq(Cat(cb.index, slot) * n + cb_row),
                wp.data.eq(cb.vector),
                wp.en.eq(cb_fire & (cb_mem == q)),
                rp.addr.eq(Cat(bins.index, slot) * n + grp),
                rp.en.eq(1),
            ]
            rows.append(rp.data)

        # Stage 1: the codebook rows of group g (synchronous read) beside group g's bins.
        s1_valid = Signal()
        s1_last = Signal()
        s1_hist = [Signal(unsigned(num.hist_bits), name=f"s1_hist{q}") for q in range(gs)]
        m.d.sync += [s1_valid.eq(issue), s1_last.eq(bins.last & last_grp)]
        if n == 1:
            m.d.sync += [h.eq(bins.bins[q]) for q, h in enumerate(s1_hist)]
        else:
            with m.Switch(grp):
                for g in range(n):
                    with m.Case(g):
                        m.d.sync += [h.eq(bins.bins[g * gs + q]) for q, h in enumerate(s1_hist)]

        # Stage 2: each lane's hist_bits x elem_bits product as elem_bits shifted partial
        # products reduced by carry-save adders to two rows (no carry chain: about 10 gate
        # levels; a whole product with its carry-propagate adder was 27, over the budget of
        # 20). Everything is modulo 2^out_bits: the final sum fits out_bits, so it is exact.
        wb = num.out_bits
        s2_valid = Signal()
        s2_last = Signal()
        s2_sum = [Signal(wb, name=f"s2_sum{lane}") for lane in range(lanes)]
        s2_carry = [Signal(wb, name=f"s2_carry{lane}") for lane in range(lanes)]
        m.d.sync += [s2_valid.eq(s1_valid), s2_last.eq(s1_valid & s1_last)]
        for lane in range(lanes):
            q, e = divmod(lane, d)
            sm, cy = carry_save.compress(m, _partial_products(s1_hist[q], rows[q][e], wb), wb,
                                         f"s1_pp{lane}")
            m.d.sync += [s2_sum[lane].eq(sm), s2_carry[lane].eq(cy)]

        # Stage 3: the product, the two rows added (one carry-propagate adder). Adding them
        # to the accumulator in the same stage (a carry-save level and the adder) was 20 gate
        # levels alone and 21 inside the attention unit.
        s3_valid = Signal()
        s3_last = Signal()
        s3_prod = [Signal(wb, name=f"s3_prod{lane}") for lane in range(lanes)]
        m.d.sync += [s3_valid.eq(s2_valid), s3_last.eq(s2_valid & s2_last)]
        for lane in range(lanes):
            m.d.sync += s3_prod[lane].eq(s2_sum[lane] + s2_carry[lane])

        # Stage 4: the accumulator ring: head row + products to the tail, the rest move up.
        # The result waits in the accumulators until taken.
        acc = [[Signal(wb, name=f"acc{r}_{lane}") for lane in range(lanes)]
               for r in range(n)]
        with m.If(out_fire):
            m.d.sync += [a.eq(0) for row in acc for a in row]
            m.d.sync += [out_valid.eq(0), active.eq(0), seen_last.eq(0)]
        with m.Elif(s3_valid):
            m.d.sync += [a.eq(h + p) for a, h, p in zip(acc[-1], acc[0], s3_prod, strict=True)]
            for r in range(n - 1):
                m.d.sync += [a.eq(b) for a, b in zip(acc[r], acc[r + 1], strict=True)]
            with m.If(s3_last):
                m.d.sync += out_valid.eq(1)
        for r in range(n):
            for lane in range(lanes):
                m.d.comb += self.o_out.payload.out[r * lanes + lane].eq(acc[r][lane])
        return m


def _partial_products(hist: Value, elem: Value, width: int) -> list[Value]:
    """``hist * elem`` (unsigned x two's-complement signed) as rows that sum to it modulo
    ``2^width``: ``hist << i`` where bit i of elem is set, and for the sign bit the negated
    row (inverted, plus one)."""
    nb = len(elem)
    rows: list[Value] = []
    for i in range(nb):
        row = (hist & elem[i].replicate(len(hist))).as_unsigned() << i
        rows.append((~row if i == nb - 1 else row).as_unsigned()[:width])
    rows.append(C(1, width))  # the + 1 of the sign row's negation
    return rows
