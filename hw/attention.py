"""The bank's attention path for one head: scores, local softmax, histogram, value product.

Golden model: :func:`aqpim.sw.golden.intmodel.bank_partial` (max, sum and D-vector ``out``).
docs/attention.md describes the ports, the order of operations and the timing.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from aqpim.geometry import Geometry
from aqpim.numerics import Numerics

from .attn_params import check_numerics
from .histogram import Histogram
from .lut_accumulate import LUTAccumulate, column_layout, lut_write_layout
from .softmax import Softmax
from .value_mac import ValueMAC, codebook_write_layout

__all__ = ["Attention", "partial_layout"]


def partial_layout(num: Numerics) -> data.StructLayout:
    """What a bank returns for one head and step: ``(max, sum, out[D])`` and the token count."""
    return data.StructLayout({
        "max": signed(num.score_bits),
        "sum": unsigned(num.sum_bits),
        "tokens": unsigned((num.token_capacity + 1).bit_length()),
        "overflow": 1,
        "out": data.ArrayLayout(signed(num.out_bits), num.head_dim),
    })


class Attention(wiring.Component):
    """One bank's PQ attention over its tokens of one head (step 4 of the dataflow).

    Order of operations (one *pass pair* per head and decode step):

    0. Load the query LUT on ``i_lut`` (``ceil(M*K / E)`` 256-bit beats of E entries, one
       per cycle: 64 at M = 64, K = 16, L = 16; the all-bank broadcast) and, once per
       prefill, the value codebook on ``i_vcb`` (M*K beats). Both may be reloaded between
       pass pairs; the LUT write stalls while key columns are in flight.
    1. Pass 1 (scores): the key-code columns of the bank's tokens on ``i_key``, in token
       order, ``last`` on the final one (``ntok = 0, last = 1`` alone for a bank with no
       tokens). The LUT-accumulate unit scores a column per cycle; the scores go to a
       scratch memory (one row per column, ``ceil(token_capacity / tpc)`` rows) and the
       running maximum of the valid scores is kept.
    2. Pass 2 (values): after the last score is stored, ``i_val`` takes the value-code
       columns, the same number of beats with the same ``ntok``/``last`` as pass 1. Each
       column's scores are read back, and its tokens go one per cycle through the softmax
       (``max`` of pass 1) into the histogram, while the weights are summed.
    3. The histogram is read out (K cycles, cleared as it is read) through the value MAC.
    4. ``o_partial`` offers ``(max, sum, out, tokens, overflow)``; taking it resets the unit for
       the next pass pair (``max = score_min``, ``sum = 0``, counters 0).

    Ports
    -----
    i_lut : In(stream of :func:`aqpim.hw.lut_accumulate.lut_write_layout`)
    i_vcb : In(stream of :func:`aqpim.hw.value_mac.codebook_write_layout`)
    i_key : In(stream of :func:`aqpim.hw.lut_accumulate.column_layout`)
        ready is low outside pass 1 (before ``o_partial`` of the previous pair is taken,
        and after the ``last`` key column).
    i_val : In(stream of :func:`aqpim.hw.lut_accumulate.column_layout`)
        ready is low outside pass 2; in pass 2 it takes a column every ``max(ntok, 1)``
        cycles (one token per cycle).
    o_partial : Out(stream of :func:`partial_layout`)
        ``overflow`` is set when pass 1 delivered more columns than the scratch holds (the
        result is then meaningless; the bank controller should never let it happen).

    Latency and throughput
    ----------------------
    Pass 1: one column (``tpc`` tokens) per cycle, II = 1, never stalled inside; the last
    score is stored ``1 + ceil(log2 M) + 1`` cycles after the last key column. Pass 2: one
    token per cycle; the last token reaches the histogram 4 cycles after its column
    (scratch read, serializer, softmax 2); the read-out and product take K + 3 more cycles
    and ``o_partial`` is valid ``K + 8`` cycles after the last value column's transfer (no
    backpressure; docs/attention.md has the measured figures). For T tokens the whole pair
    takes about ``T/tpc + T + K + 15`` cycles.

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
        self._num = num
        geom = Geometry(num)
        self._tpc = geom.key.tokens_per_column
        self._vtpc = geom.value.tokens_per_column
        self._forwarding = forwarding
        super().__init__({
            "i_lut": In(stream.Signature(lut_write_layout(num.keys))),
            "i_vcb": In(stream.Signature(codebook_write_layout(num.values))),
            "i_key": In(stream.Signature(column_layout(num.keys))),
            "i_val": In(stream.Signature(column_layout(num.values))),
            "o_partial": Out(stream.Signature(partial_layout(num))),
        })

    @property
    def numerics(self) -> Numerics:
        return self._num

    @property
    def tokens_per_column(self) -> int:
        """Tokens per key group (one ``i_key`` beat); the value side's is ``value_tpc``."""
        return self._tpc

    @property
    def value_tpc(self) -> int:
        """Tokens per value group (one ``i_val`` beat)."""
        return self._vtpc

    @property
    def scratch_rows(self) -> int:
        """Rows of the score scratch memory (one per column): ``ceil(token_capacity / tpc)``."""
        return Geometry(self._num).scratch_rows

    def elaborate(self, platform) -> Module:
        m = Module()
        num, tpc = self._num, self._tpc
        nv = num.values  # the value side: histogram, value MAC, the codes in the tag
        nsub, b = nv.subspaces, nv.code_bits
        rows = self.scratch_rows

        m.submodules.lut_acc = la = LUTAccumulate(numerics=num.keys)
        m.submodules.softmax = sm = Softmax(numerics=num, tag_bits=nsub * b + 2)
        m.submodules.histogram = hist = Histogram(numerics=nv, forwarding=self._forwarding)
        m.submodules.value_mac = mac = ValueMAC(numerics=nv)
        wiring.connect(m, wiring.flipped(self.i_lut), la.i_lut)
        wiring.connect(m, wiring.flipped(self.i_vcb), mac.i_cb)
        wiring.connect(m, hist.o_bins, mac.i_bins)

        # Pass state: each flag is set by its stream's last beat and cleared when the partial
        # is taken, which starts the next pass pair.
        key_done = Signal()
        scores_done = Signal()
        val_done = Signal()
        max_r = Signal(signed(num.score_bits), init=num.score_min)
        sum_r = Signal(unsigned(num.sum_bits))
        tokens_r = Signal(unsigned((num.token_capacity + 1).bit_length()))
        overflow = Signal()
        wr_row = Signal(range(rows + 1))
        partial_fire = self.o_partial.valid & self.o_partial.ready

        # Pass 1: key columns into the LUT-accumulate unit until the last one.
        m.d.comb += [
            la.i_cols.payload.eq(self.i_key.payload),
            la.i_cols.valid.eq(self.i_key.valid & ~key_done),
            self.i_key.ready.eq(la.i_cols.ready & ~key_done),
            la.o_scores.ready.eq(1),  # the scratch write never stalls
        ]
        with m.If(self.i_key.valid & self.i_key.ready & self.i_key.payload.last):
            m.d.sync += key_done.eq(1)

        # Scores into the scratch (one row per column) and the running maximum of valid slots.
        scratch = Memory(
            shape=data.ArrayLayout(signed(num.score_bits), tpc), depth=rows, init=[])
        m.submodules.scratch = scratch
        swp = scratch.write_port()
        # read per token (a register file: key and value groups hold different token counts)
        srp = scratch.read_port(domain="comb")
        sc = la.o_scores.payload
        sc_fire = la.o_scores.valid & la.o_scores.ready
        m.d.comb += [
            swp.addr.eq(wr_row),
            swp.data.eq(sc.scores),
            swp.en.eq(sc_fire & (wr_row < rows)),
        ]
        beat_max = _running_max(m, max_r, sc, tpc, num)
        with m.If(sc_fire):
            m.d.sync += [max_r.eq(beat_max), tokens_r.eq(tokens_r + sc.ntok)]
            with m.If(wr_row < rows):
                m.d.sync += wr_row.eq(wr_row + 1)
            with m.Else():
                m.d.sync += overflow.eq(1)
            with m.If(sc.last):
                m.d.sync += scores_done.eq(1)

        # Pass 2: value columns through the serializer, one token per cycle.
        ser_valid, ser_idx, ser_ntok, ser_last, ser_codes, ser_end = self._serializer(
            m, sm, scores_done, val_done)

        # The token's score: row tok / tpc, slot tok % tpc of the scratch (tok counts pass 2's
        # tokens), read in the cycle the token goes to the softmax.
        log_tpc = tpc.bit_length() - 1
        tok = Signal(range(num.token_capacity + 1))
        m.d.comb += srp.addr.eq(tok >> log_tpc)
        slot_score = srp.data[tok[:log_tpc]] if tpc > 1 else srp.data[0]
        with m.If(sm.i.valid & sm.i.ready):
            m.d.sync += tok.eq(tok + 1)

        # One token per cycle into the softmax; its codes, last flag and "no token" flag ride
        # along as the tag (a column with ntok = 0 sends one weight-0 token to end the pass).
        tok_codes = ser_codes[ser_idx]
        dummy = ser_ntok == 0
        m.d.comb += [
            sm.max.eq(max_r),
            sm.i.valid.eq(ser_valid),
            sm.i.payload.score.eq(Mux(dummy, max_r, slot_score)),
            sm.i.payload.tag.eq(Cat(tok_codes.as_value(), ser_last & ser_end, dummy)),
        ]

        # Softmax weights into the histogram; the local sum is the sum of what goes in.
        tag = sm.o.payload.tag
        t_codes = tag[:nsub * b]
        t_last = tag[nsub * b]
        t_dummy = tag[nsub * b + 1]
        weight = Mux(t_dummy, 0, sm.o.payload.weight)
        m.d.comb += [
            hist.i_tok.valid.eq(sm.o.valid),
            sm.o.ready.eq(hist.i_tok.ready),
            hist.i_tok.payload.codes.eq(t_codes),
            hist.i_tok.payload.weight.eq(weight),
            hist.i_tok.payload.last.eq(t_last),
        ]
        with m.If(hist.i_tok.valid & hist.i_tok.ready):
            m.d.sync += sum_r.eq(sum_r + weight)

        # The partial: the MAC's D-vector beside the pass-1 max and the pass-2 sum.
        m.d.comb += [
            self.o_partial.valid.eq(mac.o_out.valid),
            mac.o_out.ready.eq(self.o_partial.ready),
            self.o_partial.payload.max.eq(max_r),
            self.o_partial.payload.sum.eq(sum_r),
            self.o_partial.payload.tokens.eq(tokens_r),
            self.o_partial.payload.overflow.eq(overflow),
            self.o_partial.payload.out.eq(mac.o_out.payload.out),
        ]
        with m.If(partial_fire):
            m.d.sync += [
                key_done.eq(0), scores_done.eq(0), val_done.eq(0),
                max_r.eq(num.score_min), sum_r.eq(0), tokens_r.eq(0), overflow.eq(0),
                wr_row.eq(0), tok.eq(0),
            ]
        return m

    def _serializer(self, m: Module, sm: Softmax, scores_done: Signal,
                    val_done: Signal) -> tuple:
        """Pass 2's value-group-to-token serializer.

        A value group is taken when the serializer is free or on its last token.
        """
        nv = self._num.values
        nsub, b, tpc = nv.subspaces, nv.code_bits, self._vtpc
        ser_valid = Signal()
        ser_idx = Signal(range(max(tpc, 2)))
        ser_ntok = Signal.like(self.i_val.payload.ntok)
        ser_last = Signal()
        ser_codes = Signal(data.ArrayLayout(data.ArrayLayout(unsigned(b), nsub), tpc))
        ser_end = Signal()  # the current token is the column's last (or its only dummy)
        ser_take = Signal()
        m.d.comb += [
            ser_end.eq(Mux(ser_ntok == 0, 1, ser_idx == ser_ntok - 1)),
            ser_take.eq(~ser_valid | (ser_end & sm.i.ready)),
            self.i_val.ready.eq(scores_done & ~val_done & ser_take),
        ]
        val_fire = self.i_val.valid & self.i_val.ready
        with m.If(val_fire):
            m.d.sync += [
                ser_valid.eq(1),
                ser_idx.eq(0),
                ser_ntok.eq(self.i_val.payload.ntok),
                ser_last.eq(self.i_val.payload.last),
                ser_codes.eq(self.i_val.payload.codes),
            ]
            with m.If(self.i_val.payload.last):
                m.d.sync += val_done.eq(1)
        with m.Elif(ser_valid & sm.i.ready):
            with m.If(ser_end):
                m.d.sync += ser_valid.eq(0)
            with m.Else():
                m.d.sync += ser_idx.eq(ser_idx + 1)
        return ser_valid, ser_idx, ser_ntok, ser_last, ser_codes, ser_end


def _running_max(m: Module, max_r: Signal, sc: object, tpc: int, num: Numerics) -> Signal:
    """max(max_r, valid slots of a score beat) through a balanced tree of named Mux nodes.

    Each node is a named signal: a Mux chain that reused its own output would double the
    expression at every slot.
    """
    level = [max_r]
    for k in range(tpc):
        cand = Signal(signed(num.score_bits), name=f"sc_cand{k}")
        m.d.comb += cand.eq(Mux(k < sc.ntok, sc.scores[k], num.score_min))
        level.append(cand)
    depth = 0
    while len(level) > 1:
        depth += 1
        nxt = []
        for i in range(0, len(level), 2):
            if i + 1 == len(level):
                nxt.append(level[i])
                continue
            node = Signal(signed(num.score_bits), name=f"sc_max{depth}_{i // 2}")
            a, c = level[i], level[i + 1]
            m.d.comb += node.eq(Mux(c > a, c, a))
            nxt.append(node)
        level = nxt
    return level[0]
