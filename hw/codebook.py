"""Codebook store of the PQ encoder: P lane memories, one write port, one wide read port.

Centroid ``j`` of subspace ``m`` lives in lane ``j % P`` at address ``m * T + j // P``, with
``T = K / P`` (both powers of two, so the address is a bit concatenation). One read returns
centroids ``c*P .. c*P + P-1`` of one subspace, one per lane: the P distance lanes of the encoder
read all their operands in the same cycle.

The read port has two address sources: the encoder's (``r_*``) and a second one (``x_*``) for
the bank's READ_CB, which wins when ``x_en`` is high. The bank runs one command at a time, so a
READ_CB never meets an encoding in flight; the arbitration is a 2:1 address mux, and the store
stays one read port per lane memory (no extra port, no copy of the codebooks).

Latency: reads are synchronous, data one cycle after the address (held while neither ``r_en``
nor ``x_en`` is high). Writes take effect at the next clock edge. Throughput: one read and one
write per cycle.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from aqpim.checks import check_int

__all__ = ["CodebookStore", "PQGeometry"]


class PQGeometry:
    """The encoder's parameters d, K, M, W, P, checked once, as read-only properties.

    Shared by :class:`CodebookStore` and :class:`aqpim.hw.encoder.PQEncoder`, which take the
    same parameters with their own limits.
    """

    def _set_geometry(
        self, *, sub_dim: int, centroids: int, subspaces: int, elem_bits: int, lanes: int,
        max_sub_dim: int, max_centroids: int, max_subspaces: int, elem_range: tuple[int, int],
    ) -> None:
        self._d = check_int("sub_dim", sub_dim, 1, max_sub_dim)
        self._k = check_int("centroids", centroids, 2, max_centroids)
        if self._k & (self._k - 1):
            raise ValueError(f"centroids must be a power of two, got {centroids}")
        self._m = check_int("subspaces", subspaces, 1, max_subspaces)
        self._w = check_int("elem_bits", elem_bits, *elem_range)
        self._p = check_int("lanes", lanes, 1, self._k)
        if self._k % self._p:
            raise ValueError(f"lanes {lanes} must divide centroids {centroids}")

    @property
    def sub_dim(self) -> int:
        return self._d

    @property
    def centroids(self) -> int:
        return self._k

    @property
    def subspaces(self) -> int:
        return self._m

    @property
    def elem_bits(self) -> int:
        return self._w

    @property
    def lanes(self) -> int:
        return self._p

    @property
    def iterations(self) -> int:
        """T = K / P: codebook reads, and cycles, per sub-vector (the encoder's throughput)."""
        return self._k // self._p

    @property
    def code_bits(self) -> int:
        return self._k.bit_length() - 1

    @property
    def sub_bits(self) -> int:
        return max(1, (self._m - 1).bit_length())

    @property
    def vec_layout(self) -> data.ArrayLayout:
        return data.ArrayLayout(signed(self._w), self._d)

    @property
    def read_signature(self) -> wiring.Signature:
        """The READ_CB read port, seen from the reader: ``en``, ``sub``, ``iter`` out (centroids
        ``iter*P .. iter*P + P-1`` of subspace ``sub``), their P vectors ``vecs`` in one cycle
        later (:class:`CodebookStore` ``x_*`` and ``r_vecs``)."""
        return wiring.Signature({
            "en": Out(1),
            "sub": Out(unsigned(self.sub_bits)),
            "iter": Out(unsigned(max(1, self.iterations.bit_length() - 1))),
            "vecs": In(data.ArrayLayout(self.vec_layout, self._p)),
        })


class CodebookStore(PQGeometry, wiring.Component):
    """M codebooks of K centroids of d W-bit signed elements, split over P lanes.

    Parameters
    ----------
    sub_dim, centroids, subspaces, elem_bits, lanes:
        d, K (power of two), M, W, P (power of two dividing K).

    Ports
    -----
    w_en, w_sub, w_idx, w_vec:
        Write centroid ``w_idx`` of subspace ``w_sub`` (applied at the clock edge).
    r_en, r_sub, r_iter:
        Read centroids ``r_iter*P + p`` (p = 0..P-1) of subspace ``r_sub``.
    x_en, x_sub, x_iter:
        The same read for READ_CB (hw/bank_reader.py); has priority over ``r_*``.
    r_vecs:
        ``ArrayLayout(vec, P)``: the P centroids, one cycle after the read.
    """

    def __init__(
        self, *, sub_dim: int, centroids: int, subspaces: int, elem_bits: int, lanes: int
    ) -> None:
        self._set_geometry(
            sub_dim=sub_dim, centroids=centroids, subspaces=subspaces, elem_bits=elem_bits,
            lanes=lanes, max_sub_dim=64, max_centroids=4096, max_subspaces=4096,
            elem_range=(2, 32),
        )
        vec = data.ArrayLayout(signed(self._w), self._d)
        super().__init__(
            {
                "w_en": In(1),
                "w_sub": In(unsigned(self.sub_bits)),
                "w_idx": In(unsigned(self.code_bits)),
                "w_vec": In(vec),
                "r_en": In(1),
                "r_sub": In(unsigned(self.sub_bits)),
                "r_iter": In(unsigned(max(1, self.iter_bits))),
                "x_en": In(1),
                "x_sub": In(unsigned(self.sub_bits)),
                "x_iter": In(unsigned(max(1, self.iter_bits))),
                "r_vecs": Out(data.ArrayLayout(vec, self._p)),
            }
        )

    # --- derived widths (the parameters are PQGeometry properties) ---------------------------
    @property
    def lane_bits(self) -> int:
        return self._p.bit_length() - 1

    @property
    def iter_bits(self) -> int:
        return self.iterations.bit_length() - 1

    def elaborate(self, platform: object) -> Module:
        m = Module()
        vec = data.ArrayLayout(signed(self._w), self._d)
        depth = self._m * self.iterations
        ib = self.iter_bits

        def address(sub: object, it: object) -> object:
            # m * T + c with T a power of two: a concatenation, no multiplier.
            return Cat(it[:ib], sub) if ib else sub

        # One memory per lane so all P centroids of a read come out in the same cycle.
        for p in range(self._p):
            mem = Memory(shape=vec, depth=depth, init=[])
            m.submodules[f"lane{p}"] = mem
            wr = mem.write_port()
            rd = mem.read_port()
            lane_hit = self.w_idx[: self.lane_bits] == p if self.lane_bits else 1
            m.d.comb += [
                wr.addr.eq(address(self.w_sub, self.w_idx[self.lane_bits :])),
                wr.data.eq(self.w_vec),
                wr.en.eq(self.w_en & lane_hit),
                rd.addr.eq(Mux(self.x_en, address(self.x_sub, self.x_iter),
                               address(self.r_sub, self.r_iter))),
                rd.en.eq(self.r_en | self.x_en),
                self.r_vecs[p].eq(rd.data),
            ]
        return m
