"""The bank's attention path for one head: scores, local softmax, histogram, value product.

Golden model: :func:`aqpim.sw.golden.intmodel.bank_partial` (max, sum and D-vector ``out``).
docs/attention.md describes the ports, the order of operations and the timing.
"""

from __future__ import annotations

from amaranth.hdl import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from aqpim.checks import check_int
from aqpim.geometry import MAX_QUERIES, Geometry
from aqpim.numerics import Numerics

from .attn_params import check_numerics
from .histogram import Histogram
from .lut_accumulate import LUTAccumulate, column_layout, lut_read_signature, lut_write_layout
from .softmax import Softmax
from .value_mac import ValueMAC, check_lanes, codebook_write_layout

__all__ = ["Attention", "partial_layout"]


def partial_layout(num: Numerics, queries: int = 1) -> data.StructLayout:
    """What a bank returns for one head and step: ``(max, sum, out[D])`` and the token count;
    with ``queries`` = G > 1 (GQA) one such partial per query head, ``query`` its index."""
    fields = {
        "max": signed(num.score_bits),
        "sum": unsigned(num.sum_bits),
        "tokens": unsigned((num.token_capacity + 1).bit_length()),
        "overflow": 1,
        "out": data.ArrayLayout(signed(num.out_bits), num.head_dim),
    }
    if queries > 1:
        fields["query"] = unsigned(max(1, (queries - 1).bit_length()))
    return data.StructLayout(fields)


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
    lut_read : In(:func:`aqpim.hw.lut_accumulate.lut_read_signature`)
        The LUT-accumulate unit's LUT read port (READ_LUT), for use between passes.
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
    (scratch read, serializer, softmax 2); the read-out and product take ``K x n + 4`` more
    cycles (``n = D / mac_lanes`` cycles per bin, :class:`aqpim.hw.value_mac.ValueMAC`) and
    ``o_partial`` is valid ``K x n + 9`` cycles after the last value column's transfer (no
    backpressure; docs/attention.md has the measured figures). For T tokens the whole pair
    takes about ``T/tpc + T + K x n + 16`` cycles.

    Parameters (keyword-only)
    -------------------------
    numerics : Numerics
        The configuration (:mod:`aqpim.numerics`); every width follows from it.
    queries : int
        G, query heads per pass (GQA, 1..8): G LUTs, G scores per scratch slot, G softmax
        units and G histograms fed in the same cycle, one value MAC that reads the G
        histograms out in turn; ``o_partial`` offers G partials (``query`` 0 .. G-1) and the
        pass pair ends when the last is taken. A pass always computes all G (the host reads
        only the ones it loaded LUTs for): the read-out costs G x (K_v x n + 4) cycles.
    mac_lanes : int or None
        The value MAC's multipliers (divides D_v, a multiple of d_v; None: ``min(16, D)``):
        each bin index takes ``n = D / mac_lanes`` cycles.
    """

    def __init__(
        self,
        *,
        numerics: Numerics,
        forwarding: bool = True,
        queries: int = 1,
        slots: int = 1,
        mac_lanes: int | None = None,
    ) -> None:
        num = check_numerics(numerics)
        self._num = num
        self._mac_lanes = check_lanes(num.values, mac_lanes)
        geom = Geometry(num)
        self._tpc = geom.key.tokens_per_column
        self._vtpc = geom.value.tokens_per_column
        self._forwarding = forwarding
        self._queries = check_int("queries", queries, 1, MAX_QUERIES)
        self._slots = check_int("slots", slots, 1, 8)
        ports = {
            "i_lut": In(stream.Signature(lut_write_layout(num.keys, self._queries))),
            "i_vcb": In(stream.Signature(codebook_write_layout(num.values))),
            "i_key": In(stream.Signature(column_layout(num.keys))),
            "i_val": In(stream.Signature(column_layout(num.values))),
            "o_partial": Out(stream.Signature(partial_layout(num, self._queries))),
            # the LUT-accumulate unit's LUT read port (READ_LUT; hw/lut_accumulate.py)
            "lut_read": In(lut_read_signature(num.keys, self._queries)),
        }
        if slots > 1:  # the value MAC's codebook of each head slot (hw/value_mac.py)
            ports["slot"] = In(range(slots))
        super().__init__(ports)

    @property
    def queries(self) -> int:
        return self._queries

    @property
    def mac_lanes(self) -> int:
        """The value MAC's multipliers (:class:`aqpim.hw.value_mac.ValueMAC` ``lanes``)."""
        return self._mac_lanes

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
        num, tpc, nq = self._num, self._tpc, self._queries
        nv = num.values  # the value side: histogram, value MAC, the codes in the tag
        nsub, b = nv.subspaces, nv.code_bits
        rows = self.scratch_rows

        # G query heads: G softmax units and G histograms fed in lockstep, one value MAC.
        m.submodules.lut_acc = la = LUTAccumulate(numerics=num.keys, queries=nq)
        sms, hists = [], []
        for q in range(nq):
            sfx = "" if q == 0 else f"_q{q}"
            m.submodules["softmax" + sfx] = sm_q = Softmax(numerics=num, tag_bits=nsub * b + 2)
            m.submodules["histogram" + sfx] = hist_q = Histogram(
                numerics=nv, forwarding=self._forwarding)
            sms.append(sm_q)
            hists.append(hist_q)
        sm = sms[0]
        m.submodules.value_mac = mac = ValueMAC(numerics=nv, lanes=self._mac_lanes,
                                                slots=self._slots)
        if self._slots > 1:
            m.d.comb += mac.slot.eq(self.slot)
        wiring.connect(m, wiring.flipped(self.i_lut), la.i_lut)
        wiring.connect(m, wiring.flipped(self.lut_read), la.lut_read)
        wiring.connect(m, wiring.flipped(self.i_vcb), mac.i_cb)

        # Pass state: each flag is set by its stream's last beat and cleared when the last
        # partial is taken, which starts the next pass pair.
        key_done = Signal()
        scores_done = Signal()
        val_done = Signal()
        max_r = [Signal(signed(num.score_bits), init=num.score_min, name=f"max_r{q}")
                 for q in range(nq)]
        sum_r = [Signal(unsigned(num.sum_bits), name=f"sum_r{q}") for q in range(nq)]
        tokens_r = Signal(unsigned((num.token_capacity + 1).bit_length()))
        overflow = Signal()
        wr_row = Signal(range(rows + 1))
        # the query head whose histogram the MAC reads out (no register with one query head)
        sel = Signal(range(nq)) if nq > 1 else C(0, 1)
        partial_fire = self.o_partial.valid & self.o_partial.ready
        pass_end = partial_fire & (sel == nq - 1)

        # Pass 1: key columns into the LUT-accumulate unit until the last one.
        m.d.comb += [
            la.i_cols.payload.eq(self.i_key.payload),
            la.i_cols.valid.eq(self.i_key.valid & ~key_done),
            self.i_key.ready.eq(la.i_cols.ready & ~key_done),
            la.o_scores.ready.eq(1),  # the scratch write never stalls
        ]
        with m.If(self.i_key.valid & self.i_key.ready & self.i_key.payload.last):
            m.d.sync += key_done.eq(1)

        # Scores into the scratch (one row per column, G scores per slot) and the running
        # maximum of the valid slots of each query head.
        row_shape = data.ArrayLayout(signed(num.score_bits), tpc)
        scratch = Memory(shape=row_shape if nq == 1 else data.ArrayLayout(row_shape, nq),
                         depth=rows, init=[])
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
        for q in range(nq):
            scores_q = sc.scores if nq == 1 else sc.scores[q]
            beat_max = _running_max(m, max_r[q], scores_q, sc.ntok, tpc, num,
                                    "" if q == 0 else f"q{q}_")
            with m.If(sc_fire):
                m.d.sync += max_r[q].eq(beat_max)
        with m.If(sc_fire):
            m.d.sync += tokens_r.eq(tokens_r + sc.ntok)
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
        with m.If(sm.i.valid & sm.i.ready):
            m.d.sync += tok.eq(tok + 1)

        # One token per cycle into every softmax (all advance together: same tokens, same
        # pipeline); its codes, last flag and "no token" flag ride along as the tag (a column
        # with ntok = 0 sends one weight-0 token to end the pass). The "no token" score is
        # whatever the scratch gives: its weight is forced to 0 behind the softmax, so no
        # select sits in front of the softmax's subtractor (with one that path was 21 gate
        # levels, over the budget of 20).
        tok_codes = ser_codes[ser_idx]
        dummy = ser_ntok == 0
        for q, (sm_q, hist_q) in enumerate(zip(sms, hists, strict=True)):
            row = srp.data if nq == 1 else srp.data[q]
            slot_score = row[tok[:log_tpc]] if tpc > 1 else row[0]
            m.d.comb += [
                sm_q.max.eq(max_r[q]),
                sm_q.i.valid.eq(ser_valid),
                sm_q.i.payload.score.eq(slot_score),
                sm_q.i.payload.tag.eq(Cat(tok_codes.as_value(), ser_last & ser_end, dummy)),
            ]
            # Softmax weights into the histogram; the local sum is the sum of what goes in.
            tag = sm_q.o.payload.tag
            weight = Mux(tag[nsub * b + 1], 0, sm_q.o.payload.weight)
            m.d.comb += [
                hist_q.i_tok.valid.eq(sm_q.o.valid),
                sm_q.o.ready.eq(hist_q.i_tok.ready),
                hist_q.i_tok.payload.codes.eq(tag[:nsub * b]),
                hist_q.i_tok.payload.weight.eq(weight),
                hist_q.i_tok.payload.last.eq(tag[nsub * b]),
            ]
            with m.If(hist_q.i_tok.valid & hist_q.i_tok.ready):
                m.d.sync += sum_r[q].eq(sum_r[q] + weight)

        # The histograms through the one value MAC in turn; each partial is the MAC's D-vector
        # beside its query head's pass-1 max and pass-2 sum.
        if nq == 1:
            wiring.connect(m, hists[0].o_bins, mac.i_bins)
        else:
            with m.Switch(sel):
                for q, hist_q in enumerate(hists):
                    with m.Case(q):
                        m.d.comb += [mac.i_bins.payload.eq(hist_q.o_bins.payload),
                                     mac.i_bins.valid.eq(hist_q.o_bins.valid),
                                     hist_q.o_bins.ready.eq(mac.i_bins.ready)]
            m.d.comb += self.o_partial.payload.query.eq(sel)
            with m.If(partial_fire):
                m.d.sync += sel.eq(Mux(sel == nq - 1, 0, sel + 1))
        m.d.comb += [
            self.o_partial.valid.eq(mac.o_out.valid),
            mac.o_out.ready.eq(self.o_partial.ready),
            self.o_partial.payload.tokens.eq(tokens_r),
            self.o_partial.payload.overflow.eq(overflow),
            self.o_partial.payload.out.eq(mac.o_out.payload.out),
        ]
        with m.Switch(sel):
            for q in range(nq):
                with m.Case(q):
                    m.d.comb += [self.o_partial.payload.max.eq(max_r[q]),
                                 self.o_partial.payload.sum.eq(sum_r[q])]
        with m.If(pass_end):
            m.d.sync += [
                key_done.eq(0), scores_done.eq(0), val_done.eq(0),
                tokens_r.eq(0), overflow.eq(0), wr_row.eq(0), tok.eq(0),
                *[r.eq(num.score_min) for r in max_r], *[r.eq(0) for r in sum_r],
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


def _running_max(m: Module, max_r: Signal, scores: object, ntok: object, tpc: int,
                 num: Numerics, prefix: str = "") -> Signal:
    """max(max_r, valid slots of a score beat) through a balanced tree of named Mux nodes.

    Each node is a named signal: a Mux chain that reused its own output would double the
    expression at every slot.
    """
    level = [max_r]
    for k in range(tpc):
        cand = Signal(signed(num.score_bits), name=f"{prefix}sc_cand{k}")
        m.d.comb += cand.eq(Mux(k < ntok, scores[k], num.score_min))
        level.append(cand)
    depth = 0
    while len(level) > 1:
        depth += 1
        nxt = []
        for i in range(0, len(level), 2):
            if i + 1 == len(level):
                nxt.append(level[i])
                continue
            node = Signal(signed(num.score_bits), name=f"{prefix}sc_max{depth}_{i // 2}")
            a, c = level[i], level[i + 1]
            m.d.comb += node.eq(Mux(c > a, c, a))
            nxt.append(node)
        level = nxt
    return level[0]
