"""LUT-accumulate: the scores of the tokens in one 256-bit key-code column per cycle.

``s_t = sum_m LUT[m, code[t, m]]`` exactly (golden model:
:func:`aqpim.sw.golden.intmodel.lut_accumulate`;
column layout: :func:`aqpim.sw.golden.intmodel.pack_columns`).
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from aqpim.checks import check_int
from aqpim.geometry import MAX_QUERIES, Geometry
from aqpim.numerics import Numerics

from .attn_params import check_numerics
from .skid import CreditSkid

__all__ = [
    "LUTAccumulate",
    "column_layout",
    "lut_read_signature",
    "lut_write_layout",
    "score_beat_layout",
    "index_shape",
]


def index_shape(count: int) -> unsigned:
    """Unsigned shape that holds every index in ``[0, count)`` (at least 1 bit)."""
    return unsigned(max(1, (count - 1).bit_length()))


def ntok_shape(tpc: int) -> unsigned:
    """Unsigned shape of a per-beat token count in ``[0, tpc]``."""
    return unsigned(tpc.bit_length())


def lut_write_layout(num: Numerics, queries: int = 1) -> data.StructLayout:
    """One 256-bit LUT beat: ``values[i]`` is flat entry ``row*E + i``, i.e. ``LUT[m][j]`` with
    ``m*K + j = row*E + i`` (the LOAD_LUT packing of docs/isa.md, unpacked to ``lut_bits``).
    Slots past ``M*K`` in a partly filled last beat are ignored. With ``queries`` = G > 1
    (GQA) a ``query`` field says which of the G LUTs the beat writes.
    """
    fields = {
        "row": index_shape(Geometry(num).lut_beats),
        "values": data.ArrayLayout(signed(num.lut_bits), Geometry(num).lut_entries_per_beat),
    }
    if queries > 1:
        fields["query"] = index_shape(queries)
    return data.StructLayout(fields)


def lut_read_signature(num: Numerics, queries: int = 1) -> wiring.Signature:
    """The READ_LUT read port, seen from the reader: ``en`` with entry ``LUT[query][sub][idx]``
    out, the entry (``lut_bits`` signed) on ``data`` one cycle later."""
    return wiring.Signature({
        "en": Out(1),
        "query": Out(index_shape(queries)),
        "sub": Out(index_shape(num.subspaces)),
        "idx": Out(unsigned(num.code_bits)),
        "data": In(signed(num.lut_bits)),
    })


def column_layout(num: Numerics) -> data.StructLayout:
    """A code group as the bank stores it, plus how many of its tokens are real.

    A group is one 256-bit column of ``tpc`` tokens, or the ``M*b / 256`` columns of one token
    side by side (:class:`aqpim.geometry.CodeSide`); ``num`` is one side's configuration.
    ``codes[k][m]`` is token ``k``'s code for subspace ``m``, at bits ``[(k*M+m)*b, +b)`` of
    the group: exactly :func:`aqpim.sw.golden.intmodel.pack_columns`. ``ntok`` in
    ``[0, tpc]`` counts the valid tokens (slots ``0..ntok-1``); only the last column of a
    pass may have ``ntok < tpc``, and ``ntok = 0`` with ``last = 1`` ends a pass with no
    tokens (zero tokens in the bank). ``last`` marks the final column of a pass.
    """
    tpc = Geometry(num).tokens_per_column
    return data.StructLayout({
        "codes": data.ArrayLayout(
            data.ArrayLayout(unsigned(num.code_bits), num.subspaces), tpc),
        "ntok": ntok_shape(tpc),
        "last": 1,
    })


def score_beat_layout(num: Numerics, queries: int = 1) -> data.StructLayout:
    """The scores of one column: ``scores[k]`` for slot ``k`` (``scores[g][k]`` for query head
    g when ``queries`` = G > 1); ``ntok`` and ``last`` as given."""
    tpc = Geometry(num).tokens_per_column
    scores = data.ArrayLayout(signed(num.score_bits), tpc)
    return data.StructLayout({
        "scores": scores if queries == 1 else data.ArrayLayout(scores, queries),
        "ntok": ntok_shape(tpc),
        "last": 1,
    })


class LUTAccumulate(wiring.Component):
    """Scores of every token of a 256-bit key-code column, one column per cycle.

    ``scores[k] = sum_m LUT[m, codes[k][m]]`` for the ``tpc = 256 / (M*b)`` token slots of
    the column, exact in ``score_bits`` (no saturation: the width is the exact sum width).

    Structure: M LUT memories (one per subspace), each organised as rows of ``R = min(E, K)``
    entries (``K / R`` rows; E = ``Geometry.lut_entries_per_beat``), so one 256-bit LUT beat is one
    row write - for K < E one beat fills E/K subspace memories in the same cycle. Each memory
    has ``tpc`` asynchronous read ports addressed by a code's high bits; the code's low ``log2
    R`` bits select the entry from the row in the same cycle, and only that ``lut_bits`` entry
    is registered (selecting after a registered row was 21 gate levels and, at K <= E where the
    LUT is flip-flops, as many read-register bits as LUT bits). So all ``M * tpc = 256 / b``
    codes of a column are looked up in the same cycle; then a balanced adder tree over the
    M subspaces per token, one register stage per tree level. The stages have no enable: they
    advance every cycle, and the last one writes an output FIFO of ``latency + 1`` entries (a
    skid buffer in credit form): a column is taken only while the FIFO has room for it and
    every column in flight, so back-pressure on ``o_scores`` never reaches the pipeline's
    flip-flops (a global stall enable drove all of them) and ``i_cols.ready`` comes from a
    register (the count of columns taken and not yet delivered), not from ``o_scores.ready``.

    Ports
    -----
    i_lut : In(stream of :func:`lut_write_layout`)
        LUT writes, one 256-bit beat (E entries) per cycle. Accepted only while no column is
        in flight (ready is low otherwise), and a pending LUT write holds off new columns, so
        every column is scored against one consistent LUT. Loading the M*K entries takes
        ``ceil(M*K / E)`` cycles (64 at M = 64, K = 16, L = 16; was M*K = 1024 at one entry
        per cycle).
    i_cols : In(stream of :func:`column_layout`)
        Key-code columns.
    o_scores : Out(stream of :func:`score_beat_layout`)
        One beat per column, in order, from the FIFO (first-word fall-through); slots
        ``k >= ntok`` carry don't-care scores.
    lut_read : In(:func:`lut_read_signature`)
        One LUT entry per cycle for the bank's READ_LUT, through the column path's own
        read ports: while ``en`` is high, token slot 0's code of every subspace is ``idx``, so
        the registered entries (stage 1) hold ``LUT[q][m][idx]`` for every q and m the next
        cycle and ``data`` selects ``[query][sub]`` of them. No LUT copy and no extra read
        port on the LUT memories; use it only while no column is in flight (the bank runs one
        command at a time); the entry registers advance every cycle.

    The running maximum is not tracked here: :class:`aqpim.hw.attention.Attention` does it
    where the scores are stored (only there is ``ntok`` applied).

    Latency and throughput
    ----------------------
    ``1 + ceil(log2 M)`` cycles from a column's transfer to its scores being valid; II = 1
    (one 256-bit column, i.e. ``tpc`` tokens, per cycle) with no backpressure. A bank delivers
    a column every nCCD_L = 4 cycles, so the unit runs at 25 % duty behind one bank. The FIFO
    is written where the last pipeline register was, so it adds no cycle. Under back-pressure
    up to ``latency + 1`` columns wait in it; once the output is taken again the unit resumes
    at one column per cycle.

    GQA: with ``queries`` = G > 1 the unit holds G LUTs (G x M memories, each read by the
    same codes) and scores every column against all of them in the same cycle: one pass over
    the key codes serves G query heads. Latency and throughput do not change; the LUT storage,
    the read ports and the adder trees grow G times.

    Parameters (keyword-only)
    -------------------------
    numerics : Numerics
        The configuration (:mod:`aqpim.numerics`); every width follows from it.
    queries : int
        G, LUTs scored per column (1..8).
    """

    def __init__(
        self,
        *,
        numerics: Numerics,
        queries: int = 1,
    ) -> None:
        num = check_numerics(numerics)
        self._num = num
        self._tpc = Geometry(num).tokens_per_column
        self._g = check_int("queries", queries, 1, MAX_QUERIES)
        super().__init__({
            "i_lut": In(stream.Signature(lut_write_layout(num, self._g))),
            "i_cols": In(stream.Signature(column_layout(num))),
            "o_scores": Out(stream.Signature(score_beat_layout(num, self._g))),
            "lut_read": In(lut_read_signature(num, self._g)),
        })

    @property
    def queries(self) -> int:
        """G, the LUTs (query heads) every column is scored against."""
        return self._g

    @property
    def numerics(self) -> Numerics:
        """The configuration every width comes from."""
        return self._num

    @property
    def tokens_per_column(self) -> int:
        """Token slots per 256-bit column, ``256 / (M*b)``."""
        return self._tpc

    @property
    def latency(self) -> int:
        """Cycles from a column's transfer to its scores on ``o_scores`` (no backpressure)."""
        return 1 + (self._num.subspaces - 1).bit_length()

    @property
    def skid_depth(self) -> int:
        """Entries of the output FIFO: ``latency + 1``, every column that can be in flight."""
        return self.latency + 1

    def elaborate(self, platform) -> Module:
        m = Module()
        num, tpc = self._num, self._tpc
        nsub = num.subspaces
        assert nsub * num.code_bits * tpc == Geometry(num).key.group_bits
        stages = self.latency
        depth = self.skid_depth

        # No stall enable (it drove every pipeline flop): stages 1 .. L-1 advance every cycle
        # and stage L is an output FIFO written where the last register was, so the latency
        # is unchanged. A column is taken only while the FIFO has room for it and for every
        # column in flight (a credit count: taken and not yet delivered < depth), so no write
        # ever finds the FIFO full; ready depends on registers only, not on o_scores.ready.
        skid = CreditSkid(m, self.o_scores, depth)

        # LUT writes only when no column is in flight; a waiting write blocks new columns.
        m.d.comb += [
            self.i_lut.ready.eq(skid.empty),
            self.i_cols.ready.eq(skid.room & ~self.i_lut.valid),
        ]
        lut_fire = self.i_lut.valid & self.i_lut.ready
        col_fire = self.i_cols.valid & self.i_cols.ready
        skid.take(col_fire)

        # Stage 1: one memory per subspace, rows of R entries, so a LUT beat is one row write
        # (E/K subspaces at once for K < E), and tpc read ports: a whole column in one cycle.
        ent = Geometry(num).lut_entries_per_beat
        kc = num.centroids
        rlen = min(ent, kc)  # entries per row
        nrows = kc // rlen
        rbits = (rlen - 1).bit_length()  # code bits that select within a row
        row_in = self.i_lut.payload.row
        nq = self._g
        levels: list[list[list]] = [[[None] * nsub for _ in range(tpc)] for _ in range(nq)]
        for q, s in ((q, s) for q in range(nq) for s in range(nsub)):
            level = levels[q]
            first = s * kc  # flat index of LUT[s][0]
            beat0, off = divmod(first, ent)
            mem = Memory(shape=data.ArrayLayout(signed(num.lut_bits), rlen), depth=nrows,
                         init=[])
            m.submodules[f"lut{s}" if q == 0 else f"lut{s}_q{q}"] = mem
            wp = mem.write_port()
            if nrows > 1:  # K >= E: subspace s owns beats beat0 .. beat0 + K/E - 1 whole
                hit = (row_in >> (nrows - 1).bit_length()) == (beat0 >> (nrows - 1).bit_length())
                m.d.comb += wp.addr.eq(row_in[:(nrows - 1).bit_length()])
            else:  # K <= E: subspace s is slots off .. off + K - 1 of beat beat0
                hit = row_in == beat0
            if nq > 1:  # the beat's query head
                hit = hit & (self.i_lut.payload.query == q)
            m.d.comb += wp.en.eq(lut_fire & hit)
            for i in range(rlen):
                m.d.comb += wp.data[i].eq(self.i_lut.payload.values[off + i])
            for k in range(tpc):
                # Asynchronous row read and the entry select before the register: only the
                # selected lut_bits entry is registered (a synchronous read registered whole
                # rows of R entries: at K <= E the LUT is flip-flops and the read registers
                # were as many again).
                rp = mem.read_port(domain="comb")
                code = self.i_cols.payload.codes[k][s]
                if k == 0:  # READ_LUT reads entry idx of every subspace through slot 0
                    code = Mux(self.lut_read.en, self.lut_read.idx, code)
                if nrows > 1:
                    m.d.comb += rp.addr.eq(code[rbits:])
                level[k][s] = self._stage(
                    m, rp.data[code[:rbits]] if rlen > 1 else rp.data[0],
                    signed(num.lut_bits), 1,
                    f"s1_ent{s}_{k}" if q == 0 else f"s1_q{q}_ent{s}_{k}")

        # READ_LUT: the entry of (query, sub) from slot 0's registered entries, a cycle later.
        rd = self.lut_read
        rd_q = Signal.like(rd.query, name="lut_read_q")
        rd_s = Signal.like(rd.sub, name="lut_read_sub")
        with m.If(rd.en):
            m.d.sync += [rd_q.eq(rd.query), rd_s.eq(rd.sub)]
        ents = Array(Array(levels[q][0][s] for s in range(nsub)) for q in range(nq))
        m.d.comb += rd.data.eq(ents[rd_q if nq > 1 else 0][rd_s])

        # Token count and end-of-pass flag travel beside the data (stages 1 .. L-1).
        valid, ntok, last = [col_fire], [self.i_cols.payload.ntok], [self.i_cols.payload.last]
        for i in range(1, stages):
            valid.append(Signal(name=f"s{i}_valid"))
            ntok.append(Signal.like(self.i_cols.payload.ntok, name=f"s{i}_ntok",
                                    reset_less=True))
            last.append(Signal(name=f"s{i}_last", reset_less=True))
            m.d.sync += [valid[i].eq(valid[i - 1]), ntok[i].eq(ntok[i - 1]),
                         last[i].eq(last[i - 1])]

        # Adder tree per query head, one register per level: exact, each level one bit wider;
        # the last level's sums go into the FIFO.
        beat = Signal(score_beat_layout(num, nq))
        for q in range(nq):
            level = self._adder_tree(m, levels[q], "" if q == 0 else f"q{q}_")
            scores = beat.scores if nq == 1 else beat.scores[q]
            for k in range(tpc):
                m.d.comb += scores[k].eq(level[k][0])
        m.d.comb += [
            beat.ntok.eq(ntok[-1]),
            beat.last.eq(last[-1]),
        ]
        skid.write(beat.as_value(), valid[-1])
        return m

    def _stage(self, m: Module, value, shape, stage: int, name: str) -> Signal:
        """``value`` as stage ``stage``'s output: a register (no enable, no reset: only the
        valid bits need one), or for the last stage a combinational signal that the output
        FIFO stores."""
        sig = Signal(shape, name=name, reset_less=stage < self.latency)
        if stage < self.latency:
            m.d.sync += sig.eq(value)
        else:
            m.d.comb += sig.eq(value)
        return sig

    def _adder_tree(self, m: Module, level: list[list], prefix: str) -> list[list]:
        """The M looked-up entries of each token summed, one stage per level."""
        width = self._num.lut_bits
        depth = 0
        while len(level[0]) > 1:
            depth += 1
            width += 1
            nxt: list[list] = []
            for k in range(self._tpc):
                row = []
                for i in range(0, len(level[k]), 2):
                    pair = level[k][i:i + 2]
                    row.append(self._stage(
                        m, pair[0] + pair[1] if len(pair) == 2 else pair[0], signed(width),
                        depth + 1, f"{prefix}s{depth + 1}_t{k}_sum{i // 2}"))
                nxt.append(row)
            level = nxt
        assert depth + 1 == self.latency
        return level
