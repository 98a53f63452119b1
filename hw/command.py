"""Amaranth layouts of the bank's wire format, generated from :mod:`aqpim.isa`.

:mod:`aqpim.isa` (pure Python) is the one source of opcodes, field positions and status codes;
this module turns it into Amaranth shapes so that hw/ never slices a header by hand and
waveforms show opcode and status names:

- :class:`Opcode`, :class:`Status`: ``amaranth.lib.enum.Enum`` with the isa's members and
  field widths.
- :class:`Command`: the command header (low 64 bits of a header word) as a ``data.Struct``:
  ``opcode``, a union ``params`` with one member per opcode holding that command's fields
  (:data:`aqpim.isa.OPCODE_FIELDS`) at their wire positions, and ``length``. This is the
  ``Command`` example of Amaranth's data.rst; ``Command.const({...})`` packs a header and
  ``Command.from_bits(word)`` unpacks one.
- :class:`ResponseHeader`: status, the echoed opcode and the response length.
- :func:`head_status_layout`, :func:`partial_beats_layout`: the data beats of READ_STATUS and
  READ_PARTIAL, :func:`bank_state_layout`: the bank state the checks read.

Importing this module checks that every generated offset equals the isa's table.
"""

import types

from amaranth.hdl import signed, unsigned
from amaranth.lib import data, enum

from aqpim import isa
from aqpim.geometry import Geometry

__all__ = [
    "Command",
    "CommandWord",
    "Fields",
    "Flags",
    "Opcode",
    "ResponseHeader",
    "Status",
    "bank_state_layout",
    "bank_slots_layout",
    "head_status_layout",
    "partial_beats_layout",
]


def _enum(name: str, source: type, width: int) -> type:
    """An Amaranth enum of ``width`` bits with the members of the Python enum ``source``."""
    members = {m.name: m.value for m in source}
    return types.new_class(name, (enum.Enum,), {"shape": unsigned(width)},
                           lambda ns: ns.update(members))


Opcode = _enum("Opcode", isa.Opcode, isa.HEADER_FIELDS["opcode"][1])
Status = _enum("Status", isa.Status, isa.RESPONSE_FIELDS["status"][1])

# The per-command fields sit between the opcode and the length field.
_P_LSB = isa.HEADER_FIELDS["opcode"][0] + isa.HEADER_FIELDS["opcode"][1]
_P_BITS = isa.HEADER_FIELDS["length"][0] - _P_LSB

#: every per-command field with its width; the union members are subsets of these
Fields = data.StructLayout(
    {name: unsigned(isa.HEADER_FIELDS[name][1])
     for name in ("kv", "head", "subspace", "addr", "count")}
)


def _params() -> data.UnionLayout:
    members = {}
    for op, names in isa.OPCODE_FIELDS.items():
        members[op.name.lower()] = data.FlexibleLayout(_P_BITS, {
            name: data.Field(unsigned(isa.HEADER_FIELDS[name][1]),
                             isa.HEADER_FIELDS[name][0] - _P_LSB)
            for name in names
        })
    return data.UnionLayout(members)


class Command(data.Struct):
    """A command header: the opcode, that opcode's fields, and the data beats that follow."""

    opcode: Opcode
    params: _params()
    length: unsigned(isa.HEADER_FIELDS["length"][1])


class CommandWord(data.Struct):
    """A header word: the header in the low bits, the rest reserved (sent as zero, ignored)."""

    header: Command
    reserved: unsigned(isa.WORD_BITS - Command.as_shape().size)


class ResponseHeader(data.Struct):
    """A response header: status, the command's opcode field echoed, data beats that follow."""

    status: Status
    opcode: Opcode
    length: unsigned(isa.RESPONSE_FIELDS["length"][1])


#: per-head flags of READ_STATUS, one bit per :class:`aqpim.isa.Flag` member
Flags = data.FlexibleLayout(
    isa.STATUS_FIELDS["flags"][1],
    {f.name.lower(): data.Field(unsigned(1), f.value.bit_length() - 1) for f in isa.Flag},
)


def head_status_layout(subspaces: int, value_subspaces: int | None = None) -> data.StructLayout:
    """One head slot's three READ_STATUS beats: tokens and flags, the K mask (``subspaces``
    bits), the V mask (``value_subspaces`` bits, default the same)."""
    info = data.FlexibleLayout(isa.WORD_BITS, {
        "tokens": data.Field(unsigned(isa.STATUS_FIELDS["tokens"][1]),
                             isa.STATUS_FIELDS["tokens"][0]),
        "flags": data.Field(Flags, isa.STATUS_FIELDS["flags"][0]),
        "queries": data.Field(unsigned(isa.STATUS_FIELDS["queries"][1]),
                              isa.STATUS_FIELDS["queries"][0]),
    })
    mv = subspaces if value_subspaces is None else value_subspaces
    masks = [data.FlexibleLayout(isa.WORD_BITS, {"bits": data.Field(unsigned(m), 0)})
             for m in (subspaces, mv)]
    return data.StructLayout({"info": info, "k_mask": masks[0], "v_mask": masks[1]})


def partial_beats_layout(geometry: Geometry) -> data.ArrayLayout:
    """READ_PARTIAL's beats: max, sum, out[0..D) as 64-bit words, four to a beat, zero-padded."""
    per = isa.WORD_BITS // isa.PARTIAL_WORD_BITS
    return data.ArrayLayout(data.ArrayLayout(signed(isa.PARTIAL_WORD_BITS), per),
                            geometry.partial_beats)


def bank_state_layout(geometry: Geometry) -> data.StructLayout:
    """The state every check reads (docs/isa.md "Bank state"): one head slot's view of
    :func:`bank_slots_layout` (the flags true only where the shared part is that slot's)."""
    n = geometry.num
    return data.StructLayout({
        "tokens": unsigned(range(n.token_capacity + 1).stop.bit_length()),
        "k_mask": unsigned(n.subspaces),
        "v_mask": unsigned(n.values.subspaces),
        # GQA: query-head LUTs loaded (of the head holding the LUT), partials aggregated
        "luts": unsigned(geometry.queries.bit_length()),
        "partials": unsigned(geometry.queries.bit_length()),
        "lut": unsigned(1),
        "scores": unsigned(1),
        "partial": unsigned(1),
    })


def bank_slots_layout(geometry: Geometry) -> data.StructLayout:
    """The whole bank state: per head slot the token count and the loaded masks; the shared
    LUT, score scratch and partial registers with a valid bit and the slot that owns them
    (``*_head``, the command's 3-bit head field), as the golden device keeps them."""
    n, h = geometry.num, geometry.heads
    one = bank_state_layout(geometry)
    head = unsigned(isa.HEADER_FIELDS["head"][1])
    return data.StructLayout({
        "tokens": data.ArrayLayout(one["tokens"].shape, h),
        "k_mask": data.ArrayLayout(unsigned(n.subspaces), h),
        "v_mask": data.ArrayLayout(unsigned(n.values.subspaces), h),
        "luts": one["luts"].shape,
        "partials": one["partials"].shape,
        "lut": unsigned(1),
        "scores": unsigned(1),
        "partial": unsigned(1),
        "lut_head": head,
        "scores_head": head,
        "partial_head": head,
    })


def _check_offsets() -> None:
    """The generated layouts must put every field where the isa's tables say."""
    cmd = Command.as_shape()
    for name in ("opcode", "length"):
        assert (cmd[name].offset, cmd[name].width) == isa.HEADER_FIELDS[name], name
    for op, names in isa.OPCODE_FIELDS.items():
        member = cmd["params"].shape[op.name.lower()].shape
        for name in names:
            got = (_P_LSB + member[name].offset, member[name].width)
            assert got == isa.HEADER_FIELDS[name], (op, name)
    rsp = ResponseHeader.as_shape()
    for name, spec in isa.RESPONSE_FIELDS.items():
        assert (rsp[name].offset, rsp[name].width) == spec, name
    for f in isa.Flag:
        assert 1 << Flags[f.name.lower()].offset == f.value, f


_check_offsets()
