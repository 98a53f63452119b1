"""Histogram times value centroids: the bank's D-vector partial output.

``out[m*d + i] = sum_j hist[m, j] * Cv[m, j, i]``, exact (golden model:
:func:`aqpim.sw.golden.intmodel.hist_times_centroids`).
"""

from __future__ import annotations

from amaranth.hdl import C, Cat, Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from aqpim.checks import check_int
from aqpim.numerics import Numerics

from .attn_params import check_numerics
from .histogram import bins_layout
from .lut_accumulate import index_shape

__all__ = ["ValueMAC", "codebook_write_layout", "partial_out_layout"]


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


class ValueMAC(wiring.Component):
    """D = M*d multiply-accumulates per cycle over the K bin indices of the histogram.

    The value codebook lives in M memories (one per subspace, K entries of d signed
    ``elem_bits`` elements). Each ``i_bins`` beat carries bin ``index`` j of all M
    histograms; the unit reads ``Cv[:, j, :]`` (synchronous), multiplies each ``hist[m, j]``
    by the d elements of ``Cv[m, j]`` (M*d multipliers, ``hist_bits`` x ``elem_bits``) and adds
    the products into D accumulators of ``out_bits`` (exact: the bins of a subspace sum to at
    most ``token_capacity * 2^P``). After the beat marked ``last`` the D-vector is offered on
    ``o_out`` and the accumulators are cleared when it is taken.

    Ports
    -----
    i_cb : In(stream of :func:`codebook_write_layout`)
        Value codebook writes, one centroid per beat (M*K beats load it all). Refused while a
        product is in progress; a pending write holds off new bins.
    i_bins : In(stream of :func:`aqpim.hw.histogram.bins_layout`)
        Bins in any index order, each index once per product; ``last`` on the final one.
    o_out : Out(stream of :func:`partial_out_layout`)

    Latency and throughput
    ----------------------
    One bin index per cycle: the product takes K cycles (K beats from the histogram's
    read-out) plus 3 cycles of pipeline (codebook read, multiply, accumulate) from the
    ``last`` beat to ``o_out`` valid. A new product starts after ``o_out`` is taken.

    Parameters (keyword-only)
    -------------------------
    numerics : Numerics
        The configuration (:mod:`aqpim.numerics`); every width follows from it.
    slots : int
        Codebooks held (1..8, a bank's head slots): each memory is ``slots x K`` deep and the
        ``slot`` input (present when ``slots > 1``) picks the codebook that ``i_cb`` writes
        and a product reads; it must stay fixed from a codebook write or a product's first
        bin to its end.
    """

    def __init__(
        self,
        *,
        numerics: Numerics,
        slots: int = 1,
    ) -> None:
        num = check_numerics(numerics)
        self._num = num
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
    def latency(self) -> int:
        """Cycles from the ``last`` bin beat's transfer to ``o_out`` valid."""
        return 3

    def elaborate(self, platform) -> Module:
        m = Module()
        num = self._num
        nsub, d = num.subspaces, num.sub_dim

        # A product runs from its first bin beat until o_out is taken; the codebook is frozen
        # meanwhile and a second product waits.
        active = Signal()
        seen_last = Signal()
        out_valid = Signal()
        cb_fire = self.i_cb.valid & self.i_cb.ready
        m.d.comb += [
            self.i_cb.ready.eq(~active),
            self.i_bins.ready.eq(~seen_last & ~cb_fire),
            self.o_out.valid.eq(out_valid),
        ]
        bins_fire = self.i_bins.valid & self.i_bins.ready
        out_fire = self.o_out.valid & self.o_out.ready
        with m.If(bins_fire):
            m.d.sync += active.eq(1)
            with m.If(self.i_bins.payload.last):
                m.d.sync += seen_last.eq(1)

        # Stage 1: codebook row j (synchronous read) beside the registered bins.
        s1_valid = Signal()
        s1_last = Signal()
        s1_bins = Signal(data.ArrayLayout(unsigned(num.hist_bits), nsub))
        m.d.sync += [
            s1_valid.eq(bins_fire),
            s1_last.eq(self.i_bins.payload.last),
            s1_bins.eq(self.i_bins.payload.bins),
        ]
        # (slot s's codebook: entries s*K .. s*K + K - 1 of each memory)
        rows = []
        vec_layout = data.ArrayLayout(signed(num.elem_bits), d)
        slot = self.slot if self._slots > 1 else C(0, 0)
        for s in range(nsub):
            mem = Memory(shape=vec_layout, depth=self._slots * num.centroids, init=[])
            m.submodules[f"cv{s}"] = mem
            wp = mem.write_port()
            rp = mem.read_port(domain="sync")
            m.d.comb += [
                wp.addr.eq(Cat(self.i_cb.payload.index, slot)),
                wp.data.eq(self.i_cb.payload.vector),
                wp.en.eq(cb_fire & (self.i_cb.payload.subspace == s)),
                rp.addr.eq(Cat(self.i_bins.payload.index, slot)),
                rp.en.eq(1),
            ]
            rows.append(rp.data)

        # Stage 2: M*d products, registered so the multiplier and the adder sit in separate
        # cycles.
        s2_valid = Signal()
        s2_last = Signal()
        prod_bits = num.hist_bits + num.elem_bits + 1
        s2_prod = [Signal(signed(prod_bits), name=f"s2_prod{i}") for i in range(nsub * d)]
        m.d.sync += [s2_valid.eq(s1_valid), s2_last.eq(s1_valid & s1_last)]
        for s in range(nsub):
            for i in range(d):
                m.d.sync += s2_prod[s * d + i].eq(s1_bins[s] * rows[s][i])

        # Stage 3: exact accumulation; the result waits in the accumulators until taken.
        acc = [Signal(signed(num.out_bits), name=f"acc{i}") for i in range(num.head_dim)]
        with m.If(out_fire):
            m.d.sync += [a.eq(0) for a in acc]
            m.d.sync += [out_valid.eq(0), active.eq(0), seen_last.eq(0)]
        with m.Elif(s2_valid):
            m.d.sync += [a.eq(a + p) for a, p in zip(acc, s2_prod, strict=True)]
            with m.If(s2_last):
                m.d.sync += out_valid.eq(1)
        for i, a in enumerate(acc):
            m.d.comb += self.o_out.payload.out[i].eq(a)
        return m
