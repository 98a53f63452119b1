"""The PIM bank command set: opcodes, field widths, status codes and their binary encoding.

One source of truth for the bank controller (``hw/command.py`` builds its Amaranth layouts from
the constants here), the golden device, the RTL device and the host driver. Pure Python: the
driver encodes commands without importing Amaranth or NumPy. docs/isa.md is the table.

Wire format
-----------
Both directions are streams of 256-bit words (one HBM3 column access, 32 bytes), like a DRAM
write burst. A command is a *header word* followed by ``length`` data beats; a response is a
header word followed by its own ``length`` data beats.

Command header (low 64 bits of the header word; bits 64..255 are reserved, sent as zero and
ignored)::

    bits     field     width  meaning
    [0:4)    opcode      4    :class:`Opcode`
    [4]      kv          1    0 = keys, 1 = values (LOAD_CB, READ_CB, READ_CODES)
    [5:8)    head        3    head slot of the bank
    [8:16)   subspace    8    PQ subspace m (LOAD_CB, READ_CB); query head q of the KV head
                              (LOAD_LUT, READ_LUT, READ_PARTIAL: GQA, < Geometry.queries)
    [16:40)  addr       24    token index (WRITE_KV) or code column (READ_CODES)
    [40:52)  count      12    tokens (WRITE_KV) or columns (READ_CODES)
    [52:64)  length     12    data beats that follow the header

The bank always consumes exactly ``length`` data beats after a header, whatever the opcode and
whether it accepts the command, so a rejected command never desynchronises the stream. Every
check is made on the header alone, before any state changes.

Response header (low 64 bits; the rest zero)::

    bits     field     width
    [0:4)    status      4    :class:`Status`
    [4:8)    opcode      4    echo of the command's opcode field
    [8:24)   length     16    data beats that follow

Data beats pack fixed-width integers little-endian: element ``i`` of a sequence of ``w``-bit
two's-complement (or unsigned) values sits at bit ``(i * w) % 256`` of beat ``(i * w) // 256``
(``w`` divides 256 for every packed type, see :func:`pack_values`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aqpim.geometry import Geometry

__all__ = [
    "WORD_BITS",
    "HEADER_FIELDS",
    "RESPONSE_FIELDS",
    "OPCODE_FIELDS",
    "QUERY_OPCODES",
    "STATUS_FIELDS",
    "PARTIAL_WORD_BITS",
    "Opcode",
    "Status",
    "Flag",
    "Command",
    "Response",
    "pack_values",
    "unpack_values",
    "encode_header",
    "decode_header",
    "encode_command",
    "decode_command",
    "encode_response",
    "decode_response",
    "response_length",
    "HeadStatus",
    "decode_status",
    "decode_partial",
    "nop",
    "reset",
    "load_cb",
    "write_kv",
    "load_lut",
    "score",
    "aggregate",
    "read_partial",
    "read_status",
    "read_codes",
    "read_cb",
    "read_lut",
]

WORD_BITS = 256  # one stream beat = one HBM3 column access (32 B)
PARTIAL_WORD_BITS = 64  # READ_PARTIAL packs max, sum and the D outputs as 64-bit words

# name -> (lsb, width); the order is the bit order
HEADER_FIELDS: dict[str, tuple[int, int]] = {
    "opcode": (0, 4),
    "kv": (4, 1),
    "head": (5, 3),
    "subspace": (8, 8),
    "addr": (16, 24),
    "count": (40, 12),
    "length": (52, 12),
}
RESPONSE_FIELDS: dict[str, tuple[int, int]] = {
    "status": (0, 4),
    "opcode": (4, 4),
    "length": (8, 16),
}
MAX_HEADS = 1 << HEADER_FIELDS["head"][1]
# READ_STATUS: the first beat of a head slot (its k_mask and v_mask beats follow)
STATUS_FIELDS: dict[str, tuple[int, int]] = {
    "tokens": (0, 32),
    "flags": (32, 8),
    "queries": (40, 4),  # query-head LUTs loaded for this head (GQA; 0 when the LUT is not its)
}


class Opcode(enum.IntEnum):
    """Bank commands. Values are the 4-bit ``opcode`` field; 12..15 are unassigned."""

    NOP = 0
    RESET = 1
    LOAD_CB = 2
    WRITE_KV = 3
    LOAD_LUT = 4
    SCORE = 5
    AGGREGATE = 6
    READ_PARTIAL = 7
    READ_STATUS = 8
    READ_CODES = 9
    READ_CB = 10
    READ_LUT = 11


# opcode -> the header fields that command uses (the rest are ignored); the bank checks
# `head` and `subspace` only where listed, and hw/command.py builds one union member per entry
OPCODE_FIELDS: dict[Opcode, tuple[str, ...]] = {
    Opcode.NOP: (),
    Opcode.RESET: (),
    Opcode.LOAD_CB: ("kv", "head", "subspace"),
    Opcode.WRITE_KV: ("head", "addr", "count"),
    Opcode.LOAD_LUT: ("head", "subspace"),  # subspace = the query head's index q
    Opcode.SCORE: ("head",),
    Opcode.AGGREGATE: ("head",),
    Opcode.READ_PARTIAL: ("head", "subspace"),
    Opcode.READ_STATUS: (),
    Opcode.READ_CODES: ("kv", "head", "addr", "count"),
    Opcode.READ_CB: ("kv", "head", "subspace"),
    Opcode.READ_LUT: ("head", "subspace"),
}
# opcodes whose subspace field names a query head (GQA), not a PQ subspace
QUERY_OPCODES = (Opcode.LOAD_LUT, Opcode.READ_LUT, Opcode.READ_PARTIAL)


class Status(enum.IntEnum):
    """Response status (4 bits). Checks run in this order; the first that fails is reported."""

    OK = 0
    BAD_OPCODE = 1  # opcode field not an Opcode
    ADDR_RANGE = 2  # head >= heads, subspace >= M, token index or column out of range
    BAD_LENGTH = 3  # length (or count) not what the opcode requires
    CAPACITY = 4  # WRITE_KV past the bank's token capacity
    NO_CODEBOOK = 5  # codebook (subspace) needed but never loaded
    NO_LUT = 6  # SCORE / READ_LUT without a LUT loaded for that head
    NO_SCORES = 7  # AGGREGATE without fresh scores of that head
    NO_PARTIAL = 8  # READ_PARTIAL without a partial of that head


class Flag(enum.IntFlag):
    """Per-head flags reported by READ_STATUS (bits [32:40) of the head's first beat)."""

    K_CODEBOOK = 1  # every key subspace loaded
    V_CODEBOOK = 2  # every value subspace loaded
    LUT = 4  # the bank's LUT holds this head's query
    SCORES = 8  # the score scratch holds this head's scores for the current LUT and tokens
    PARTIAL = 16  # the partial-output registers hold this head's partial


def _check_int(name: str, value: object, width: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if not 0 <= value < 1 << width:
        raise ValueError(f"{name} = {value} does not fit in {width} bits")
    return value


# ----------------------------------------------------------------------------------------------
# data beats
# ----------------------------------------------------------------------------------------------
def pack_values(values: Iterable[int], width: int, *, signed: bool = True) -> list[int]:
    """Pack integers into 256-bit beats, element ``i`` at bit ``i * width`` of the stream.

    ``width`` must divide 256 so no element straddles two beats. Raises ValueError on a value
    outside the ``width``-bit range; the last beat is zero-padded.
    """
    if not isinstance(width, int) or width < 1 or WORD_BITS % width:
        raise ValueError(f"width must divide {WORD_BITS}, got {width!r}")
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
    per = WORD_BITS // width
    mask = (1 << width) - 1
    beats: list[int] = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int):
            v = int(v)  # accept NumPy integers
        if not lo <= v <= hi:
            raise ValueError(f"value {v} at index {i} outside [{lo}, {hi}] ({width} bits)")
        if i % per == 0:
            beats.append(0)
        beats[-1] |= (v & mask) << ((i % per) * width)
    return beats


def unpack_values(
    beats: Sequence[int], width: int, count: int, *, signed: bool = True
) -> list[int]:
    """Inverse of :func:`pack_values`: the first ``count`` values of ``beats``."""
    if not isinstance(width, int) or width < 1 or WORD_BITS % width:
        raise ValueError(f"width must divide {WORD_BITS}, got {width!r}")
    per = WORD_BITS // width
    if count > per * len(beats):
        raise ValueError(f"{count} values of {width} bits do not fit in {len(beats)} beats")
    mask = (1 << width) - 1
    sign = 1 << (width - 1)
    out = []
    for i in range(count):
        v = (beats[i // per] >> ((i % per) * width)) & mask
        if signed and v & sign:
            v -= 1 << width
        out.append(v)
    return out


# ----------------------------------------------------------------------------------------------
# commands and responses
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    """One bank command: header fields plus its data beats (256-bit ints).

    ``length`` is ``len(data)``. ``opcode`` may be any 4-bit int (to test BAD_OPCODE); the
    other fields must fit their widths (:data:`HEADER_FIELDS`), checked here.
    """

    opcode: int
    head: int = 0
    kv: int = 0
    subspace: int = 0
    addr: int = 0
    count: int = 0
    data: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("opcode", "head", "kv", "subspace", "addr", "count"):
            _check_int(name, getattr(self, name), HEADER_FIELDS[name][1])
        data = tuple(self.data)
        for i, beat in enumerate(data):
            _check_int(f"data[{i}]", beat, WORD_BITS)
        _check_int("length", len(data), HEADER_FIELDS["length"][1])
        object.__setattr__(self, "data", data)
        if self.opcode in Opcode._value2member_map_:
            object.__setattr__(self, "opcode", Opcode(self.opcode))

    @property
    def length(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        name = self.opcode.name if isinstance(self.opcode, Opcode) else str(self.opcode)
        return (
            f"Command({name}, head={self.head}, kv={self.kv}, subspace={self.subspace}, "
            f"addr={self.addr}, count={self.count}, length={self.length})"
        )


@dataclass(frozen=True)
class Response:
    """A bank's answer: status, the echoed opcode and data beats (256-bit ints)."""

    status: Status
    opcode: int
    data: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _check_int("status", int(self.status), RESPONSE_FIELDS["status"][1])
        _check_int("opcode", int(self.opcode), RESPONSE_FIELDS["opcode"][1])
        data = tuple(self.data)
        for i, beat in enumerate(data):
            _check_int(f"data[{i}]", beat, WORD_BITS)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "status", Status(self.status))

    @property
    def ok(self) -> bool:
        return self.status == Status.OK


def _pack_fields(spec: dict[str, tuple[int, int]], values: dict[str, int]) -> int:
    word = 0
    for name, (lsb, width) in spec.items():
        word |= _check_int(name, values[name], width) << lsb
    return word


def _unpack_fields(spec: dict[str, tuple[int, int]], word: int) -> dict[str, int]:
    _check_int("header word", word, WORD_BITS)
    return {name: (word >> lsb) & ((1 << width) - 1) for name, (lsb, width) in spec.items()}


def encode_header(cmd: Command) -> int:
    """The 256-bit header word of ``cmd`` (fields in the low 64 bits)."""
    values = {name: int(getattr(cmd, name)) for name in HEADER_FIELDS}
    return _pack_fields(HEADER_FIELDS, values)


def decode_header(word: int) -> dict[str, int]:
    """Fields of a command header word (reserved bits ignored, as the bank does)."""
    return _unpack_fields(HEADER_FIELDS, word)


def response_length(word: int) -> int:
    """Data beats that follow a response header word (its ``length`` field)."""
    return _unpack_fields(RESPONSE_FIELDS, word)["length"]


def encode_command(cmd: Command) -> list[int]:
    """Header word followed by the data beats."""
    if not isinstance(cmd, Command):
        raise TypeError(f"expected a Command, got {type(cmd).__name__}")
    return [encode_header(cmd), *cmd.data]


def decode_command(words: Sequence[int]) -> Command:
    """Inverse of :func:`encode_command`; ``words`` must hold exactly header + length beats."""
    if not words:
        raise ValueError("empty word sequence: no command header")
    f = decode_header(words[0])
    if len(words) != 1 + f["length"]:
        raise ValueError(
            f"header says {f['length']} data beats but {len(words) - 1} follow it"
        )
    f.pop("length")
    return Command(data=tuple(words[1:]), **f)


def encode_response(resp: Response) -> list[int]:
    """Response header word followed by the data beats."""
    head = _pack_fields(
        RESPONSE_FIELDS,
        {"status": int(resp.status), "opcode": int(resp.opcode), "length": len(resp.data)},
    )
    return [head, *resp.data]


def decode_response(words: Sequence[int]) -> Response:
    """Inverse of :func:`encode_response`."""
    if not words:
        raise ValueError("empty word sequence: no response header")
    f = _unpack_fields(RESPONSE_FIELDS, words[0])
    if f["status"] not in Status._value2member_map_:
        raise ValueError(f"unknown status code {f['status']}")
    if len(words) != 1 + f["length"]:
        raise ValueError(f"header says {f['length']} data beats but {len(words) - 1} follow it")
    return Response(status=Status(f["status"]), opcode=f["opcode"], data=tuple(words[1:]))


# ----------------------------------------------------------------------------------------------
# command builders (what the driver sends) and response decoders
# ----------------------------------------------------------------------------------------------
def _flat_ints(name: str, values: Iterable[int], count: int) -> list[int]:
    out = [int(v) for v in values]
    if len(out) != count:
        raise ValueError(f"{name} must have {count} values, got {len(out)}")
    return out


def nop() -> Command:
    return Command(Opcode.NOP)


def reset() -> Command:
    return Command(Opcode.RESET)


def load_cb(
    geom: Geometry, *, head: int, kv: int, subspace: int, centroids: Iterable[int]
) -> Command:
    """LOAD_CB: the K centroids (K*d W-bit values, centroid-major) of one subspace.

    K and d are the ``kv`` side's (keys: K_k, d_k; values: K_v, d_v).
    """
    n = geom.num
    if kv not in (0, 1):
        raise ValueError(f"kv must be 0 (keys) or 1 (values), got {kv!r}")
    ns = n.side(kv)
    vals = _flat_ints("centroids", centroids, ns.centroids * ns.sub_dim)
    _check_elems("centroids", vals, n.elem_min, n.elem_max)
    return Command(
        Opcode.LOAD_CB, head=head, kv=kv, subspace=subspace,
        data=tuple(pack_values(vals, geom.elem_width)),
    )


def write_kv(geom: Geometry, *, head: int, token: int, keys: Sequence[Sequence[int]],
             values: Sequence[Sequence[int]]) -> Command:
    """WRITE_KV: ``count = len(keys)`` tokens, each its D-element K beats then its V beats."""
    n = geom.num
    if len(keys) != len(values) or not len(keys):
        raise ValueError(f"keys and values must have the same length >= 1, got "
                         f"{len(keys)} and {len(values)}")
    data: list[int] = []
    for i, (k, v) in enumerate(zip(keys, values, strict=True)):
        for name, vec in (("keys", k), ("values", v)):
            vals = _flat_ints(f"{name}[{i}]", vec, n.head_dim)
            _check_elems(f"{name}[{i}]", vals, n.elem_min, n.elem_max)
            data += pack_values(vals, geom.elem_width)
    return Command(Opcode.WRITE_KV, head=head, addr=token, count=len(keys), data=tuple(data))


def load_lut(geom: Geometry, *, head: int, lut: Iterable[int], query: int = 0) -> Command:
    """LOAD_LUT: M*K L-bit entries, subspace-major (entry m*K + j is LUT[m, j]), of query head
    ``query`` of the KV head (GQA: 0 starts a new set, q appends the q-th; docs/isa.md)."""
    n = geom.num
    vals = _flat_ints("lut", lut, n.subspaces * n.centroids)
    _check_elems("lut", vals, n.lut_min, n.lut_max)
    return Command(Opcode.LOAD_LUT, head=head, subspace=query,
                   data=tuple(pack_values(vals, geom.lut_width)))


def score(*, head: int) -> Command:
    return Command(Opcode.SCORE, head=head)


def aggregate(*, head: int) -> Command:
    return Command(Opcode.AGGREGATE, head=head)


def read_partial(*, head: int, query: int = 0) -> Command:
    return Command(Opcode.READ_PARTIAL, head=head, subspace=query)


def read_status() -> Command:
    return Command(Opcode.READ_STATUS)


def read_codes(*, head: int, kv: int, column: int, count: int) -> Command:
    return Command(Opcode.READ_CODES, head=head, kv=kv, addr=column, count=count)


def read_cb(*, head: int, kv: int, subspace: int) -> Command:
    return Command(Opcode.READ_CB, head=head, kv=kv, subspace=subspace)


def read_lut(*, head: int, query: int = 0) -> Command:
    return Command(Opcode.READ_LUT, head=head, subspace=query)


def _check_elems(name: str, vals: list[int], lo: int, hi: int) -> None:
    for i, v in enumerate(vals):
        if not lo <= v <= hi:
            raise ValueError(f"{name}[{i}] = {v} outside [{lo}, {hi}]")


@dataclass(frozen=True)
class HeadStatus:
    """One head slot as READ_STATUS reports it."""

    tokens: int
    flags: Flag
    k_mask: int  # bit m set: key subspace m loaded
    v_mask: int
    queries: int = 0  # query-head LUTs loaded (when the LUT is this head's)


def decode_status(geom: Geometry, resp: Response) -> list[HeadStatus]:
    """Per-head status from a READ_STATUS response (3 beats per head slot)."""
    if len(resp.data) != geom.status_beats:
        raise ValueError(f"status has {len(resp.data)} beats, expected {geom.status_beats}")
    out = []
    for h in range(geom.heads):
        b0, bk, bv = resp.data[3 * h:3 * h + 3]
        f = _unpack_fields(STATUS_FIELDS, b0)
        out.append(HeadStatus(tokens=f["tokens"], flags=Flag(f["flags"]), k_mask=bk, v_mask=bv,
                              queries=f["queries"]))
    return out


def decode_partial(geom: Geometry, resp: Response) -> tuple[int, int, list[int]]:
    """(max, sum, out[D]) from a READ_PARTIAL response."""
    d = geom.num.head_dim
    words = unpack_values(resp.data, PARTIAL_WORD_BITS, d + 2)
    return words[0], words[1], words[2:]
