"""The command set: encoding, field widths, packing, geometry, builders."""

from __future__ import annotations

import random

import pytest

from aqpim import isa
from aqpim.geometry import Geometry
from aqpim.isa import Command, Opcode, Response, Status
from aqpim.numerics import Numerics


def test_header_bit_positions_match_the_documented_table() -> None:
    # Hand-assembled from the table in docs/isa.md, not from HEADER_FIELDS.
    cmd = Command(Opcode.LOAD_CB, head=5, kv=1, subspace=0x3C, addr=0xABCDE, count=0x123,
                  data=(7, 8))
    expected = 2 | 1 << 4 | 5 << 5 | 0x3C << 8 | 0xABCDE << 16 | 0x123 << 40 | 2 << 52
    assert isa.encode_command(cmd) == [expected, 7, 8]
    assert isa.decode_command([expected, 7, 8]) == cmd


def test_response_bit_positions() -> None:
    r = Response(Status.NO_LUT, int(Opcode.SCORE), (1, 2, 3))
    assert isa.encode_response(r) == [6 | 5 << 4 | 3 << 8, 1, 2, 3]
    assert isa.decode_response(isa.encode_response(r)) == r


def test_random_round_trip() -> None:
    rng = random.Random(1)
    for _ in range(500):
        cmd = Command(
            rng.randrange(16), head=rng.randrange(8), kv=rng.randrange(2),
            subspace=rng.randrange(256), addr=rng.randrange(1 << 24), count=rng.randrange(4096),
            data=tuple(rng.getrandbits(256) for _ in range(rng.randrange(4))),
        )
        words = isa.encode_command(cmd)
        assert all(0 <= w < 1 << 256 for w in words)
        assert isa.decode_command(words) == cmd


def test_reserved_header_bits_are_ignored() -> None:
    word = isa.encode_header(Command(Opcode.SCORE, head=1))
    assert isa.decode_command([word | 1 << 200]) == Command(Opcode.SCORE, head=1)


@pytest.mark.parametrize(
    ("field", "value", "exc"),
    [
        ("opcode", 16, ValueError), ("head", 8, ValueError), ("kv", 2, ValueError),
        ("subspace", 256, ValueError), ("addr", 1 << 24, ValueError),
        ("count", 4096, ValueError), ("head", -1, ValueError), ("head", 1.0, TypeError),
        ("kv", True, TypeError),
    ],
)
def test_field_range_errors_name_the_value(field: str, value: object, exc: type) -> None:
    with pytest.raises(exc, match=field):
        Command(**({"opcode": 0} | {field: value}))


def test_data_and_length_limits() -> None:
    with pytest.raises(ValueError, match="data"):
        Command(Opcode.NOP, data=(1 << 256,))
    with pytest.raises(ValueError, match="length"):
        Command(Opcode.NOP, data=(0,) * 4096)
    with pytest.raises(ValueError, match="2 data beats but 1"):
        isa.decode_command([2 << 52, 0])
    with pytest.raises(ValueError, match="unknown status"):
        isa.decode_response([15])


def test_pack_values_layout_and_errors() -> None:
    beats = isa.pack_values([1, -1, 0, 5], 8)
    assert beats == [1 | 0xFF << 8 | 5 << 24]
    assert isa.unpack_values(beats, 8, 4) == [1, -1, 0, 5]
    assert isa.pack_values(range(33), 8, signed=False)[1] == 32
    assert isa.pack_values([0], 16) == [0]  # one value gives one beat, even a zero
    with pytest.raises(ValueError, match="128"):
        isa.pack_values([128], 8)
    with pytest.raises(ValueError, match="divide"):
        isa.pack_values([1], 7)


def test_geometry_default_sizes() -> None:
    g = Geometry(Numerics(), heads=2)
    # D=128, M=64, K=16 (b=4), W=8, L=16: counted by hand
    assert g.tokens_per_column == 1  # 64 codes x 4 bits = one 256-bit column
    assert g.cb_beats == 1  # 16 centroids x 2 elements x 8 bits = 256 bits
    assert g.vec_beats == 4 and g.token_beats == 8  # 128 x 8 bits = 4 beats, K then V
    assert g.lut_beats == 64  # 64 x 16 entries x 16 bits
    assert g.partial_beats == 33  # (128 + 2) 64-bit words, 4 per beat
    assert g.status_beats == 6
    small = Geometry(Numerics(head_dim=16, subspaces=8, centroids=16, token_capacity=64))
    assert small.tokens_per_column == 8  # 8 x 4 = 32 bits per token
    assert small.columns_per_head == 8


def test_geometry_key_and_value_sides() -> None:
    # keys d = 8, K = 256 and values d = 4, K = 256 at D = 64 (the 1.5-bit SmolLM2 setting)
    num = Numerics(head_dim=64, subspaces=8, centroids=256, value_subspaces=16,
                   value_centroids=256, token_capacity=64)
    g = Geometry(num)
    assert not num.symmetric and num.bits_per_element == 1.5
    assert (g.key.token_bits, g.key.tokens_per_column, g.key.columns_per_token) == (64, 4, 1)
    assert (g.value.token_bits, g.value.tokens_per_column, g.value.columns_per_token) == (128, 2, 1)
    assert g.key.columns_per_head == 16 and g.value.columns_per_head == 32
    assert g.key.cb_beats == 64 and g.value.cb_beats == 32  # 256 x 8 (4) x 8 bits
    assert g.lut_beats == 128  # M_k x K_k x 16 bits: the LUT is the key side's
    assert g.scratch_rows == 16  # one row per key column
    assert g.used_columns(5) == 2 and g.used_columns(5, kv=1) == 3
    # d = 2, K = 256 at D = 128: 512 bits per token, two columns per token
    wide = Geometry(Numerics(head_dim=128, subspaces=64, centroids=256, token_capacity=8))
    assert (wide.key.tokens_per_column, wide.key.columns_per_token) == (1, 2)
    assert wide.columns_per_head == 16 and wide.used_columns(3) == 6 and wide.scratch_rows == 8
    # equal sides compare equal to the symmetric default
    assert Numerics(value_subspaces=64, value_centroids=16) == Numerics()
    assert num.keys.symmetric and num.values.subspaces == 16 and num.side(1) == num.values


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"value_subspaces": 3}, "value_subspaces 3"),
        ({"value_centroids": 12}, "value_centroids must be a power of two.*12"),
        ({"value_centroids": 512}, "512"),
    ],
)
def test_numerics_value_side_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Numerics(**kwargs)
    with pytest.raises(TypeError, match="value_subspaces"):
        Numerics(value_subspaces=2.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"heads": 0}, ValueError, "heads"),
        ({"heads": 9}, ValueError, "heads"),
        ({"heads": "2"}, TypeError, "heads"),
        ({"num": Numerics(head_dim=96, subspaces=48, centroids=16)}, ValueError,
         r"keys: M\*b = 48\*4 = 192 bits"),
        ({"num": Numerics(head_dim=96, subspaces=32, centroids=256, value_subspaces=48,
                          value_centroids=16)}, ValueError, r"values: M\*b = 48\*4 = 192"),
        ({"num": 3}, TypeError, "Numerics"),
    ],
)
def test_geometry_errors(kwargs: dict, exc: type, match: str) -> None:
    args = {"num": Numerics(), "heads": 1} | kwargs
    with pytest.raises(exc, match=match):
        Geometry(**args)


def test_builders_check_values() -> None:
    g = Geometry(Numerics(head_dim=16, subspaces=8, centroids=4, token_capacity=64))
    with pytest.raises(ValueError, match="centroids must have 8"):
        isa.load_cb(g, head=0, kv=0, subspace=0, centroids=[0] * 7)
    with pytest.raises(ValueError, match=r"centroids\[3\] = 200"):
        isa.load_cb(g, head=0, kv=0, subspace=0, centroids=[0, 0, 0, 200, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="lut"):
        isa.load_lut(g, head=0, lut=[1 << 15] * 32)
    with pytest.raises(ValueError, match="same length"):
        isa.write_kv(g, head=0, token=0, keys=[[0] * 16], values=[])
    cmd = isa.write_kv(g, head=1, token=3, keys=[[1] * 16] * 2, values=[[-1] * 16] * 2)
    assert cmd.count == 2 and cmd.length == 2 * g.token_beats and cmd.addr == 3


def test_status_and_partial_decoders() -> None:
    g = Geometry(Numerics(head_dim=16, subspaces=8, centroids=4, token_capacity=64), heads=2)
    words = [5 | 0b11 << 32, 0xFF, 0x0F, 0, 0, 0]
    st = isa.decode_status(g, Response(Status.OK, 8, tuple(words)))
    assert st[0].tokens == 5 and st[0].flags == isa.Flag.K_CODEBOOK | isa.Flag.V_CODEBOOK
    assert st[0].v_mask == 0x0F and st[1].tokens == 0
    part = isa.pack_values([-3, 7, *range(-8, 8)], 64)
    assert isa.decode_partial(g, Response(Status.OK, 7, tuple(part))) == (-3, 7, list(range(-8, 8)))
