"""Beat unpacker of the bank: command data beats into the units' typed payloads.

The sequencer forwards the data beats of an accepted LOAD_CB, WRITE_KV or LOAD_LUT on
``i_data``; the latched header on ``ctrl`` says which:

- LOAD_LUT: each beat goes straight to the attention unit (``o_lut``: row and its E = 256 / L'
  sign-extended entries); one beat per cycle, latency 0.
- LOAD_CB: a beat is held and its centroids (groups of d elements, d of the ``kv`` side) are
  handed out one per cycle to the encoder (``o_cb``) and, for values, to the value MAC
  (``o_vcb``). K centroids take K cycles plus one per beat. (READ_CB and READ_LUT read the
  encoder's and the LUT-accumulate unit's storage: there are no read-back copies.)
- WRITE_KV: the held beat's sub-vectors go to the encoder (``o_x``), keys of a token as
  subspaces 0..M_k-1 and its values as M_k..M_k+M_v-1, one per cycle; a vector ends its beat
  (the next vector starts on a fresh beat), so the rate is one sub-vector per cycle plus one
  cycle per beat.

The encoder is one unit for both sides, sized for the larger sub-vector: a group of the side
with the shorter d is zero-padded to its d (a zero in both the sub-vector and the centroid
adds nothing to a squared distance, so the codes are exact). ``ctrl.last`` is high in the
cycle that completes a unit: the K-th centroid, a vector's M-th sub-vector, or any LUT beat.
``ctrl.start`` (the header check) resets the counters.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2
from aqpim.hw.bank_decode import header_head, slot_index, sub_index
from aqpim.hw.command import Command, Opcode
from aqpim.hw.lut_accumulate import lut_write_layout
from aqpim.hw.value_mac import codebook_write_layout

from aqpim import isa
from aqpim.checks import check_instance
from aqpim.geometry import Geometry

__all__ = ["BeatUnpacker", "unpack_control"]

W = isa.WORD_BITS


def unpack_control() -> wiring.Signature:
    """The sequencer's side: start strobe and header out, end of a unit in."""
    return wiring.Signature({"start": Out(1), "header": Out(Command), "last": In(1)})


def _elements(m: Module, word, width: int, bits: int, count: int) -> Signal:
    """The ``count`` ``bits``-bit signed values stored ``width`` bits apart in ``word``."""
    src = data.View(data.ArrayLayout(unsigned(width), count), word)
    out = Signal(data.ArrayLayout(signed(bits), count))
    m.d.comb += [out[i].eq(src[i][:bits].as_signed()) for i in range(count)]
    return out


class BeatUnpacker(wiring.Component):
    """Hands data beats to the encoder and attention unit (see the module docstring).

    Parameters (keyword-only)
    -------------------------
    geometry:
        The bank's :class:`aqpim.geometry.Geometry`.
    cb_layout, x_layout:
        The encoder's ``i_cb`` and ``i_x`` payload layouts (:class:`aqpim.hw.encoder.PQEncoder`
        with H x (M_k + M_v) subspaces of max(d_k, d_v) elements: slot s's keys at
        s (M_k + M_v) + m, its values after them).
    """

    def __init__(self, *, geometry: Geometry, cb_layout: data.Layout,
                 x_layout: data.Layout) -> None:
        self._g = check_instance("geometry", geometry, Geometry)
        n = geometry.num
        super().__init__({
            "ctrl": In(unpack_control()),
            "i_data": In(stream.Signature(unsigned(W))),
            "o_cb": Out(stream.Signature(cb_layout)),
            "o_x": Out(stream.Signature(x_layout)),
            "o_vcb": Out(stream.Signature(codebook_write_layout(n.values))),
            "o_lut": Out(stream.Signature(lut_write_layout(n.keys, geometry.queries))),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        g = self._g
        n = g.num
        Mk, Mv, K = n.subspaces, n.values.subspaces, n.centroids
        dk, dv = n.sub_dim, n.values.sub_dim
        cbk, cbv = g.key.cb_beats, g.value.cb_beats
        ew, lw = g.elem_width, g.lut_width
        gpb_k, gpb_v = W // (dk * ew), W // (dv * ew)  # groups (centroids, sub-vectors) per beat
        hdr, i_data = self.ctrl.header, self.i_data
        cb = hdr.params.load_cb
        sub_k, sub_v = sub_index(cb.subspace, Mk), sub_index(cb.subspace, Mv)
        # Head slots: the encoder holds H x (M_k + M_v) codebooks, slot-major, so a slot's
        # codebooks persist while other slots load theirs.
        slot = slot_index(header_head(hdr), g.heads)
        enc0 = slot * (Mk + Mv)  # the slot's first encoder subspace
        cb_sub = enc0 + Mux(cb.kv, Mk + sub_v, sub_k)  # encoder subspace: keys, then values

        # The held beat, the group in it now offered, and the counters of this command.
        full = Signal()
        beat = Signal(W)
        slot = Signal(range(max(gpb_k, gpb_v) + 1))
        grp = Signal(range(max(K, Mk, Mv) + 1))  # centroid (LOAD_CB) or subspace (WRITE_KV)
        vec = Signal(range(2 * g.max_tokens_per_write + 2))  # vectors done (WRITE_KV)
        row = Signal(range(max(g.lut_beats, cbk, cbv) + 1))  # beats taken
        is_v = Mux(hdr.opcode == Opcode.LOAD_CB, cb.kv, vec[0])  # the side now handed out
        group_k = _group(m, beat, slot, dk * ew, gpb_k, ew, n.elem_bits, dk)
        group_v = _group(m, beat, slot, dv * ew, gpb_v, ew, n.elem_bits, dv)
        group = Signal(data.ArrayLayout(signed(n.elem_bits), max(dk, dv)))  # zero-padded
        for i in range(max(dk, dv)):
            m.d.comb += group[i].eq(Mux(is_v, group_v[i] if i < dv else 0,
                                        group_k[i] if i < dk else 0))
        gpb_end = Mux(is_v, slot == gpb_v - 1, slot == gpb_k - 1)  # the beat's last group
        took = i_data.valid & i_data.ready
        with m.If(took):
            m.d.sync += row.eq(row + 1)

        # LOAD_LUT: a whole beat per cycle into the LUT (query head q's with GQA).
        with m.If(hdr.opcode == Opcode.LOAD_LUT):
            lut = self.o_lut.payload
            if g.queries > 1:
                q = hdr.params.load_lut.subspace[:max(1, (g.queries - 1).bit_length())]
                m.d.comb += lut.query.eq(q)
            m.d.comb += [
                lut.row.eq(row),
                lut.values.eq(_elements(m, i_data.payload, lw, n.lut_bits, W // lw)),
                self.o_lut.valid.eq(i_data.valid),
                i_data.ready.eq(self.o_lut.ready),
                self.ctrl.last.eq(took),
            ]
        # LOAD_CB / WRITE_KV: take a beat when none is held, then hand out its groups.
        with m.Else():
            m.d.comb += i_data.ready.eq(~full)
            with m.If(took):
                m.d.sync += [beat.eq(i_data.payload), slot.eq(0), full.eq(1)]

        # One centroid per cycle into the encoder and, for values, the value MAC. Writes are
        # idempotent, so a unit that took the centroid early may see it again while waiting.
        enc, mac = self.o_cb.payload, self.o_vcb.payload
        m.d.comb += [enc.sub.eq(cb_sub), enc.idx.eq(grp), enc.vec.eq(group),
                     mac.subspace.eq(cb.subspace), mac.index.eq(grp), mac.vector.eq(group_v)]
        with m.If(full & (hdr.opcode == Opcode.LOAD_CB)):
            m.d.comb += [self.o_cb.valid.eq(1), self.o_vcb.valid.eq(cb.kv)]
            with m.If(self.o_cb.ready & (self.o_vcb.ready | ~cb.kv)):
                m.d.sync += [grp.eq(grp + 1), slot.eq(slot + 1)]
                with m.If(grp == K - 1):
                    m.d.comb += self.ctrl.last.eq(1)
                    m.d.sync += full.eq(0)
                with m.Elif(gpb_end):
                    m.d.sync += full.eq(0)

        # Sub-vector `grp` of vector `vec` (even: key, odd: value) of a token.
        x = self.o_x.payload
        m.d.comb += [x.sub.eq(enc0 + Mux(vec[0], Mk + grp, grp)), x.x.eq(group)]
        with m.If(full & (hdr.opcode == Opcode.WRITE_KV)):
            m.d.comb += self.o_x.valid.eq(1)
            with m.If(self.o_x.ready):
                m.d.sync += [grp.eq(grp + 1), slot.eq(slot + 1)]
                with m.If(grp == Mux(vec[0], Mv - 1, Mk - 1)):
                    m.d.comb += self.ctrl.last.eq(1)
                    m.d.sync += [grp.eq(0), vec.eq(vec + 1), full.eq(0)]
                with m.Elif(gpb_end):
                    m.d.sync += full.eq(0)

        with m.If(self.ctrl.start):
            m.d.sync += [slot.eq(0), grp.eq(0), vec.eq(0), row.eq(0), full.eq(0)]
        return m


def _group(m: Module, beat, slot, gw: int, gpb: int, ew: int, bits: int, d: int) -> Signal:
    """Group ``slot`` of ``gpb`` groups of ``gw`` bits in ``beat``: its d sign-extended elements."""
    groups = data.View(data.ArrayLayout(unsigned(gw), gpb), beat)
    return _elements(m, groups[slot[:ceil_log2(gpb)]] if gpb > 1 else groups[0], ew, bits, d)
