r"""PIM bank controller: executes :mod:`aqpim.isa` commands on one bank's memories and units.

Command words (256 bits) come in on ``i_cmd``, response words go out on ``o_rsp``; the wire
format, the effect of each command and the check order are docs/isa.md, and the golden
reference is :class:`aqpim.sw.host.golden_device.GoldenBank` (bit-exact, same statuses).

The controller only wires its parts (docs/bank.md has the figure)::

    i_cmd -> BankSequencer (FSM, bank state) <-> CommandDecoder (header checks)
               | data beats                 \-> ColumnReader (kmem, vmem reads; READ_CB /
               v                                  |  READ_LUT from the encoder's codebook
             BeatUnpacker -> PQEncoder i_cb/i_x   |  store and the LUT-accumulate unit's LUT)
               '-> Attention i_lut / i_vcb        |-> Attention i_key / i_val
                                                  |-> CodeCollector (column reload)
                                                  '-> ResponseMux -> o_rsp
             PQEncoder o_code -> CodeCollector -> kmem, vmem writes
             Attention o_partial -> BankSequencer -> ResponseMux

It owns the bank's code storage - key and value code columns (one 256-bit column per ``tpc``
tokens, ``ceil(token_capacity / tpc)`` columns each per head slot, slot-major; DRAM rows in a
PIM part) - and instantiates the units: :class:`aqpim.hw.encoder.PQEncoder` (one encoder with
H x (M_k + M_v) subspaces: slot s's keys at s (M_k + M_v) + m, its values after them) and
:class:`aqpim.hw.attention.Attention` (LUT-accumulate, softmax, histogram, value MAC with H
value codebooks), which hold the working storage: codebooks and LUT. READ_CB and READ_LUT read
that working storage through the units' read ports; there are no read-back copies
(docs/bank.md "Storage classes").

Latency and throughput (cycles at the bank clock, no back-pressure; measured figures in
docs/bank.md): header to decision 2 cycles; LOAD_CB one centroid per cycle (K cycles); LOAD_LUT
one 256-bit beat (E = 256 / lut_width entries) per cycle straight into the LUT-accumulate unit
(``lut_beats`` cycles: 64 at M = 64, K = 16, L = 16); WRITE_KV one sub-vector per cycle into the
encoder, so the encoder's ``K / lanes`` cycles per sub-vector set the rate (2M sub-vectors per
token); SCORE one code column per cycle (II = 1 read-ahead from the code storage); AGGREGATE one
token per cycle plus the attention unit's K + ~10 cycles; READ_CODES one beat per cycle; READ_CB
one centroid and READ_LUT one LUT entry per cycle (K, resp. M_k K cycles, plus 1).

Parameters (keyword-only)
-------------------------
numerics:
    The PQ-attention configuration (:class:`aqpim.numerics.Numerics`); ``token_capacity`` sizes
    the code storage and the attention scratch. The flat ``Numerics`` fields (``head_dim``, ...)
    override it, so ``aqpim verilog bank --param`` can build one from ints.
heads:
    H, head slots (1..8, the ISA's 3-bit head field): per slot a token count, key and value
    code storage (slot-major regions of the code memories), key and value codebooks (in the
    encoder and the value MAC, each H x one slot's depth) and loaded masks;
    the G LUTs, the score scratch and the partial registers are shared and tagged with the
    slot that owns them (docs/bank.md "Head slots").
queries:
    G, query heads scored per SCORE / AGGREGATE pass (GQA, 1..8; docs/bank.md "GQA").
    ``value_subspaces`` / ``value_centroids`` (flat fields) give the values their own (M, K)
    (docs/bank.md "Key and value geometry"; K_k = K_v here).
lanes:
    Encoder distance lanes P (divides K).
"""

from __future__ import annotations

from amaranth.hdl import Module, ResetInserter, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out, connect, flipped
from aqpim.hw.attention import Attention
from aqpim.hw.bank_collect import CodeCollector
from aqpim.hw.bank_decode import CommandDecoder, header_head, slot_index
from aqpim.hw.bank_reader import ColumnReader, Source, memory_depths
from aqpim.hw.bank_response import ResponseMux
from aqpim.hw.bank_sequencer import BankSequencer
from aqpim.hw.bank_unpack import BeatUnpacker
from aqpim.hw.encoder import PQEncoder

from aqpim import isa
from aqpim.checks import check_int
from aqpim.geometry import Geometry
from aqpim.numerics import Numerics

__all__ = ["BankArray", "BankController", "slot_bits"]

W = isa.WORD_BITS


def slot_bits(geometry: Geometry) -> dict[str, int]:
    """Storage one head slot adds to a bank, in bits (docs/bank.md "Head slots").

    Memories: the key and value code columns (``columns_per_head`` x 256 each; DRAM rows), the
    encoder's codebooks (M_k + M_v subspaces of K centroids of max(d_k, d_v) W-bit elements;
    READ_CB reads these) and the value MAC's (M_v x K_v x d_v x W); flip-flops: the slot's
    token count and its two loaded masks. No read-back copy. The LUTs, the score scratch and
    the partial registers are shared and cost nothing per slot (three 3-bit owner tags for
    the bank).
    """
    g, n = geometry, geometry.num
    ew = n.elem_bits
    out = {
        "key_codes": g.key.columns_per_head * W,
        "value_codes": g.value.columns_per_head * W,
        "encoder_codebooks": (n.subspaces + n.values.subspaces) * n.centroids
        * max(n.sub_dim, n.values.sub_dim) * ew,
        "value_mac_codebook": n.values.subspaces * n.values.centroids * n.values.sub_dim * ew,
        "state_flip_flops": (n.token_capacity + 1).bit_length() + n.subspaces
        + n.values.subspaces,
    }
    out["memory_total"] = sum(v for k, v in out.items() if k != "state_flip_flops")
    return out


class BankController(wiring.Component):
    """One PIM bank: command stream in, response stream out (see the module docstring)."""

    def __init__(
        self,
        *,
        numerics: Numerics | None = None,
        heads: int = 1,
        queries: int = 1,
        lanes: int | None = None,
        head_dim: int | None = None,
        subspaces: int | None = None,
        centroids: int | None = None,
        elem_bits: int | None = None,
        lut_bits: int | None = None,
        lut_frac_bits: int | None = None,
        exp_bits: int | None = None,
        token_capacity: int | None = None,
        value_subspaces: int | None = None,
        value_centroids: int | None = None,
    ) -> None:
        from aqpim.hw.attn_params import numerics_from  # noqa: I001

        num = numerics_from(
            numerics, head_dim=head_dim, subspaces=subspaces, centroids=centroids,
            elem_bits=elem_bits, lut_bits=lut_bits, lut_frac_bits=lut_frac_bits,
            exp_bits=exp_bits, token_capacity=token_capacity,
            value_subspaces=value_subspaces, value_centroids=value_centroids,
        )
        if isinstance(heads, bool) or not isinstance(heads, int):
            raise TypeError(f"heads must be an int, got {heads!r}")
        self._g = Geometry(num, heads=heads, queries=queries)
        if lanes is None:
            lanes = min(4, num.centroids)
        if isinstance(lanes, bool) or not isinstance(lanes, int):
            raise TypeError(f"lanes must be an int, got {lanes!r}")
        if lanes < 1 or num.centroids % lanes:
            raise ValueError(f"lanes {lanes} must divide centroids {num.centroids}")
        for side in (num.keys, num.values):
            gw = side.sub_dim * self._g.elem_width
            if W % gw:
                raise ValueError(
                    f"a sub-vector of d * elem_width = {gw} bits must divide {W} (power-of-two d)"
                )
        if num.values.centroids != num.centroids:
            # one encoder for both sides (zero-padded to the larger d) runs K / lanes passes
            raise ValueError(
                f"the RTL bank's encoder needs value_centroids == centroids, got "
                f"{num.values.centroids} and {num.centroids}"
            )
        for name, side in (("keys", self._g.key), ("values", self._g.value)):
            if side.columns_per_token & (side.columns_per_token - 1):
                raise ValueError(f"{name}: {side.columns_per_token} columns per token is not a "
                                 "power of two")
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

    def elaborate(self, platform: object) -> Module:
        m = Module()
        g = self._g
        n = g.num

        # The units. The attention path gets a local reset: SCORE restarts its pass pair (the
        # ISA lets a head be rescored without aggregating) and RESET clears it.
        # One encoder for both sides: M_k + M_v codebooks of max(d_k, d_v) elements (the side
        # with the shorter d zero-padded, which leaves its distances exact).
        # H slots: H x (M_k + M_v) encoder codebooks, slot-major (hw/bank_unpack.py).
        m.submodules.encoder = enc = PQEncoder(
            sub_dim=max(n.sub_dim, n.values.sub_dim), centroids=n.centroids,
            subspaces=g.heads * (n.subspaces + n.values.subspaces), elem_bits=n.elem_bits,
            lanes=self._lanes)
        attn = Attention(numerics=n, queries=g.queries, slots=g.heads)

        # The bank's parts (one file each) and its memories.
        m.submodules.sequencer = seq = BankSequencer(geometry=g)
        m.submodules.decoder = dec = CommandDecoder(geometry=g)
        m.submodules.reader = rd = ColumnReader(geometry=g, cb_read=enc.read_signature)
        m.submodules.unpacker = unp = BeatUnpacker(geometry=g, cb_layout=enc.cb_layout,
                                                   x_layout=enc.x_layout)
        m.submodules.collector = col = CodeCollector(geometry=g, code_layout=enc.code_layout)
        m.submodules.response = mux = ResponseMux(geometry=g)
        m.submodules.attention = ResetInserter(seq.unit_rst)(attn)
        mems = {src: Memory(shape=unsigned(W), depth=depth, init=[])
                for src, depth in memory_depths(g).items()}
        for src, mem in mems.items():
            m.submodules[f"{src.name.lower()}_mem"] = mem

        # Commands in, responses out; the sequencer's control ports.
        connect(m, flipped(self.i_cmd), seq.i_cmd)
        connect(m, mux.o_rsp, flipped(self.o_rsp))
        connect(m, seq.decode, dec.bus)
        connect(m, seq.read, rd.ctrl)
        connect(m, seq.unpack, unp.ctrl)
        connect(m, seq.collect, col.ctrl)
        connect(m, seq.respond, mux.ctrl)

        # Data beats to the units (no read-back copies: READ_CB / READ_LUT read the units).
        connect(m, seq.o_data, unp.i_data)
        connect(m, unp.o_cb, enc.i_cb)
        connect(m, unp.o_x, enc.i_x)
        connect(m, unp.o_vcb, attn.i_vcb)
        connect(m, unp.o_lut, attn.i_lut)

        # Codes into the storage; code columns and read beats out of it.
        connect(m, enc.o_code, col.i_code)
        connect(m, col.k_write, mems[Source.KEYS].write_port())
        connect(m, col.v_write, mems[Source.VALUES].write_port())
        for src, mem in mems.items():
            connect(m, getattr(rd, f"{src.name.lower()}_mem"), mem.read_port())
        # READ_CB / READ_LUT: the reader's element reads from the units' working storage
        connect(m, rd.cb_read, enc.cb_read)
        connect(m, rd.lut_read, attn.lut_read)
        connect(m, rd.o_key, attn.i_key)
        connect(m, rd.o_val, attn.i_val)
        connect(m, rd.o_reload, col.i_reload)
        connect(m, rd.o_data, mux.i_mem)
        connect(m, attn.o_partial, seq.i_partial)
        if g.heads > 1:  # the value codebook LOAD_CB writes and AGGREGATE reads: the command's
            m.d.comb += attn.slot.eq(slot_index(header_head(seq.unpack.header), g.heads))
        return m


class BankArray(wiring.Component):
    """``banks`` independent bank controllers in one design (for co-simulation of a device).

    Ports ``i_cmd{b}`` / ``o_rsp{b}`` of bank ``b`` are those of :class:`BankController`; the
    banks share nothing but the clock, as banks of one channel do (the all-bank broadcast is
    the host driving every ``i_cmd`` with the same words). Latency and throughput are the
    controller's. Parameters: ``banks`` (1..16) and the controller's keyword parameters
    (Numerics fields, ``lanes``, ``queries``, ``heads``) as plain ints, so the runner can
    build it from a dict.
    """

    def __init__(self, *, banks: int = 1, lanes: int | None = None, queries: int = 1,
                 heads: int = 1, **fields: int | None) -> None:
        from aqpim.hw.attn_params import numerics_from  # noqa: I001

        num = numerics_from(None, **fields)  # names and values checked there
        banks = check_int("banks", banks, 1, 16)
        self._banks = [BankController(numerics=num, lanes=lanes, queries=queries, heads=heads)
                       for _ in range(banks)]
        members = {}
        for b in range(banks):
            members[f"i_cmd{b}"] = In(stream.Signature(unsigned(W)))
            members[f"o_rsp{b}"] = Out(stream.Signature(unsigned(W)))
        super().__init__(members)

    @property
    def banks(self) -> int:
        return len(self._banks)

    @staticmethod
    def verilog(name: str, *, banks: int = 1, lanes: int | None = None, queries: int = 1,
                heads: int = 1, **fields: int | None) -> str:
        """Verilog of the array built from the same parameters: one shared ``<name>_bank``
        module instantiated per bank under a structural top ``name`` with the ports of
        :meth:`elaborate`'s design. Verilator then compiles the bank once instead of once per
        bank (the co-simulation runner uses this form)."""
        from aqpim.hw.attn_params import numerics_from  # noqa: I001
        from aqpim.hw.verilog import instances_verilog

        banks = check_int("banks", banks, 1, 16)
        bank = BankController(numerics=numerics_from(None, **fields), lanes=lanes,
                              queries=queries, heads=heads)
        return instances_verilog(bank, f"{name}_bank", name, banks)

    @property
    def geometry(self) -> Geometry:
        return self._banks[0].geometry

    def elaborate(self, platform: object) -> Module:
        m = Module()
        for b, bank in enumerate(self._banks):
            m.submodules[f"bank{b}"] = bank
            connect(m, flipped(getattr(self, f"i_cmd{b}")), bank.i_cmd)
            connect(m, bank.o_rsp, flipped(getattr(self, f"o_rsp{b}")))
        return m
