"""Command header decode and checks of the bank (docs/isa.md, "Status codes and check order").

From a latched :class:`aqpim.hw.command.Command` header and the bank state the decoder computes:

- ``status``: the first check that fails, in the isa's order (BAD_OPCODE, then per opcode: head
  and subspace range where the opcode has those fields, data length, then the command's own
  checks), or OK;
- ``rsp_length``: the data beats of the response if the command is accepted (read commands);
- ``read``: the :class:`aqpim.hw.bank_reader.ColumnReader` request the command needs (code
  columns for SCORE / AGGREGATE, the column WRITE_KV continues, the beats of a read command).

Two stages: with ``en`` (the sequencer's DECODE cycle, after the header is latched) every
check's fail bit, a one-hot copy of the opcode, the response length and the read request are
registered; ``status`` is the first failing check of the registered bits, in the isa's order,
and ``ok`` that none failed (combinational, the CHECK cycle: AND-OR of registered bits, no
opcode compare). So the checks' comparators and adders and the priority chain sit in separate
stages (docs/silicon.md). The token-count figures the checks need (used code columns per side,
free token room) come in on ``counts``, registered per head slot by the sequencer, so no check
chains two adders: READ_CODES' ``addr + count > used`` is one carry-save row and one carry
chain. Latency 1 (``status``, ``ok``, ``rsp_length`` and ``read`` valid the cycle after ``en``,
as long as the header and state do not change); one header per two cycles.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from aqpim.hw.bank_reader import Sink, Source, memory_depths, read_request_layout
from aqpim.hw.command import Command, Opcode, Status, bank_state_layout

from aqpim import isa
from aqpim.checks import check_instance
from aqpim.geometry import CodeSide, Geometry

__all__ = [
    "CommandDecoder", "counts", "counts_layout", "decode_bus", "header_head", "slot_index",
    "sub_index",
]


def counts_layout(geometry: Geometry) -> data.StructLayout:
    """Token-count figures the checks need, precomputed per head slot (:func:`counts`)."""
    cap = geometry.num.token_capacity
    full = counts(cap, geometry)  # the most columns in use: every token written
    return data.StructLayout({"used_k": range(full["used_k"] + 1),
                              "used_v": range(full["used_v"] + 1),
                              "room": bank_state_layout(geometry)["tokens"].shape})


def counts(tokens: Value | int, geometry: Geometry) -> dict[str, Value | int]:
    """The :func:`counts_layout` fields of a slot holding ``tokens`` tokens: code columns in use
    per side and the tokens still free (``token_capacity - tokens``). Their adders are kept out
    of the decoder's first stage: the sequencer registers them per slot."""
    return {"used_k": _used_columns(tokens, geometry.key),
            "used_v": _used_columns(tokens, geometry.value),
            "room": geometry.num.token_capacity - tokens}


def decode_bus(geometry: Geometry) -> wiring.Signature:
    """The sequencer's side: header and state out, status, response length and read request in.

    ``counts`` is :func:`counts_layout`: the addressed slot's used code columns and free token
    room, from registers (one cycle behind the token count, which is never read sooner).
    """
    return wiring.Signature({
        "header": Out(Command),
        "state": Out(bank_state_layout(geometry)),
        "counts": Out(counts_layout(geometry)),
        "en": Out(1),
        "status": In(Status),
        "ok": In(1),
        "rsp_length": In(unsigned(isa.RESPONSE_FIELDS["length"][1])),
        "read": In(read_request_layout(geometry)),
    })


def sub_index(subspace, subspaces: int):
    """A checked subspace field as an index of ``subspaces`` entries (a power of two)."""
    return subspace[:subspaces.bit_length() - 1] if subspaces > 1 else 0


def header_head(hdr):
    """The 3-bit head field of a :class:`~aqpim.hw.command.Command` header (at the same bits
    in every opcode's fields; meaningless for opcodes without one)."""
    return hdr.params.score.head


def slot_index(head, heads: int):
    """A checked head field as an index of ``heads`` slots (exact once ``head < heads``)."""
    return head[:(heads - 1).bit_length()] if heads > 1 else 0


class CommandDecoder(wiring.Component):
    """Checks a command header against the bank state (see the module docstring).

    Parameters (keyword-only)
    -------------------------
    geometry:
        The bank's :class:`aqpim.geometry.Geometry` (beats per command, capacity, head slots).
    """

    def __init__(self, *, geometry: Geometry) -> None:
        self._g = check_instance("geometry", geometry, Geometry)
        super().__init__({"bus": In(decode_bus(geometry))})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        g, n = self._g, self._g.num
        Mk, Mv = n.subspaces, n.values.subspaces
        cbk, cbv = g.key.cb_beats, g.value.cb_beats
        hdr, st, bus = self.bus.header, self.bus.state, self.bus
        op, p = hdr.opcode, hdr.params
        # code columns in use per side and the free token room, registered by the sequencer
        used_k, used_v, room = bus.counts.used_k, bus.counts.used_v, bus.counts.room
        k_full = st.k_mask == (1 << Mk) - 1
        v_full = st.v_mask == (1 << Mv) - 1
        rcb = p.read_cb
        cb_loaded = Mux(rcb.kv, st.v_mask.bit_select(sub_index(rcb.subspace, Mv), 1),
                        st.k_mask.bit_select(sub_index(rcb.subspace, Mk), 1))

        # Data beats each opcode must carry, and its own checks after head/subspace/length.
        data_beats = {Opcode.LOAD_CB: Mux(p.load_cb.kv, cbv, cbk), Opcode.LOAD_LUT: g.lut_beats,
                      Opcode.WRITE_KV: p.write_kv.count * g.token_beats}
        wkv, rc = p.write_kv, p.read_codes
        own = {
            Opcode.WRITE_KV: [(wkv.count == 0, Status.BAD_LENGTH),
                              (wkv.addr != st.tokens, Status.ADDR_RANGE),
                              # addr == tokens once ADDR_RANGE passed: addr + count > capacity
                              # is count > capacity - tokens, a compare of registered values
                              (wkv.count > room, Status.CAPACITY),
                              (~(k_full & v_full), Status.NO_CODEBOOK)],
            Opcode.READ_CODES: [(rc.count == 0, Status.BAD_LENGTH),
                                (_sum_exceeds(m, rc.addr, rc.count,
                                              Mux(rc.kv, used_v, used_k)),
                                 Status.ADDR_RANGE)],
            Opcode.READ_CB: [(~cb_loaded, Status.NO_CODEBOOK)],
            Opcode.AGGREGATE: [(~v_full, Status.NO_CODEBOOK), (~st.scores, Status.NO_SCORES)],
            Opcode.SCORE: [(~st.lut, Status.NO_LUT)],
            # GQA: q = 0 starts a set, q > 0 must be the next of this head's set
            Opcode.LOAD_LUT: [((p.load_lut.subspace != 0)
                               & (~st.lut | (p.load_lut.subspace != st.luts)),
                               Status.ADDR_RANGE)],
            Opcode.READ_LUT: [(~st.lut | (p.read_lut.subspace >= st.luts), Status.NO_LUT)],
            Opcode.READ_PARTIAL: [(~st.partial | (p.read_partial.subspace >= st.partials),
                                   Status.NO_PARTIAL)],
        }
        # Stage 1: every opcode's check results, registered (the opcode itself is the latched
        # header's, unchanged until the next command).
        bad_op = Signal()
        fails = {}
        with m.If(bus.en):
            m.d.sync += bad_op.eq(~op.as_value().matches(*Opcode))
            for code in Opcode:
                fields = getattr(p, code.name.lower())
                names = isa.OPCODE_FIELDS[isa.Opcode[code.name]]
                chain = []
                if "head" in names:
                    chain.append((fields.head >= g.heads, Status.ADDR_RANGE))
                if isa.Opcode[code.name] in isa.QUERY_OPCODES:  # a query-head index
                    chain.append((fields.subspace >= g.queries, Status.ADDR_RANGE))
                elif "subspace" in names:  # the kv side's subspace count
                    chain.append((fields.subspace >= Mux(fields.kv, Mv, Mk), Status.ADDR_RANGE))
                chain.append((hdr.length != data_beats.get(code, 0), Status.BAD_LENGTH))
                chain += own.get(code, [])
                bits = []
                for i, (fail, status) in enumerate(chain):
                    bit = Signal(name=f"fail_{code.name.lower()}_{i}")
                    m.d.sync += bit.eq(fail)
                    bits.append((bit, status))
                fails[code] = bits
        # Stage 2: the first failing check of the command's opcode, from the registered bits
        # and a registered one-hot copy of the opcode (an AND-OR, no opcode compare here); ``ok``
        # is the OR of the opcode's fail bits alone, for the sequencer's next-state logic.
        is_op = {code: Signal(name=f"is_{code.name.lower()}") for code in fails}
        with m.If(bus.en):
            m.d.sync += [sig.eq(op == code) for code, sig in is_op.items()]
        fail_any = Signal()
        m.d.comb += fail_any.eq(bad_op | Cat(*(is_op[code] & Cat(*(b for b, _ in bits)).any()
                                               for code, bits in fails.items())).any())
        m.d.comb += bus.ok.eq(~fail_any)
        first = []  # per opcode: its status if it is the command's (0 = OK otherwise)
        for code, bits in fails.items():
            st_code = Signal(Status, name=f"status_{code.name.lower()}")
            for bit, status in reversed(bits):
                # the earliest failing check wins: assign from the last check to the first
                with m.If(bit):
                    m.d.comb += st_code.eq(status)
            first.append(Mux(is_op[code], st_code.as_value(), 0))
        assert Status.OK.value == 0  # the OR below relies on OK being 0
        m.d.comb += bus.status.eq(Mux(bad_op, Status.BAD_OPCODE,
                                      _or_all(first)))

        # Response data beats of an accepted read command.
        rsp = {Opcode.READ_PARTIAL: g.partial_beats, Opcode.READ_STATUS: g.status_beats,
               Opcode.READ_CODES: rc.count, Opcode.READ_CB: Mux(rcb.kv, cbv, cbk),
               Opcode.READ_LUT: g.lut_beats}
        with m.If(bus.en):
            with m.Switch(op):
                for code, beats in rsp.items():
                    with m.Case(code):
                        m.d.sync += bus.rsp_length.eq(beats)
                with m.Default():
                    m.d.sync += bus.rsp_length.eq(0)

        # The read each command needs: (source, sink, first beat, beats). Code and codebook
        # memories are slot-major (slot s's region starts at s x its per-slot depth); a slot's
        # codebook region holds the M_k key subspaces, then the M_v value subspaces.
        depth = memory_depths(g)
        slot = slot_index(header_head(hdr), g.heads)
        k0 = slot * (depth[Source.KEYS] // g.heads)  # the slot's first column of each memory
        v0 = slot * (depth[Source.VALUES] // g.heads)
        # READ_CB reads the encoder's codebook store: slot s's keys at s (M_k + M_v) + m,
        # its values after them (hw/bank_reader.py)
        cb_sub = slot * (Mk + Mv) + Mux(rcb.kv, Mk + sub_index(rcb.subspace, Mv),
                                        sub_index(rcb.subspace, Mk))
        reads = {
            # zero tokens still send one (empty) column
            Opcode.SCORE: (Source.KEYS, Sink.KEY, k0, Mux(used_k == 0, 1, used_k)),
            Opcode.AGGREGATE: (Source.VALUES, Sink.VALUE, v0, Mux(used_v == 0, 1, used_v)),
            # the key and value columns the next token continues (RELOAD reads both)
            Opcode.WRITE_KV: (Source.KEYS, Sink.RELOAD, k0 + _open_column(st.tokens, g.key), 1),
            Opcode.READ_CODES: (Mux(rc.kv, Source.VALUES, Source.KEYS), Sink.RESPONSE,
                                Mux(rc.kv, v0, k0) + rc.addr, rc.count),
            Opcode.READ_CB: (Mux(rcb.kv, Source.CB_VALUES, Source.CB_KEYS), Sink.RESPONSE,
                             cb_sub, Mux(rcb.kv, cbv, cbk)),
            Opcode.READ_LUT: (Source.LUT, Sink.RESPONSE,  # base: the query head
                              p.read_lut.subspace[:max(1, (g.queries - 1).bit_length())]
                              if g.queries > 1 else 0, g.lut_beats),
        }
        with m.If(bus.en), m.Switch(op):
            for code, (src, sink, base, count) in reads.items():
                with m.Case(code):
                    m.d.sync += [bus.read.src.eq(src), bus.read.sink.eq(sink),
                                 bus.read.base.eq(base), bus.read.count.eq(count)]
                    if code == Opcode.WRITE_KV:
                        m.d.sync += bus.read.vbase.eq(v0 + _open_column(st.tokens, g.value))
            with m.Default():
                m.d.sync += bus.read.eq(0)
        return m


def _or_all(values: list[Value]) -> Value:
    """The bitwise OR of ``values`` (a balanced tree)."""
    while len(values) > 1:
        values = [values[i] | values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


def _sum_exceeds(m: Module, a: Value, b: Value, c: Value) -> Value:
    """``a + b > c`` without two carry chains in a row: with N bits holding each operand,
    ``a + b + (2^N - 1 - c)`` reaches 2^N exactly when ``a + b > c``. One row of full adders
    takes the three operands to two (carry-save), and one carry chain gives bit N."""
    width = max(len(a), len(b), len(c)) + 1
    c_ext = Signal(unsigned(width), name="exceeds_cx")
    nc = Signal(unsigned(width), name="exceeds_nc")
    m.d.comb += [c_ext.eq(c), nc.eq(~c_ext)]  # zero-extended to N bits, then inverted
    s = Signal(unsigned(width), name="exceeds_s")
    cy = Signal(unsigned(width + 1), name="exceeds_c")
    m.d.comb += [s.eq(a ^ b ^ nc), cy.eq(((a & b) | (nc & (a ^ b))) << 1)]
    return (s + cy)[width]


def _used_columns(tokens, side: CodeSide):
    """Code columns holding ``tokens`` tokens of one side: whole groups of ``cpt`` columns."""
    tpc, cpt = side.tokens_per_column, side.columns_per_token
    groups = (tokens + (tpc - 1)) >> (tpc.bit_length() - 1)
    return groups << (cpt.bit_length() - 1)


def _open_column(tokens, side: CodeSide):
    """The column token ``tokens`` (the next one written) starts in."""
    tpc, cpt = side.tokens_per_column, side.columns_per_token
    return (tokens >> (tpc.bit_length() - 1)) << (cpt.bit_length() - 1)
