"""Bank-local softmax weight: max-subtract and the fixed-point exp2 ROM.

``w = floor(EXP2[f] / 2^n)`` with ``delta = max - score``, ``n = delta >> F``,
``f = delta mod 2^F``, and ``w = 0`` once ``n > P`` (golden model:
:func:`aqpim.sw.golden.intmodel.softmax_weights`; ROM: :attr:`aqpim.numerics.Numerics.exp_rom`).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from aqpim.checks import check_int
from aqpim.numerics import Numerics

from .attn_params import check_numerics
from .skid import CreditSkid

__all__ = ["Softmax", "softmax_in_layout", "softmax_out_layout"]


def _fields(first: dict, tag_bits: int) -> data.StructLayout:
    if tag_bits:
        first = {**first, "tag": unsigned(tag_bits)}
    return data.StructLayout(first)


def softmax_in_layout(num: Numerics, tag_bits: int = 0) -> data.StructLayout:
    """``score`` (signed ``score_bits``) and an optional ``tag`` carried along unchanged."""
    return _fields({"score": signed(num.score_bits)}, tag_bits)


def softmax_out_layout(num: Numerics, tag_bits: int = 0) -> data.StructLayout:
    """``weight`` (unsigned ``weight_bits``, 2^P is one) and the ``tag`` of its score."""
    return _fields({"weight": unsigned(num.weight_bits)}, tag_bits)


class Softmax(wiring.Component):
    """Softmax weight of one score per cycle against a given bank-local maximum.

    Stage 1 subtracts (``delta = max - score``, exact, ``delta_bits`` unsigned), splits
    ``delta`` into its integer part ``n`` and fraction ``f`` and reads ``EXP2[f]`` from a
    2^F-entry ROM of ``P + 1``-bit words (synchronous, so a block RAM or LUT ROM both fit).
    Stage 2 shifts: ``w = EXP2[f] >> min(n, P + 1)``; since ``EXP2[f] <= 2^P``, a shift by
    P + 1 is 0, which is the golden model's "0 once n > P" without a wide shifter.

    Ports
    -----
    max : In(signed(score_bits))
        The bank-local maximum; must be stable while scores flow and ``>= every score``
        (the attention unit guarantees both: it is the maximum of pass 1).
    i : In(stream of :func:`softmax_in_layout`)
    o : Out(stream of :func:`softmax_out_layout`)

    Latency and throughput
    ----------------------
    2 cycles from a score's transfer to its weight being valid; one score per cycle. The
    stages have no enable (they advance every cycle); stage 2 writes an output FIFO of
    ``latency + 1`` = 3 entries (a skid buffer in credit form), and a score is taken only
    while that FIFO has room for it and every score in flight, so output back-pressure never
    reaches the pipeline's flip-flops and ``i.ready`` does not depend on ``o.ready``.

    Parameters (keyword-only)
    -------------------------
    numerics : Numerics
        The configuration (:mod:`aqpim.numerics`); every width follows from it (the score
        width is ``lut_bits + ceil(log2 subspaces)``).
    tag_bits : int
        Width of the side data carried with each score (0 = none).
    """

    def __init__(
        self,
        *,
        numerics: Numerics,
        tag_bits: int = 0,
    ) -> None:
        num = check_numerics(numerics)
        tag_bits = check_int("tag_bits", tag_bits, 0)
        self._num = num
        self._tag_bits = tag_bits
        super().__init__({
            "max": In(signed(num.score_bits)),
            "i": In(stream.Signature(softmax_in_layout(num, tag_bits))),
            "o": Out(stream.Signature(softmax_out_layout(num, tag_bits))),
        })

    @property
    def numerics(self) -> Numerics:
        return self._num

    @property
    def tag_bits(self) -> int:
        return self._tag_bits

    @property
    def latency(self) -> int:
        """Cycles from a score's transfer to its weight on ``o`` (no backpressure)."""
        return 2

    @property
    def skid_depth(self) -> int:
        """Entries of the output FIFO: ``latency + 1``, every score that can be in flight."""
        return self.latency + 1

    def elaborate(self, platform) -> Module:
        m = Module()
        num = self._num
        frac = num.lut_frac_bits
        depth = self.skid_depth

        # No stall enable: stage 1 advances every cycle and stage 2 writes an output FIFO
        # where its register was (latency unchanged). A score is taken only while the FIFO has
        # room for it and every score in flight (credit count: taken, not yet delivered), so
        # i.ready is a register's compare, not a path from o.ready.
        out_l = softmax_out_layout(num, self._tag_bits)
        skid = CreditSkid(m, self.o, depth)
        fire = self.i.valid & self.i.ready
        m.d.comb += self.i.ready.eq(skid.room)
        skid.take(fire)

        # Stage 1: exact max-subtract; the fraction addresses the ROM (synchronous read).
        s0_delta = Signal(unsigned(num.delta_bits))
        m.d.comb += s0_delta.eq(self.max - self.i.payload.score)
        rom = Memory(shape=unsigned(num.weight_bits), depth=1 << frac, init=num.exp_rom)
        m.submodules.exp2_rom = rom
        rp = rom.read_port(domain="sync")
        m.d.comb += rp.addr.eq(s0_delta[:frac])
        # n saturates at P + 1: every larger shift gives 0 as well, and the shifter stays small.
        n_sat = num.exp_bits + 1
        s1_valid = Signal()
        s1_n = Signal(range(n_sat + 1), reset_less=True)  # data: no reset logic on the path
        s0_int = s0_delta[frac:]
        m.d.sync += [
            s1_valid.eq(fire),
            s1_n.eq(Mux(s0_int > n_sat, n_sat, s0_int)),
        ]

        # Stage 2: the shift that divides by 2^n (floor), into the FIFO.
        s2 = Signal(out_l)
        m.d.comb += s2.weight.eq(rp.data >> s1_n)
        if self._tag_bits:
            s1_tag = Signal(self._tag_bits, reset_less=True)
            m.d.sync += s1_tag.eq(self.i.payload.tag)
            m.d.comb += s2.tag.eq(s1_tag)
        skid.write(s2.as_value(), s1_valid)
        return m
