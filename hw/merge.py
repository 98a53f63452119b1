"""Channel merge in the buffer die: the banks' partials of one channel and head -> one partial.

Golden model: :func:`aqpim.sw.golden.intmodel.channel_merge`; arithmetic, rounding and widths:
docs/numerics.md, "Channel merge in the buffer die". With ``G`` the largest bank maximum over
non-empty banks and ``a_b = (EXP2[(G - max_b) mod 2^F] << R) >> ((G - max_b) >> F)`` (the
softmax's exp2 ROM, shifted with R guard bits; 0 for an empty bank)::

    max = G
    sum = (sum_b sum_b * a_b + 2^(P+R-1)) >> (P + R)
    out = (sum_b out_b * a_b + 2^(P+R-1)) >> (P + R)

One merge (a *group*: one channel, one query head) is two phases on two input streams:

1. ``i_head``: ``banks`` beats ``{max, sum}``, bank 0 first. Each is written to a small
   table (``banks`` entries, one memory: the buffer die is a logic die) and the running
   maximum over the non-empty banks is kept. No ``i_out`` beat is taken in this phase.
2. ``i_out``: ``banks * D / E`` beats of E output elements, *slice-major*: for slice
   ``s = 0 .. D/E - 1``, for bank ``b = 0 .. banks - 1``: ``out_b[s*E : (s+1)*E]``. Each beat
   reads its bank's entry back, looks ``a_b`` up and multiplies-accumulates E lanes (and the
   sum during slice 0). After bank ``banks - 1`` of a slice, one ``o`` beat
   ``{max, sum, index = s, last = (s == D/E - 1), out[E]}`` carries the rounded slice.

The reader (the buffer die's channel controller) chooses that order: it reads all headers,
then the output registers slice by slice; a bank's partial is held in its registers until read.

Latency and throughput
----------------------
Pipeline ``s0`` (beat taken, table read) -> ``s1`` (delta, ROM read) -> ``s2`` (shift: a_b)
-> ``s3`` (E + 1 products, each as two carry-save pairs: :mod:`aqpim.hw.carry_save`) -> ``s4``
(carry-save accumulation over the banks of a slice) -> ``s5`` (one carry-propagate addition per
lane, rounding shift, output register): the ``o`` beat of a slice is valid
:attr:`Merge.latency` = 6 cycles after its last ``i_out`` beat was taken. No stage has a
multiplier's carry chain or more than one adder's: the deepest is 19 generic gate levels at
the defaults (docs/silicon.md), inside the tCK x 2 budget of 20. One ``i_head`` beat per cycle
and one ``i_out`` beat per cycle, so a group takes ``banks`` + ``banks * D / E`` cycles of input
(2,112 at 64 banks, D = 128, E = 4: the 34 beats of 32 B of each bank's partial arrive at one
beat per cycle), plus a drain of up to 6 cycles before the next group's headers are taken (the
table and G are not double-buffered). The stages have no enable: back-pressure on ``o`` is
absorbed by an output FIFO of :attr:`Merge.skid_depth` entries (1 at 7 or more banks) written
where the ``o`` register was, and a slice's last ``i_out`` beat waits while the FIFO could not
take its ``o`` beat (a credit count); nothing is dropped.

Parameters (keyword-only)
-------------------------
numerics, head_dim, subspaces, elem_bits, lut_bits, lut_frac_bits, exp_bits, token_capacity :
    The PQ-attention configuration of the bank partials (``Numerics`` or its fields).
banks : int
    Banks merged per group (64 in an HBM3 channel: 1024 banks / 16 channels).
lanes : int
    E, output elements per ``i_out`` beat and multipliers; divides ``head_dim``.
guard_bits : int
    R, guard bits of the rescale factor (default :data:`aqpim.numerics.MERGE_GUARD_BITS`).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from aqpim.checks import check_int
from aqpim.numerics import MERGE_GUARD_BITS, Numerics, merge_widths

from . import carry_save
from .attn_params import numerics_from
from .skid import CreditSkid

__all__ = ["Merge", "head_layout", "out_in_layout", "merged_layout"]


def head_layout(num: Numerics) -> data.StructLayout:
    """One bank's ``{max, sum}`` (the bank partial's formats)."""
    return data.StructLayout({"max": signed(num.score_bits), "sum": unsigned(num.sum_bits)})


def out_in_layout(num: Numerics, lanes: int) -> data.StructLayout:
    """E output elements of one bank partial (signed ``out_bits``)."""
    return data.StructLayout({"out": data.ArrayLayout(signed(num.out_bits), lanes)})


def merged_layout(num: Numerics, banks: int, lanes: int,
                  guard_bits: int = MERGE_GUARD_BITS) -> data.StructLayout:
    """One slice of the channel partial: ``{max, sum, index, last, out[E]}``."""
    w = merge_widths(num, banks, guard_bits)
    slices = num.head_dim // lanes
    return data.StructLayout({
        "max": signed(num.score_bits),
        "sum": unsigned(w["sum"]),
        "index": unsigned(max(1, (slices - 1).bit_length())),
        "last": 1,
        "out": data.ArrayLayout(signed(w["out"]), lanes),
    })


class Merge(wiring.Component):
    """Channel merge of ``banks`` bank partials (see the module docstring).

    Ports
    -----
    i_head : In(stream of :func:`head_layout`)
    i_out : In(stream of :func:`out_in_layout`)
    o : Out(stream of :func:`merged_layout`)
    """

    def __init__(
        self,
        *,
        numerics: Numerics | None = None,
        head_dim: int | None = None,
        subspaces: int | None = None,
        elem_bits: int | None = None,
        lut_bits: int | None = None,
        lut_frac_bits: int | None = None,
        exp_bits: int | None = None,
        token_capacity: int | None = None,
        banks: int = 64,
        lanes: int = 4,
        guard_bits: int = MERGE_GUARD_BITS,
    ) -> None:
        num = numerics_from(
            numerics, head_dim=head_dim, subspaces=subspaces, elem_bits=elem_bits,
            lut_bits=lut_bits, lut_frac_bits=lut_frac_bits, exp_bits=exp_bits,
            token_capacity=token_capacity,
        )
        self._banks = check_int("banks", banks, 1, 4096)
        self._lanes = check_int("lanes", lanes, 1, num.head_dim)
        if num.head_dim % self._lanes:
            raise ValueError(f"lanes {lanes} must divide head_dim {num.head_dim}")
        self._guard = check_int("guard_bits", guard_bits, 0, 32)
        self._num = num
        super().__init__({
            "i_head": In(stream.Signature(head_layout(num))),
            "i_out": In(stream.Signature(out_in_layout(num, self._lanes))),
            "o": Out(stream.Signature(
                merged_layout(num, self._banks, self._lanes, self._guard))),
        })

    @property
    def numerics(self) -> Numerics:
        return self._num

    @property
    def banks(self) -> int:
        return self._banks

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def guard_bits(self) -> int:
        return self._guard

    @property
    def slices(self) -> int:
        """D / E: ``i_out`` beats per bank and ``o`` beats per group."""
        return self._num.head_dim // self._lanes

    @property
    def latency(self) -> int:
        """Cycles from a slice's last ``i_out`` transfer to its ``o`` beat (no backpressure)."""
        return 6

    @property
    def skid_depth(self) -> int:
        """Entries of the output FIFO, ``ceil((latency + 1) / banks)``: the ``o`` beats that
        a window of latency + 1 cycles can start (one per ``banks`` input beats), so a slice's
        last beat never waits for credit without back-pressure (1 at 7 or more banks: the
        FIFO is then the one output register it replaced)."""
        return -(-(self.latency + 1) // self._banks)

    def elaborate(self, platform: object) -> Module:
        m = Module()
        num, nb, e = self._num, self._banks, self._lanes
        w = merge_widths(num, nb, self._guard)
        frac, r_bits = num.lut_frac_bits, self._guard
        shift = num.exp_bits + r_bits  # 2^(P+R) is a scale of one
        slice_bits = max(1, (self.slices - 1).bit_length())

        # No stall enable: s1 .. s5 advance every cycle and s5 writes an output FIFO where the
        # o register was (latency unchanged). Only a slice's last beat makes an o beat, so only
        # that beat waits for credit: taken while (o beats owed: taken, not yet delivered) <
        # FIFO depth; ready is a register compare, not a path from o.ready.
        s1_valid, s2_valid, s3_valid, s4_valid = Signal(), Signal(), Signal(), Signal()
        depth = self.skid_depth
        skid = CreditSkid(m, self.o, depth)

        # Phase 1: headers into the table, running max over the non-empty banks.
        drained = Signal()
        phase_out, g_max, g_any, rd = self._headers(m, drained)

        # Phase 2, s0: take a beat, read its bank's header (synchronous read).
        bank = Signal(range(nb))
        slc = Signal(range(self.slices))
        m.d.comb += self.i_out.ready.eq(phase_out & ((bank != nb - 1) | skid.room))
        take = self.i_out.valid & self.i_out.ready
        skid.take(take & (bank == nb - 1))
        m.d.comb += rd.addr.eq(bank)
        s1_out = Signal(self.i_out.payload.shape())
        s1_first, s1_sum_slice, s1_end, s1_last = Signal(), Signal(), Signal(), Signal()
        s1_slice = Signal(slice_bits)
        m.d.sync += [
            s1_valid.eq(take), s1_out.eq(self.i_out.payload),
            s1_first.eq(bank == 0), s1_end.eq(bank == nb - 1),
            s1_sum_slice.eq(slc == 0), s1_slice.eq(slc),
            s1_last.eq(slc == self.slices - 1),
        ]
        with m.If(take):
            m.d.sync += bank.eq(Mux(bank == nb - 1, 0, bank + 1))
            with m.If(bank == nb - 1):
                m.d.sync += slc.eq(Mux(slc == self.slices - 1, 0, slc + 1))
                with m.If(slc == self.slices - 1):
                    # group done: the next group's headers may come once s1..s4 drain
                    m.d.sync += phase_out.eq(0)

        # s1: delta = G - max_b >= 0 for a non-empty bank; its fraction addresses the exp2 ROM.
        rom = Memory(shape=unsigned(num.weight_bits), depth=1 << frac, init=num.exp_rom)
        m.submodules.exp2_rom = rom
        rp = rom.read_port(domain="sync")
        s1_head = rd.data
        s1_delta = Signal(unsigned(num.delta_bits))
        m.d.comb += [s1_delta.eq(g_max - s1_head.max), rp.addr.eq(s1_delta[:frac])]
        # the whole integer part: a shift by P+1+R or more gives 0, so no saturating compare
        # is needed after the subtraction (it made this stage the merge's deepest)
        s2_n = Signal(unsigned(num.delta_bits - frac))
        s2_empty = Signal()
        s2_sum = Signal(unsigned(num.sum_bits))
        s2_out = Signal(self.i_out.payload.shape())
        s2_first, s2_sum_slice, s2_end, s2_last = Signal(), Signal(), Signal(), Signal()
        s2_slice = Signal(slice_bits)
        s1_int = s1_delta[frac:]
        m.d.sync += [
            s2_valid.eq(s1_valid), s2_n.eq(s1_int),
            s2_empty.eq(s1_head.sum == 0), s2_sum.eq(s1_head.sum), s2_out.eq(s1_out),
            s2_first.eq(s1_first), s2_end.eq(s1_end), s2_sum_slice.eq(s1_sum_slice),
            s2_slice.eq(s1_slice), s2_last.eq(s1_last),
        ]

        # s2: a_b = (EXP2[f] << R) >> n (0 for an empty bank); operands ride along.
        s3_a = Signal(unsigned(w["scale"]))
        s3_sum = Signal(unsigned(num.sum_bits))
        s3_out = Signal(self.i_out.payload.shape())
        s3_first, s3_sum_slice, s3_end, s3_last = Signal(), Signal(), Signal(), Signal()
        s3_slice = Signal(slice_bits)
        m.d.sync += [
            s3_valid.eq(s2_valid), s3_a.eq(Mux(s2_empty, 0, (rp.data << r_bits) >> s2_n)),
            s3_sum.eq(s2_sum), s3_out.eq(s2_out), s3_first.eq(s2_first),
            s3_end.eq(s2_end), s3_sum_slice.eq(s2_sum_slice), s3_slice.eq(s2_slice),
            s3_last.eq(s2_last),
        ]

        # s3: E + 1 exact products in carry-save form (no carry chain: the final additions wait
        # for s5), registered.
        # two halves of each partial-product tree: 12 rows each at the default 24-bit scale
        s4_pout = [[Signal(unsigned(w["acc_out"]), name=f"s4_pout{i}_{j}") for j in range(4)]
                   for i in range(e)]
        s4_psum = [Signal(unsigned(w["acc_sum"]), name=f"s4_psum_{j}") for j in range(4)]
        s4_first, s4_sum_slice, s4_end, s4_last = Signal(), Signal(), Signal(), Signal()
        s4_slice = Signal(slice_bits)
        psum = carry_save.multiply(m, s3_sum, s3_a, w["acc_sum"], "psum", parts=2)
        pout = [carry_save.multiply(m, s3_out.out[i], s3_a, w["acc_out"], f"pout{i}", parts=2)
                for i in range(e)]
        m.d.sync += [
            s4_valid.eq(s3_valid), s4_first.eq(s3_first), s4_end.eq(s3_end),
            s4_sum_slice.eq(s3_sum_slice), s4_slice.eq(s3_slice), s4_last.eq(s3_last),
        ]
        for i in range(e):
            m.d.sync += [reg.eq(val) for reg, val in zip(s4_pout[i], pout[i], strict=True)]
        m.d.sync += [reg.eq(val) for reg, val in zip(s4_psum, psum, strict=True)]

        # s4: accumulate over the banks of a slice (carry-save); s5: final sums, rounded.
        s5_valid, s5_last = self._accumulate(
            m, skid, w, shift, s4_pout, s4_psum, s4_valid, s4_first, s4_sum_slice, s4_end,
            s4_last, s4_slice, g_max, g_any)
        m.d.comb += drained.eq(~(s1_valid | s2_valid | s3_valid | s4_valid | s5_valid))

        # End of group: G and the "any" flag go back to reset for the next group's headers.
        with m.If(s5_valid & s5_last):
            m.d.sync += [g_max.eq(num.score_min), g_any.eq(0)]
        return m

    def _headers(self, m: Module, drained: Value) -> tuple:
        """Phase 1: each bank's header into the table and the running max over the non-empty
        banks. Headers of the next group wait until the pipeline has drained: G and the table
        are single copies."""
        num, nb = self._num, self._banks
        phase_out = Signal()
        head_cnt = Signal(range(nb))
        g_max = Signal(signed(num.score_bits), init=num.score_min)
        g_any = Signal()
        table = Memory(shape=head_layout(num), depth=nb, init=[])
        m.submodules.table = table
        wr = table.write_port()
        rd = table.read_port(domain="sync")
        m.d.comb += [
            self.i_head.ready.eq(~phase_out & drained),
            wr.addr.eq(head_cnt),
            wr.data.eq(self.i_head.payload),
            wr.en.eq(self.i_head.valid & self.i_head.ready),
        ]
        h = self.i_head.payload
        with m.If(self.i_head.valid & self.i_head.ready):
            m.d.sync += head_cnt.eq(Mux(head_cnt == nb - 1, 0, head_cnt + 1))
            with m.If((h.sum != 0) & (~g_any | (h.max > g_max))):
                m.d.sync += [g_max.eq(h.max), g_any.eq(1)]
            with m.If(head_cnt == nb - 1):
                m.d.sync += phase_out.eq(1)

        return phase_out, g_max, g_any, rd

    def _accumulate(self, m: Module, skid: CreditSkid, w: dict, shift: int,
                    s4_pout: list, s4_psum: list, s4_valid: Signal, s4_first: Signal,
                    s4_sum_slice: Signal, s4_end: Signal, s4_last: Signal, s4_slice: Signal,
                    g_max: Signal, g_any: Signal) -> tuple[Signal, Signal]:
        """s4: carry-save accumulation over the banks of a slice; the first bank's product
        starts the sum at 2^(P+R-1), so the final sum is already rounded by the shift (half up).
        s5: after a slice's last bank, one carry-propagate addition per lane, written to the
        output FIFO. Returns (s5_valid, s5_last)."""
        num, e = self._num, self._lanes
        half = 1 << (shift - 1)
        acc_out = [(Signal(unsigned(w["acc_out"]), name=f"acc_out{i}_s"),
                    Signal(unsigned(w["acc_out"]), name=f"acc_out{i}_c")) for i in range(e)]
        acc_sum = (Signal(unsigned(w["acc_sum"]), name="acc_sum_s"),
                   Signal(unsigned(w["acc_sum"]), name="acc_sum_c"))

        def step(acc: tuple, prod: list, width: int, name: str) -> tuple[Signal, Signal]:
            start = [Mux(s4_first, half, acc[0]), Mux(s4_first, 0, acc[1])]
            return carry_save.compress(m, [*start, *prod], width, name)

        nxt_out = [step(acc_out[i], s4_pout[i], w["acc_out"], f"acc_next{i}") for i in range(e)]
        nxt_sum = step(acc_sum, s4_psum, w["acc_sum"], "acc_sum_next")
        s5_valid, s5_sum_slice, s5_last = Signal(), Signal(), Signal()
        s5_slice = Signal.like(s4_slice)
        m.d.sync += s5_valid.eq(s4_valid & s4_end)
        with m.If(s4_valid):
            m.d.sync += [reg.eq(val) for i in range(e)
                         for reg, val in zip(acc_out[i], nxt_out[i], strict=True)]
            with m.If(s4_sum_slice):
                m.d.sync += [reg.eq(val) for reg, val in zip(acc_sum, nxt_sum, strict=True)]
            m.d.sync += [s5_sum_slice.eq(s4_sum_slice), s5_last.eq(s4_last),
                         s5_slice.eq(s4_slice)]

        # s5: the accumulators hold the slice's final carry-save sums for exactly this cycle
        # (s4 overwrites them next cycle: nothing stalls), so the FIFO takes the slice now.
        sum_done = Signal(unsigned(w["sum"]))  # the rounded channel sum, after slice 0
        out_full = [Signal(signed(w["acc_out"]), name=f"out_full{i}") for i in range(e)]
        sum_full = Signal(unsigned(w["acc_sum"]))
        m.d.comb += [out_full[i].eq((acc_out[i][0] + acc_out[i][1])[:w["acc_out"]])
                     for i in range(e)]
        m.d.comb += sum_full.eq((acc_sum[0] + acc_sum[1])[:w["acc_sum"]])
        s5 = Signal(self.o.payload.shape())
        m.d.comb += [s5.out[i].eq(out_full[i] >> shift) for i in range(e)]
        m.d.comb += [
            s5.max.eq(Mux(g_any, g_max, num.score_min)),
            s5.index.eq(s5_slice),
            s5.last.eq(s5_last),
            s5.sum.eq(Mux(s5_sum_slice, sum_full >> shift, sum_done)),
        ]
        skid.write(s5.as_value(), s5_valid)
        with m.If(s5_valid & s5_sum_slice):
            m.d.sync += sum_done.eq(sum_full >> shift)
        return s5_valid, s5_last
