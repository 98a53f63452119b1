"""Value histogram: scatter-add of each token's softmax weight by its M value codes.

``hist[m, j] = sum of w_t over tokens t with value_code[t, m] == j`` (golden model:
:func:`aqpim.sw.golden.intmodel.histogram`).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from aqpim.numerics import Numerics

from .attn_params import check_numerics

__all__ = ["Histogram", "token_layout", "bins_layout"]


def token_layout(num: Numerics) -> data.StructLayout:
    """One token: its M value codes, its weight, and ``last`` (the final token of a pass)."""
    return data.StructLayout({
        "codes": data.ArrayLayout(unsigned(num.code_bits), num.subspaces),
        "weight": unsigned(num.weight_bits),
        "last": 1,
    })


def bins_layout(num: Numerics) -> data.StructLayout:
    """Bin ``index`` of all M histograms (``bins[m] = hist[m, index]``); ``last`` at K - 1."""
    return data.StructLayout({
        "bins": data.ArrayLayout(unsigned(num.hist_bits), num.subspaces),
        "index": unsigned(num.code_bits),
        "last": 1,
    })


class Histogram(wiring.Component):
    """M histograms of K bins, one token (M read-modify-writes) per cycle, then a read-out.

    Accumulation: one memory per subspace (K x ``hist_bits``), one read and one write port
    each. A token's bins are read in the cycle it is taken (synchronous read) and written back
    with the weight added one cycle later. The read of the next token happens in the same cycle
    as that write and so sees the old bin; when the two tokens hit the same bin of a subspace
    (back-to-back equal codes, the worst case being every token on one code) the sum just
    written is forwarded from a register instead of the stale memory word. Bins are exact
    (``hist_bits`` holds ``token_capacity * 2^P``): no saturation.

    Read-out: after the token marked ``last`` is written, ``o_bins`` streams bins
    ``index = 0 .. K-1`` (all M subspaces per beat, ``last`` on K - 1) and clears each bin
    as it is read, so the histogram is all zero again for the next pass (it is all zero after
    power-up too: memories start at 0). Tokens are refused during the read-out.

    Ports
    -----
    i_tok : In(stream of :func:`token_layout`)
        A pass with no tokens sends one token of weight 0 with ``last`` set.
    o_bins : Out(stream of :func:`bins_layout`)

    Latency and throughput
    ----------------------
    One token per cycle, never stalled during accumulation (ready is high except from the
    cycle after ``last`` until the read-out ends). The read-out starts 2 cycles after the
    ``last`` token's transfer and gives one bin index per cycle: K cycles without
    backpressure (first beat valid 3 cycles after ``last``).

    Parameters (keyword-only)
    -------------------------
    numerics : Numerics
        The configuration (:mod:`aqpim.numerics`); every width follows from it.
    """

    def __init__(
        self,
        *,
        numerics: Numerics,
        forwarding: bool = True,
    ) -> None:
        num = check_numerics(numerics)
        if not isinstance(forwarding, bool):
            raise TypeError(f"forwarding must be a bool, got {forwarding!r}")
        self._num = num
        # forwarding=False exists only so the testbench can show that a test catches the hazard.
        self._forwarding = forwarding
        super().__init__({
            "i_tok": In(stream.Signature(token_layout(num))),
            "o_bins": Out(stream.Signature(bins_layout(num))),
        })

    @property
    def numerics(self) -> Numerics:
        return self._num

    def elaborate(self, platform) -> Module:
        m = Module()
        num = self._num
        nsub, k = num.subspaces, num.centroids
        tok = self.i_tok.payload

        flushing = Signal()
        s1_valid = Signal()
        s1_last = Signal()
        s1_weight = Signal(unsigned(num.weight_bits))
        s1_codes = Signal(data.ArrayLayout(unsigned(num.code_bits), nsub))
        # Refuse the token after `last`: the read-out must see every write of this pass.
        m.d.comb += self.i_tok.ready.eq(~flushing & ~(s1_valid & s1_last))
        tok_fire = self.i_tok.valid & self.i_tok.ready
        m.d.sync += [
            s1_valid.eq(tok_fire),
            s1_last.eq(tok.last),
            s1_weight.eq(tok.weight),
            s1_codes.eq(tok.codes),
        ]

        # Read-out: issue index j when the output register is free; data is valid a cycle later.
        rd_index = Signal(range(k + 1))
        out_valid = Signal()
        out_index = Signal(unsigned(num.code_bits))
        out_adv = Signal()
        issue = Signal()
        m.d.comb += [
            out_adv.eq(~out_valid | self.o_bins.ready),
            issue.eq(flushing & (rd_index < k) & out_adv),
            self.o_bins.valid.eq(out_valid),
            self.o_bins.payload.index.eq(out_index),
            self.o_bins.payload.last.eq(out_index == k - 1),
        ]
        with m.If(out_adv):
            m.d.sync += [out_valid.eq(issue), out_index.eq(rd_index)]
        with m.If(issue):
            m.d.sync += rd_index.eq(rd_index + 1)
        # The token marked last was written in this cycle: reading from the next cycle on
        # sees it.
        with m.If(s1_valid & s1_last):
            m.d.sync += [flushing.eq(1), rd_index.eq(0)]
        with m.If(self.o_bins.valid & self.o_bins.ready & self.o_bins.payload.last):
            m.d.sync += flushing.eq(0)

        for s in range(nsub):
            mem = Memory(shape=unsigned(num.hist_bits), depth=k, init=[])
            m.submodules[f"hist{s}"] = mem
            rp = mem.read_port(domain="sync")
            wp = mem.write_port()
            # Read: the token's bin while accumulating, bin j during the read-out.
            m.d.comb += [
                rp.addr.eq(Mux(flushing, rd_index, tok.codes[s])),
                rp.en.eq(Mux(flushing, out_adv, 1)),
            ]
            # Forwarding: last cycle's write went to this token's bin after its read. The
            # code compare is made a cycle early (the incoming token against the one being
            # written) and registered, so the bin update is a select and an add (the compare
            # in series made it 21 gate levels).
            wr_data = Signal(unsigned(num.hist_bits), name=f"wr{s}_data")
            hit = Signal(name=f"s1_hit{s}")
            if self._forwarding:
                m.d.sync += hit.eq(s1_valid & (s1_codes[s] == tok.codes[s]))
            s1_sum = Signal(unsigned(num.hist_bits), name=f"s1_sum{s}")
            m.d.comb += s1_sum.eq(Mux(hit, wr_data, rp.data) + s1_weight)
            m.d.sync += wr_data.eq(s1_sum)
            # Write: the new bin while accumulating; zero behind the read-out (read-and-clear).
            m.d.comb += [
                wp.addr.eq(Mux(flushing, rd_index, s1_codes[s])),
                wp.data.eq(Mux(flushing, 0, s1_sum)),
                wp.en.eq(Mux(flushing, issue, s1_valid)),
                self.o_bins.payload.bins[s].eq(rp.data),
            ]
        return m
