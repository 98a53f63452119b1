"""PIM bank controller: executes :mod:`aqpim.isa` commands on one bank's memories and units.

Command words (256 bits) come in on ``i_cmd``, response words go out on ``o_rsp``; the wire
format, the effect of each command and the check order are docs/isa.md, and the golden
reference is :class:`aqpim.sw.host.golden_device.GoldenBank` (bit-exact, same statuses).

The controller owns the bank's memories - key and value code storage (one 256-bit column per
``tpc`` tokens, ``ceil(token_capacity / tpc)`` columns each), a normalised copy of the codebooks
and of the LUT for READ_CB / READ_LUT, the partial-output registers - and instantiates the
units: :class:`aqpim.hw.encoder.PQEncoder` (one encoder with 2M subspaces: keys in 0..M-1,
values in M..2M-1) and :class:`aqpim.hw.attention.Attention` (LUT-accumulate, softmax,
histogram, value MAC), which hold their own working copies of codebook and LUT.

Every command's header is checked in one cycle (state ``CHECK``) against the bank's flags
before anything changes; a rejected command's ``length`` data beats are drained and only a
response header goes out, so no command can hang the bank or change its state.

Latency and throughput (cycles at the bank clock, no back-pressure; measured figures in
docs/bank.md): header to decision 2 cycles; LOAD_CB one centroid per cycle (K cycles); LOAD_LUT
one 256-bit beat (E = 256 / lut_width entries) per cycle straight into the LUT-accumulate unit
(``lut_beats`` cycles: 64 at M = 64, K = 16, L = 16); WRITE_KV one sub-vector per cycle into the
encoder, so the encoder's ``K / lanes`` cycles per sub-vector set the rate (2M sub-vectors per
token); SCORE one code column per cycle (II = 1 read-ahead from the code storage); AGGREGATE one
token per cycle plus the attention unit's K + ~10 cycles; reads one beat per cycle.

Parameters (keyword-only)
-------------------------
numerics:
    The PQ-attention configuration (:class:`aqpim.numerics.Numerics`); ``token_capacity`` sizes
    the code storage and the attention scratch.
heads:
    Head slots (only 1 in this version: the value MAC's single codebook copy would have to be
    reloaded per head; the ISA and the golden device support up to 8).
lanes:
    Encoder distance lanes P (divides K).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from aqpim.hw.attention import Attention, partial_layout
from aqpim.hw.encoder import PQEncoder

from aqpim import isa
from aqpim.checks import check_int
from aqpim.geometry import Geometry
from aqpim.isa import Opcode, Status
from aqpim.numerics import Numerics

__all__ = ["BankArray", "BankController", "header_layout", "response_layout"]

W = isa.WORD_BITS


def header_layout() -> data.StructLayout:
    """The command header fields (low 64 bits of a header word), from :data:`isa.HEADER_FIELDS`."""
    return data.StructLayout({name: unsigned(w) for name, (_, w) in isa.HEADER_FIELDS.items()})


def response_layout() -> data.StructLayout:
    """The response header fields, from :data:`isa.RESPONSE_FIELDS`."""
    return data.StructLayout({name: unsigned(w) for name, (_, w) in isa.RESPONSE_FIELDS.items()})


class BankController(wiring.Component):
    """One PIM bank: command stream in, response stream out (see the module docstring)."""

    def __init__(
        self,
        *,
        numerics: Numerics | None = None,
        heads: int = 1,
        lanes: int | None = None,
        head_dim: int | None = None,
        subspaces: int | None = None,
        centroids: int | None = None,
        elem_bits: int | None = None,
        lut_bits: int | None = None,
        lut_frac_bits: int | None = None,
        exp_bits: int | None = None,
        token_capacity: int | None = None,
    ) -> None:
        from aqpim.hw.attn_params import numerics_from  # noqa: I001

        num = numerics_from(
            numerics, head_dim=head_dim, subspaces=subspaces, centroids=centroids,
            elem_bits=elem_bits, lut_bits=lut_bits, lut_frac_bits=lut_frac_bits,
            exp_bits=exp_bits, token_capacity=token_capacity,
        )
        if isinstance(heads, bool) or not isinstance(heads, int):
            raise TypeError(f"heads must be an int, got {heads!r}")
        if heads != 1:
            raise ValueError(f"the RTL bank supports heads=1 only, got {heads}")
        self._g = Geometry(num, heads=heads)
        if lanes is None:
            lanes = min(4, num.centroids)
        if isinstance(lanes, bool) or not isinstance(lanes, int):
            raise TypeError(f"lanes must be an int, got {lanes!r}")
        if lanes < 1 or num.centroids % lanes:
            raise ValueError(f"lanes {lanes} must divide centroids {num.centroids}")
        gw = num.sub_dim * self._g.elem_width
        if W % gw:
            raise ValueError(
                f"a sub-vector of d * elem_width = {gw} bits must divide {W} (power-of-two d)"
            )
        self._lanes = lanes
        super().__init__({
            "i_cmd": In(stream.Signature(unsigned(W))),
            "o_rsp": Out(stream.Signature(unsigned(W))),
        })

    @property
    def geometry(self) -> Geometry:
        return self._g

    @property
    def numerics(self) -> Numerics:
        return self._g.num

    @property
    def lanes(self) -> int:
        return self._lanes

    # ------------------------------------------------------------------------------------------
    def elaborate(self, platform: object) -> Module:
        m = Module()
        g = self._g
        n = g.num
        M, K, d, b, tpc = n.subspaces, n.centroids, n.sub_dim, n.code_bits, g.tokens_per_column
        ew, lw = g.elem_width, g.lut_width
        gw = d * ew  # one sub-vector / centroid in a beat
        gpb = W // gw
        lpb = W // lw
        cols = g.columns_per_head
        log_tpc = tpc.bit_length() - 1
        log_m = M.bit_length() - 1

        # Units. The attention path gets a local reset: SCORE restarts its pass pair (the ISA
        # lets a head be rescored without aggregating) and RESET clears it.
        unit_rst = Signal()
        enc = PQEncoder(sub_dim=d, centroids=K, subspaces=2 * M, elem_bits=n.elem_bits,
                        lanes=self._lanes)
        attn = Attention(numerics=n)
        m.submodules.encoder = enc
        m.submodules.attention = ResetInserter(unit_rst)(attn)

        # Memories: code storage (one column per tpc tokens), codebook and LUT copies for reads.
        kmem = Memory(shape=unsigned(W), depth=cols, init=[])
        vmem = Memory(shape=unsigned(W), depth=cols, init=[])
        cbmem = Memory(shape=unsigned(W), depth=2 * M * g.cb_beats, init=[])
        lutmem = Memory(shape=unsigned(W), depth=g.lut_beats, init=[])
        m.submodules.kmem, m.submodules.vmem = kmem, vmem
        m.submodules.cbmem, m.submodules.lutmem = cbmem, lutmem
        kw, vw = kmem.write_port(), vmem.write_port()
        cw, lwp = cbmem.write_port(), lutmem.write_port()
        kr, vr, cr, lr = kmem.read_port(), vmem.read_port(), cbmem.read_port(), lutmem.read_port()

        # Bank state (docs/isa.md "Bank state"); heads = 1 so tags reduce to valid bits.
        tokens = Signal(range(n.token_capacity + 1))
        kmask = Signal(M)
        vmask = Signal(M)
        lut_valid = Signal()
        scores_valid = Signal()
        partial_valid = Signal()
        partial = Signal(partial_layout(n))
        k_full = kmask == (1 << M) - 1
        v_full = vmask == (1 << M) - 1
        used_cols = (tokens + (tpc - 1)) >> log_tpc

        # The latched header and the status decided for it.
        hdr = Signal(header_layout())
        op = hdr.opcode
        status = Signal(4)
        left = Signal(range(1 << 16))  # data beats of the command still to consume
        rsp_len = Signal(16)

        # Read-ahead streamer: one memory beat per cycle to whichever sink the state selects.
        rd_src = Signal(2)  # 0 kmem, 1 vmem, 2 cbmem, 3 lutmem
        rd_base = Signal(range(max(cols, 2 * M * g.cb_beats, g.lut_beats) + 1))
        rd_next = Signal.like(rd_base)
        rd_left = Signal(range(max(cols, g.lut_beats, 2 * M * g.cb_beats) + 2))
        rd_valid = Signal()
        rd_idx = Signal.like(rd_base)  # offset of the beat now presented
        rd_ready = Signal()  # the selected sink takes the presented beat
        rd_data = Signal(W)
        adv = ~rd_valid | rd_ready
        rd_addr = rd_base + rd_next
        for port in (kr, vr, cr, lr):
            m.d.comb += [port.addr.eq(rd_addr), port.en.eq(adv)]
        m.d.comb += rd_data.eq(Mux(rd_src[1], Mux(rd_src[0], lr.data, cr.data),
                                   Mux(rd_src[0], vr.data, kr.data)))
        with m.If(adv):
            with m.If(rd_left != 0):
                m.d.sync += [rd_valid.eq(1), rd_next.eq(rd_next + 1), rd_left.eq(rd_left - 1),
                             rd_idx.eq(rd_next)]
            with m.Else():
                m.d.sync += rd_valid.eq(0)
        rd_done = ~rd_valid & (rd_left == 0)

        def start_read(src: int, base, count) -> list:
            return [rd_src.eq(src), rd_base.eq(base), rd_next.eq(0), rd_left.eq(count)]

        # Code columns for the attention passes: ntok of the last column is what remains.
        col = Signal(attn.i_key.payload.shape())
        last_col = rd_idx == Mux(used_cols == 0, 0, used_cols - 1)
        rem = tokens - (rd_idx << log_tpc)
        m.d.comb += [
            col.codes.eq(rd_data),
            col.last.eq(last_col),
            col.ntok.eq(Mux(tokens == 0, 0, Mux(last_col, rem, tpc))),
            attn.i_key.payload.eq(col),
            attn.i_val.payload.eq(col),
        ]

        # The unpacker: the current data beat and the group (centroid, sub-vector) being
        # handed to a unit; `grp` counts groups within the command's current unit.
        beat = Signal(W)
        slot = Signal(range(gpb + 1))
        grp = Signal(range(max(K, M) + 1))
        vec = Signal(range(2 * g.max_tokens_per_write + 2))  # vectors done in WRITE_KV
        group = beat.word_select(slot[:(gpb - 1).bit_length()], gw) if gpb > 1 else beat[:gw]

        def elems(bits) -> list:
            return [bits[i * ew:i * ew + n.elem_bits].as_signed() for i in range(d)]

        # Normalised beats for the read-back copies: the low W (L) bits of each slot, sign
        # extended, exactly what pack_values of the unpacked integers gives.
        def normalise(word, width: int, bits: int):
            out = []
            for i in range(W // width):
                v = Signal(signed(width))
                m.d.comb += v.eq(word[i * width:i * width + bits].as_signed())
                out.append(v)
            return Cat(*out)

        norm_cb = normalise(self.i_cmd.payload, ew, n.elem_bits)
        norm_lut = normalise(self.i_cmd.payload, lw, n.lut_bits)

        # WRITE_KV code collection: codes come back from the encoder in input order
        # (M key codes then M value codes per token) into two column registers.
        kcol = Signal(data.ArrayLayout(unsigned(b), tpc * M))
        vcol = Signal(data.ArrayLayout(unsigned(b), tpc * M))
        cidx = Signal(range(2 * M))
        tok_done = Signal(range(1 << 12))
        cur_tok = Signal(range(n.token_capacity + 1))
        tslot = cur_tok[:log_tpc] if tpc > 1 else Const(0, 1)
        code = enc.o_code.payload.code
        code_is_v = cidx >= M
        cm = cidx[:log_m] if M > 1 else Const(0, 1)
        vcol_next = Signal.like(vcol)
        m.d.comb += vcol_next.eq(vcol)
        with m.If(enc.o_code.valid & code_is_v):
            m.d.comb += vcol_next[(tslot << log_m) | cm].eq(code)
        m.d.comb += [
            kw.addr.eq(cur_tok >> log_tpc), vw.addr.eq(cur_tok >> log_tpc),
            kw.data.eq(kcol), vw.data.eq(vcol_next),
        ]

        # Response words: header, status/partial beats by index.
        rsp_hdr = Signal(response_layout())
        m.d.comb += [rsp_hdr.status.eq(status), rsp_hdr.opcode.eq(op), rsp_hdr.length.eq(rsp_len)]
        flags = Cat(k_full, v_full, lut_valid, scores_valid, partial_valid, Const(0, 3))
        status_beats = [Cat(tokens.as_unsigned(), Const(0, 32 - len(tokens)), flags), kmask, vmask]
        words = []
        for v in [partial.max, partial.sum, *[partial.out[i] for i in range(n.head_dim)]]:
            w64 = Signal(signed(isa.PARTIAL_WORD_BITS))
            m.d.comb += w64.eq(v)
            words.append(w64)
        per = W // isa.PARTIAL_WORD_BITS
        words += [Const(0, isa.PARTIAL_WORD_BITS)] * (-len(words) % per)
        partial_beats = [Cat(*words[i:i + per]) for i in range(0, len(words), per)]
        out_idx = Signal(range(max(g.partial_beats, g.status_beats) + 1))
        beat_mux = Signal(W)  # READ_PARTIAL beat out_idx
        stat_mux = Signal(W)  # READ_STATUS beat out_idx
        with m.Switch(out_idx):
            for i, bt in enumerate(partial_beats):
                with m.Case(i):
                    m.d.comb += beat_mux.eq(bt)
        with m.Switch(out_idx):
            for i, bt in enumerate(status_beats):
                with m.Case(i):
                    m.d.comb += stat_mux.eq(bt)

        # The header check (docs/isa.md, "Status codes and check order").
        uses_head = op.matches(Opcode.LOAD_CB, Opcode.WRITE_KV, Opcode.LOAD_LUT, Opcode.SCORE,
                               Opcode.AGGREGATE, Opcode.READ_PARTIAL, Opcode.READ_CODES,
                               Opcode.READ_CB, Opcode.READ_LUT)
        uses_sub = op.matches(Opcode.LOAD_CB, Opcode.READ_CB)
        exp_len = Signal(range(1 << 24))
        with m.Switch(op):
            with m.Case(Opcode.LOAD_CB):
                m.d.comb += exp_len.eq(g.cb_beats)
            with m.Case(Opcode.LOAD_LUT):
                m.d.comb += exp_len.eq(g.lut_beats)
            with m.Case(Opcode.WRITE_KV):
                m.d.comb += exp_len.eq(hdr.count * g.token_beats)
        mask_bit = Mux(hdr.kv, vmask, kmask).bit_select(
            hdr.subspace[:log_m] if M > 1 else Const(0, 1), 1)
        check = Signal(4)
        with m.If(op > max(Opcode)):
            m.d.comb += check.eq(Status.BAD_OPCODE)
        with m.Elif(uses_head & (hdr.head >= g.heads)):
            m.d.comb += check.eq(Status.ADDR_RANGE)
        with m.Elif(uses_sub & (hdr.subspace >= M)):
            m.d.comb += check.eq(Status.ADDR_RANGE)
        with m.Elif(hdr.length != exp_len):
            m.d.comb += check.eq(Status.BAD_LENGTH)
        with m.Elif(op.matches(Opcode.WRITE_KV, Opcode.READ_CODES) & (hdr.count == 0)):
            m.d.comb += check.eq(Status.BAD_LENGTH)
        with m.Elif((op == Opcode.WRITE_KV) & (hdr.addr != tokens)):
            m.d.comb += check.eq(Status.ADDR_RANGE)
        with m.Elif((op == Opcode.WRITE_KV) & (hdr.addr + hdr.count > n.token_capacity)):
            m.d.comb += check.eq(Status.CAPACITY)
        with m.Elif((op == Opcode.WRITE_KV) & ~(k_full & v_full)):
            m.d.comb += check.eq(Status.NO_CODEBOOK)
        with m.Elif((op == Opcode.READ_CODES) & (hdr.addr + hdr.count > used_cols)):
            m.d.comb += check.eq(Status.ADDR_RANGE)
        with m.Elif((op == Opcode.READ_CB) & ~mask_bit):
            m.d.comb += check.eq(Status.NO_CODEBOOK)
        with m.Elif((op == Opcode.AGGREGATE) & ~v_full):
            m.d.comb += check.eq(Status.NO_CODEBOOK)
        with m.Elif(op.matches(Opcode.SCORE, Opcode.READ_LUT) & ~lut_valid):
            m.d.comb += check.eq(Status.NO_LUT)
        with m.Elif((op == Opcode.AGGREGATE) & ~scores_valid):
            m.d.comb += check.eq(Status.NO_SCORES)
        with m.Elif((op == Opcode.READ_PARTIAL) & ~partial_valid):
            m.d.comb += check.eq(Status.NO_PARTIAL)
        with m.Else():
            m.d.comb += check.eq(Status.OK)

        # Default sink readies: nothing takes a beat unless its state says so.
        sink = Signal(2)  # 0 none, 1 attn.i_key, 2 attn.i_val, 3 o_rsp
        m.d.comb += [
            attn.i_key.valid.eq(rd_valid & (sink == 1)),
            attn.i_val.valid.eq(rd_valid & (sink == 2)),
            rd_ready.eq(Mux(sink == 1, attn.i_key.ready,
                            Mux(sink == 2, attn.i_val.ready, (sink == 3) & self.o_rsp.ready))),
        ]
        sub_idx = hdr.subspace[:log_m] if M > 1 else Const(0, 1)
        cb_sub = Cat(hdr.subspace[:log_m] if M > 1 else Const(0, 0), hdr.kv)

        with m.FSM():
            # A header word: latch it; decide next cycle (keeps the check off the input path).
            with m.State("IDLE"):
                m.d.comb += self.i_cmd.ready.eq(1)
                with m.If(self.i_cmd.valid):
                    m.d.sync += [hdr.eq(self.i_cmd.payload[:64]),
                                 left.eq(self.i_cmd.payload[52:64])]
                    m.next = "CHECK"

            with m.State("CHECK"):
                m.d.sync += [status.eq(check), rsp_len.eq(0), out_idx.eq(0), slot.eq(0),
                             grp.eq(0), vec.eq(0), sink.eq(0)]
                with m.If(check != Status.OK):
                    m.next = "DRAIN"
                with m.Else():
                    with m.Switch(op):
                        with m.Case(Opcode.NOP):
                            m.next = "RSP_HDR"
                        with m.Case(Opcode.RESET):
                            m.d.comb += unit_rst.eq(1)
                            m.d.sync += [tokens.eq(0), kmask.eq(0), vmask.eq(0),
                                         lut_valid.eq(0), scores_valid.eq(0),
                                         partial_valid.eq(0)]
                            m.next = "RSP_HDR"
                        with m.Case(Opcode.LOAD_CB):
                            m.next = "BEAT"
                        with m.Case(Opcode.LOAD_LUT):
                            m.next = "LUT_BEAT"
                        with m.Case(Opcode.WRITE_KV):
                            m.d.sync += [cur_tok.eq(tokens), cidx.eq(0), tok_done.eq(0)]
                            with m.If(scores_valid):  # the scores no longer cover every token
                                m.d.sync += scores_valid.eq(0)
                            m.next = "WKV_LOAD"
                        with m.Case(Opcode.SCORE):
                            m.d.comb += unit_rst.eq(1)
                            m.d.sync += [*start_read(0, 0, Mux(used_cols == 0, 1, used_cols)),
                                         sink.eq(1)]
                            m.next = "PASS"
                        with m.Case(Opcode.AGGREGATE):
                            m.d.sync += [*start_read(1, 0, Mux(used_cols == 0, 1, used_cols)),
                                         sink.eq(2)]
                            m.next = "PASS"
                        with m.Case(Opcode.READ_PARTIAL):
                            m.d.sync += rsp_len.eq(g.partial_beats)
                            m.next = "RSP_HDR"
                        with m.Case(Opcode.READ_STATUS):
                            m.d.sync += rsp_len.eq(g.status_beats)
                            m.next = "RSP_HDR"
                        with m.Case(Opcode.READ_CODES):
                            m.d.sync += rsp_len.eq(hdr.count)
                            m.next = "RSP_HDR"
                        with m.Case(Opcode.READ_CB):
                            m.d.sync += rsp_len.eq(g.cb_beats)
                            m.next = "RSP_HDR"
                        with m.Case(Opcode.READ_LUT):
                            m.d.sync += rsp_len.eq(g.lut_beats)
                            m.next = "RSP_HDR"

            # A rejected command: swallow its data beats, then answer with the status alone.
            with m.State("DRAIN"):
                m.d.comb += self.i_cmd.ready.eq(left != 0)
                with m.If(left == 0):
                    m.next = "RSP_HDR"
                with m.Elif(self.i_cmd.valid):
                    m.d.sync += left.eq(left - 1)

            # LOAD_LUT data: each 256-bit beat goes straight to the LUT-accumulate unit, which
            # writes a whole beat (E entries) per cycle; the read-back copy is written beside.
            with m.State("LUT_BEAT"):
                lp = attn.i_lut.payload
                m.d.comb += [
                    lp.row.eq(g.lut_beats - left),
                    attn.i_lut.valid.eq(self.i_cmd.valid),
                    self.i_cmd.ready.eq(attn.i_lut.ready),
                ]
                for i in range(lpb):
                    m.d.comb += lp.values[i].eq(
                        self.i_cmd.payload[i * lw:i * lw + n.lut_bits].as_signed())
                with m.If(self.i_cmd.valid & attn.i_lut.ready):
                    m.d.comb += [lwp.addr.eq(g.lut_beats - left), lwp.data.eq(norm_lut),
                                 lwp.en.eq(1)]
                    m.d.sync += left.eq(left - 1)
                    with m.If(left == 1):
                        m.d.sync += [lut_valid.eq(1), scores_valid.eq(0)]
                        m.next = "DRAIN"

            # LOAD_CB / WRITE_KV data: take a beat, then hand out its groups.
            with m.State("BEAT"):
                m.d.comb += self.i_cmd.ready.eq(1)
                with m.If(self.i_cmd.valid):
                    m.d.sync += [beat.eq(self.i_cmd.payload), slot.eq(0), left.eq(left - 1)]
                    with m.If(op == Opcode.LOAD_CB):
                        beat_i = g.cb_beats - left
                        m.d.comb += [cw.addr.eq(cb_sub * g.cb_beats + beat_i),
                                     cw.data.eq(norm_cb), cw.en.eq(1)]
                    m.next = "EMIT"

            with m.State("EMIT"):
                with m.Switch(op):
                    with m.Case(Opcode.LOAD_CB):
                        # One centroid per cycle into the encoder (and the value MAC for V).
                        p_enc = enc.i_cb.payload
                        p_mac = attn.i_vcb.payload
                        m.d.comb += [
                            p_enc.sub.eq(cb_sub),
                            p_enc.idx.eq(grp),
                            p_mac.subspace.eq(hdr.subspace),
                            p_mac.index.eq(grp),
                            enc.i_cb.valid.eq(1),
                            attn.i_vcb.valid.eq(hdr.kv),
                        ]
                        for i, e in enumerate(elems(group)):
                            m.d.comb += [p_enc.vec[i].eq(e), p_mac.vector[i].eq(e)]
                        # writes are idempotent, so a unit that took the centroid early may
                        # see it again while waiting for the other
                        with m.If(enc.i_cb.ready & (attn.i_vcb.ready | ~hdr.kv)):
                            m.d.sync += [grp.eq(grp + 1), slot.eq(slot + 1)]
                            with m.If(grp == K - 1):
                                with m.If(hdr.kv):
                                    m.d.sync += vmask.bit_select(sub_idx, 1).eq(1)
                                with m.Else():
                                    m.d.sync += kmask.bit_select(sub_idx, 1).eq(1)
                                m.next = "DRAIN"  # any padding beats; none when length fits
                            with m.Elif(slot == gpb - 1):
                                m.next = "BEAT"
                    with m.Case(Opcode.WRITE_KV):
                        # Sub-vector `grp` of vector `vec` (even: key, odd: value) of a token.
                        p = enc.i_x.payload
                        m.d.comb += [
                            p.sub.eq(Cat(grp[:log_m] if M > 1 else Const(0, 0), vec[0])),
                            enc.i_x.valid.eq(1),
                        ]
                        for i, e in enumerate(elems(group)):
                            m.d.comb += p.x[i].eq(e)
                        with m.If(enc.i_x.ready):
                            m.d.sync += [grp.eq(grp + 1), slot.eq(slot + 1)]
                            with m.If(grp == M - 1):
                                m.d.sync += [grp.eq(0), vec.eq(vec + 1)]
                                with m.If(left == 0):
                                    m.next = "WKV_WAIT"
                                with m.Else():
                                    m.next = "BEAT"
                            with m.Elif(slot == gpb - 1):
                                m.next = "BEAT"

            # WRITE_KV: a token that starts inside a column continues the stored column.
            with m.State("WKV_LOAD"):
                m.d.comb += [kr.addr.eq(tokens >> log_tpc), vr.addr.eq(tokens >> log_tpc),
                             kr.en.eq(1), vr.en.eq(1)]
                m.next = "WKV_LOAD2"
            with m.State("WKV_LOAD2"):
                with m.If(tslot == 0):
                    m.d.sync += [kcol.eq(0), vcol.eq(0)]
                with m.Else():
                    m.d.sync += [kcol.eq(kr.data), vcol.eq(vr.data)]
                m.next = "BEAT"

            with m.State("WKV_WAIT"):
                with m.If(tok_done == hdr.count):
                    m.d.sync += tokens.eq(tokens + hdr.count)
                    m.next = "RSP_HDR"

            # SCORE / AGGREGATE: code columns stream from the storage into the attention path.
            with m.State("PASS"):
                with m.If(rd_done):
                    with m.If(op == Opcode.SCORE):
                        m.d.sync += [scores_valid.eq(1), sink.eq(0)]
                        m.next = "RSP_HDR"
                    with m.Else():
                        m.d.sync += sink.eq(0)
                        m.next = "AGG_WAIT"
            with m.State("AGG_WAIT"):
                m.d.comb += attn.o_partial.ready.eq(1)
                with m.If(attn.o_partial.valid):
                    m.d.sync += [partial.eq(attn.o_partial.payload), partial_valid.eq(1),
                                 scores_valid.eq(0)]
                    m.next = "RSP_HDR"

            # Responses: the header word, then the data beats of read commands.
            with m.State("RSP_HDR"):
                m.d.comb += [self.o_rsp.valid.eq(1), self.o_rsp.payload.eq(rsp_hdr)]
                with m.If(self.o_rsp.ready):
                    with m.If(rsp_len == 0):
                        m.next = "IDLE"
                    with m.Elif(op == Opcode.READ_CODES):
                        m.d.sync += [*start_read(Cat(hdr.kv, 0), hdr.addr, hdr.count), sink.eq(3)]
                        m.next = "RSP_MEM"
                    with m.Elif(op == Opcode.READ_CB):
                        m.d.sync += [*start_read(2, cb_sub * g.cb_beats, g.cb_beats), sink.eq(3)]
                        m.next = "RSP_MEM"
                    with m.Elif(op == Opcode.READ_LUT):
                        m.d.sync += [*start_read(3, 0, g.lut_beats), sink.eq(3)]
                        m.next = "RSP_MEM"
                    with m.Else():
                        m.next = "RSP_REG"
            with m.State("RSP_REG"):
                m.d.comb += [self.o_rsp.valid.eq(1),
                             self.o_rsp.payload.eq(Mux(op == Opcode.READ_STATUS, stat_mux,
                                                       beat_mux))]
                with m.If(self.o_rsp.ready):
                    m.d.sync += out_idx.eq(out_idx + 1)
                    with m.If(out_idx == rsp_len - 1):
                        m.next = "IDLE"
            with m.State("RSP_MEM"):
                m.d.comb += [self.o_rsp.valid.eq(rd_valid), self.o_rsp.payload.eq(rd_data)]
                with m.If(rd_done):
                    m.d.sync += sink.eq(0)
                    m.next = "IDLE"

        # WRITE_KV collector (runs beside EMIT): place each code, write both columns at the
        # token's last code, start a fresh column when the next token opens one.
        m.d.comb += enc.o_code.ready.eq(1)
        with m.If(enc.o_code.valid):
            m.d.sync += cidx.eq(Mux(cidx == 2 * M - 1, 0, cidx + 1))
            with m.If(~code_is_v):
                m.d.sync += kcol[(tslot << log_m) | cm].eq(code)
            m.d.sync += vcol.eq(vcol_next)
            with m.If(cidx == 2 * M - 1):
                m.d.comb += [kw.en.eq(1), vw.en.eq(1)]
                m.d.sync += [cur_tok.eq(cur_tok + 1), tok_done.eq(tok_done + 1)]
                with m.If(((cur_tok + 1) & (tpc - 1)) == 0 if tpc > 1 else Const(1, 1)):
                    m.d.sync += [kcol.eq(0), vcol.eq(0)]
        return m


class BankArray(wiring.Component):
    """``banks`` independent bank controllers in one design (for co-simulation of a device).

    Ports ``i_cmd{b}`` / ``o_rsp{b}`` of bank ``b`` are those of :class:`BankController`; the
    banks share nothing but the clock, as banks of one channel do (the all-bank broadcast is
    the host driving every ``i_cmd`` with the same words). Latency and throughput are the
    controller's. Parameters: ``banks`` (1..16) and the controller's keyword parameters
    (Numerics fields, ``lanes``) as plain ints, so the runner can build it from a dict.
    """

    def __init__(
        self,
        *,
        banks: int = 1,
        lanes: int | None = None,
        head_dim: int | None = None,
        subspaces: int | None = None,
        centroids: int | None = None,
        elem_bits: int | None = None,
        lut_bits: int | None = None,
        lut_frac_bits: int | None = None,
        exp_bits: int | None = None,
        token_capacity: int | None = None,
    ) -> None:
        fields = {
            "head_dim": head_dim, "subspaces": subspaces, "centroids": centroids,
            "elem_bits": elem_bits, "lut_bits": lut_bits, "lut_frac_bits": lut_frac_bits,
            "exp_bits": exp_bits, "token_capacity": token_capacity,
        }
        banks = check_int("banks", banks, 1, 16)
        self._banks = [BankController(lanes=lanes, **fields) for _ in range(banks)]
        members = {}
        for b in range(banks):
            members[f"i_cmd{b}"] = In(stream.Signature(unsigned(W)))
            members[f"o_rsp{b}"] = Out(stream.Signature(unsigned(W)))
        super().__init__(members)

    @property
    def banks(self) -> int:
        return len(self._banks)

    @property
    def geometry(self) -> Geometry:
        return self._banks[0].geometry

    def elaborate(self, platform: object) -> Module:
        m = Module()
        for b, bank in enumerate(self._banks):
            m.submodules[f"bank{b}"] = bank
            wiring.connect(m, wiring.flipped(getattr(self, f"i_cmd{b}")), bank.i_cmd)
            wiring.connect(m, bank.o_rsp, wiring.flipped(getattr(self, f"o_rsp{b}")))
        return m
