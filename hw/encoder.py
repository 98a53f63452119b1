"""In-bank PQ encoder: sub-vectors in, nearest-centroid codes out.

For each input sub-vector ``x`` of subspace ``m`` the unit outputs
``code = argmin_j ||x - C_m[j]||^2`` over the K centroids of subspace m, with exact integer
squared distances and ties to the lowest index: bit-exact :func:`aqpim.sw.golden.intmodel.encode`.

Block diagram (one sub-vector takes T = K / P passes through P parallel lanes)::

    i_x --> [issue: T reads] --> CodebookStore (P lane memories, 1 cycle)
                                      |  P centroids
            x (held) ---------------> P x SquaredDistance (S stages) --reg--> ArgminTree(P) --reg-->
            running min over the T passes (strict <, so earlier = lower index wins) --> o_code
    i_cb --> CodebookStore write port (accepted only when no sub-vector is in flight)

Latency: ``T + 3 + S + A`` cycles from the input handshake to the earliest output handshake
(``o_code.valid`` rises T + 2 + S + A clock edges after the input handshake edge: the last of
the T reads issues T - 1 cycles after it, then memory read, the distance lanes' S internal
stages, distance register, the argmin tree's A internal stages, argmin register and the
output FIFO's write). Throughput: one sub-vector every ``T = ceil(K / P)`` cycles (one per cycle at
P = K) while the output is not back-pressured. The stages have no enable: back-pressure on
``o_code`` is absorbed by an output FIFO of ``ceil((latency + 1) / T)`` entries written where the
output register was, and a sub-vector is taken only while that FIFO has room for its code and
every code in flight (a credit count); nothing is dropped and nothing stalls inside.

Codebook writes (``i_cb``) have priority: while ``i_cb.valid`` is high no new sub-vector is
accepted, and the write is accepted once the sub-vectors already accepted have reached the
output FIFO. So every sub-vector is encoded against the codebook as it was when it was
accepted.
"""

from __future__ import annotations

from amaranth import Cat, Module, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from aqpim.hw.argmin import ArgminTree
from aqpim.hw.codebook import CodebookStore, PQGeometry
from aqpim.hw.distance import SquaredDistance, dist_bits
from aqpim.hw.skid import CreditSkid

from aqpim.checks import check_int
from aqpim.numerics import distance_latency

__all__ = ["PQEncoder"]


class PQEncoder(PQGeometry, wiring.Component):
    """PQ encoder with P distance lanes.

    Parameters (keyword-only)
    -------------------------
    sub_dim:
        d, elements per sub-vector (1..16).
    centroids:
        K, centroids per codebook: a power of two in [2, 256] (codes of log2 K bits).
    subspaces:
        M, number of subspaces (codebooks), 1..2048 (a bank's 8 head slots x (M_k + M_v)).
    elem_bits:
        W, width of the signed activations and centroids (4..16, as in ``Numerics``).
    lanes:
        P, parallel distance lanes: 1 <= P <= K and P divides K.
    argmin_stage_levels:
        Compare-select levels of the argmin tree per registered stage (0: one combinational
        tree, as before). The default 1 keeps every stage of the tree within the 20 gate
        levels of tCK x 2 (12 levels measured at P = 256, 18-bit distances; 2 per stage gave
        26, docs/silicon.md); it adds ``ceil(log2 P) - 1`` cycles of latency (1 at P = 4,
        7 at P = 256) and keeps the throughput.
    distance_pipelined:
        Distance lanes registered inside (absolute differences, then the squares' carry-save
        tree; :class:`aqpim.hw.distance.SquaredDistance`), so no stage holds a multiplier's
        carry chain: adds :attr:`distance_latency` cycles (2 at d <= 2, W = 8; 3 at d = 4, 8).

    Ports
    -----
    i_cb: In(stream of ``cb_layout``)
        Codebook load: ``{sub, idx, vec}`` writes centroid ``idx`` of subspace ``sub``.
    i_x: In(stream of ``x_layout``)
        ``{sub, x}``: a sub-vector and its subspace index (any order of subspaces).
    o_code: Out(stream of ``code_layout``)
        ``{sub, code}``: one per input, in input order.
    cb_read: In(:attr:`read_signature`)
        The codebook store's read port for the bank's READ_CB (address in, the P centroids
        one cycle later); it takes the store's read address from the pipeline while ``en`` is
        high, so use it only while no sub-vector is in flight (the bank runs one command at a
        time).

    A ``sub`` value >= M is outside the contract (it aliases another subspace's storage).
    """

    def __init__(
        self,
        *,
        sub_dim: int = 2,
        centroids: int = 16,
        subspaces: int = 64,
        elem_bits: int = 8,
        lanes: int = 4,
        argmin_stage_levels: int = 1,
        distance_pipelined: bool = True,
    ) -> None:
        self._set_geometry(
            sub_dim=sub_dim, centroids=centroids, subspaces=subspaces, elem_bits=elem_bits,
            lanes=lanes, max_sub_dim=16, max_centroids=256, max_subspaces=2048,
            elem_range=(4, 16),
        )
        self._argmin_levels = check_int("argmin_stage_levels", argmin_stage_levels, 0, 12)
        if not isinstance(distance_pipelined, bool):
            raise TypeError(f"distance_pipelined must be a bool, got {distance_pipelined!r}")
        self._dist_pipelined = distance_pipelined
        super().__init__(
            {
                "i_cb": In(stream.Signature(self.cb_layout)),
                "i_x": In(stream.Signature(self.x_layout)),
                "o_code": Out(stream.Signature(self.code_layout)),
                "cb_read": In(self.read_signature),
            }
        )

    # --- derived widths and layouts (the parameters are PQGeometry properties) -------------
    @property
    def argmin_stage_levels(self) -> int:
        return self._argmin_levels

    @property
    def argmin_latency(self) -> int:
        """Registered stages inside the argmin tree: ``(ceil(log2 P) - 1) // s`` (0 if s = 0)."""
        depth = (self._p - 1).bit_length()
        if not self._argmin_levels or depth == 0:
            return 0
        return (depth - 1) // self._argmin_levels

    @property
    def distance_latency(self) -> int:
        """Registered stages inside each distance lane (0 when combinational)."""
        return distance_latency(self._d, self._w) if self._dist_pipelined else 0

    @property
    def latency(self) -> int:
        """Cycles from the input handshake to the earliest output handshake: T + 3 + S + A.

        S is :attr:`distance_latency`, A :attr:`argmin_latency`: the distance lanes' and the
        argmin tree's internal registers.
        """
        return self.iterations + 3 + self.distance_latency + self.argmin_latency

    @property
    def skid_depth(self) -> int:
        """Entries of the output FIFO, ``ceil((latency + 1) / T)``: the codes that a window of
        latency + 1 cycles can start (a sub-vector is taken every T cycles), so without
        back-pressure a sub-vector never waits for credit."""
        return -(-(self.latency + 1) // self.iterations)

    @property
    def dist_bits(self) -> int:
        """Exact squared-distance width, = ``Numerics(...).dist_bits``."""
        return dist_bits(self._d, self._w)

    @property
    def cb_layout(self) -> data.StructLayout:
        return data.StructLayout(
            {"sub": unsigned(self.sub_bits), "idx": unsigned(self.code_bits),
             "vec": self.vec_layout}
        )

    @property
    def x_layout(self) -> data.StructLayout:
        return data.StructLayout({"sub": unsigned(self.sub_bits), "x": self.vec_layout})

    @property
    def code_layout(self) -> data.StructLayout:
        return data.StructLayout({"sub": unsigned(self.sub_bits), "code": unsigned(self.code_bits)})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        d, p, t = self._d, self._p, self.iterations
        lane_bits = p.bit_length() - 1
        iter_bits = t.bit_length() - 1
        vec = self.vec_layout

        m.submodules.store = store = CodebookStore(
            sub_dim=d, centroids=self._k, subspaces=self._m, elem_bits=self._w, lanes=p
        )
        m.submodules.argmin = argmin = ArgminTree(
            count=p, value_bits=self.dist_bits, stage_levels=self._argmin_levels
        )
        assert argmin.latency == self.argmin_latency
        lanes = [SquaredDistance(sub_dim=d, elem_bits=self._w, pipelined=self._dist_pipelined)
                 for _ in range(p)]
        for i, lane in enumerate(lanes):
            m.submodules[f"dist{i}"] = lane

        # No stall enable (it reached every stage, the lanes and the memory read port): the
        # stages advance every cycle and the last writes an output FIFO where the output
        # register was (latency unchanged). A sub-vector is taken only while the FIFO has room
        # for its code and every code in flight (credit count: taken, not yet delivered), so
        # i_x.ready is a register compare, not a path from o_code.ready.
        depth = self.skid_depth
        skid = CreditSkid(m, self.o_code, depth)

        # Stage 0, issue: the handshake cycle issues pass 0 from the input; passes 1..T-1 come
        # from the held copy on the following cycles, hence one sub-vector per T cycles.
        busy = Signal()
        cnt = Signal(max(1, iter_bits))
        h_x = Signal(vec)
        h_sub = Signal(self.sub_bits)
        s1_valid, s2_valid, s3_valid = Signal(), Signal(), Signal()
        # valid bits of the argmin tree's internal stages (A of them)
        a_valid = [Signal(name=f"a{k}_valid") for k in range(self.argmin_latency)]
        # valid bits of the distance lanes' internal stages (S of them)
        d_valid = [Signal(name=f"d{k}_valid") for k in range(self.distance_latency)]
        in_flight = busy | s1_valid | s2_valid | s3_valid
        for v in a_valid + d_valid:
            in_flight = in_flight | v
        m.d.comb += self.i_x.ready.eq(skid.room & ~busy & ~self.i_cb.valid)
        accept = self.i_x.valid & self.i_x.ready
        skid.take(accept)
        issue = Signal()
        issue_x = Signal(vec)
        issue_sub = Signal(self.sub_bits)
        issue_cnt = Signal(max(1, iter_bits))
        with m.If(busy):
            m.d.comb += [issue.eq(1), issue_x.eq(h_x), issue_sub.eq(h_sub), issue_cnt.eq(cnt)]
        with m.Else():
            m.d.comb += [
                issue.eq(accept), issue_x.eq(self.i_x.payload.x),
                issue_sub.eq(self.i_x.payload.sub), issue_cnt.eq(0),
            ]
        if t > 1:
            with m.If(accept):
                m.d.sync += [busy.eq(1), cnt.eq(1), h_x.eq(self.i_x.payload.x),
                             h_sub.eq(self.i_x.payload.sub)]
            with m.Elif(busy):
                m.d.sync += cnt.eq(cnt + 1)
                with m.If(cnt == t - 1):
                    m.d.sync += busy.eq(0)
        m.d.comb += [store.r_en.eq(1), store.r_sub.eq(issue_sub), store.r_iter.eq(issue_cnt)]
        # READ_CB's read port: the store's second address source (hw/codebook.py).
        rd = self.cb_read
        m.d.comb += [store.x_en.eq(rd.en), store.x_sub.eq(rd.sub), store.x_iter.eq(rd.iter),
                     rd.vecs.eq(store.r_vecs)]

        # Codebook writes only into an empty pipeline, so no pass reads a half-written codebook.
        m.d.comb += [
            self.i_cb.ready.eq(~in_flight),
            store.w_en.eq(self.i_cb.valid & ~in_flight),
            store.w_sub.eq(self.i_cb.payload.sub),
            store.w_idx.eq(self.i_cb.payload.idx),
            store.w_vec.eq(self.i_cb.payload.vec),
        ]

        # Stage 1: the memory returns the pass's P centroids; x, index and flags ride along.
        s1_x = Signal(vec)
        s1_sub = Signal(self.sub_bits)
        s1_cnt = Signal(max(1, iter_bits))
        m.d.sync += [s1_valid.eq(issue), s1_x.eq(issue_x), s1_sub.eq(issue_sub),
                     s1_cnt.eq(issue_cnt)]

        # Stage 2: P exact squared distances, registered.
        s2_dist = Signal(data.ArrayLayout(unsigned(self.dist_bits), p))
        s2_sub = Signal(self.sub_bits)
        s2_cnt = Signal(max(1, iter_bits))
        for i, lane in enumerate(lanes):
            m.d.comb += [lane.a.eq(s1_x), lane.b.eq(store.r_vecs[i]), lane.en.eq(1)]
        # the pass's subspace and counter ride along the lanes' S internal stages
        t_valid, t_sub, t_cnt = self._ride_along(m, d_valid, "d", s1_valid, s1_sub, s1_cnt)
        m.d.sync += [s2_valid.eq(t_valid), s2_sub.eq(t_sub), s2_cnt.eq(t_cnt)]
        m.d.sync += [s2_dist[i].eq(lane.dist) for i, lane in enumerate(lanes)]

        # Stage 3: argmin over the lanes (A more registered stages inside the tree, so each
        # holds s compare-select levels), registered with the centroid index j = c * P + lane.
        # The pass's subspace and counter ride along the tree's stages.
        m.d.comb += [argmin.values.eq(s2_dist), argmin.en.eq(1)]
        t_valid, t_sub, t_cnt = self._ride_along(m, a_valid, "a", s2_valid, s2_sub, s2_cnt)
        s3_min = Signal(self.dist_bits)
        s3_idx = Signal(self.code_bits)
        s3_sub = Signal(self.sub_bits)
        s3_first, s3_last = Signal(), Signal()
        idx_parts = ([argmin.index[:lane_bits]] if lane_bits else []) + (
            [t_cnt[:iter_bits]] if iter_bits else []
        )
        m.d.sync += [
            s3_valid.eq(t_valid), s3_min.eq(argmin.min), s3_idx.eq(Cat(*idx_parts)),
            s3_sub.eq(t_sub), s3_first.eq(t_cnt == 0), s3_last.eq(t_cnt == t - 1),
        ]

        # Output: running minimum over the T passes (ties to the lowest index), into the FIFO.
        self._running_min(m, skid, s3_valid, s3_min, s3_idx, s3_sub, s3_first, s3_last)
        return m

    def _running_min(self, m: Module, skid: CreditSkid, s3_valid: Signal, s3_min: Signal,
                     s3_idx: Signal, s3_sub: Signal, s3_first: Signal, s3_last: Signal) -> None:
        """The running minimum over a sub-vector's T passes; the last pass writes the code to
        the output FIFO. Strict < keeps the earlier pass, whose indices are all lower, so ties
        still go to the lowest index."""
        acc_min = Signal(self.dist_bits)
        acc_idx = Signal(self.code_bits)
        take = Signal()
        best_min = Signal(self.dist_bits)
        best_idx = Signal(self.code_bits)
        m.d.comb += take.eq(s3_first | (s3_min < acc_min))
        with m.If(take):
            m.d.comb += [best_min.eq(s3_min), best_idx.eq(s3_idx)]
        with m.Else():
            m.d.comb += [best_min.eq(acc_min), best_idx.eq(acc_idx)]
        with m.If(s3_valid):
            m.d.sync += [acc_min.eq(best_min), acc_idx.eq(best_idx)]
        code = Signal(self.code_layout)
        m.d.comb += [
            code.sub.eq(s3_sub),
            code.code.eq(best_idx),
        ]
        skid.write(code.as_value(), s3_valid & s3_last)

    def _ride_along(self, m: Module, valids: list[Signal], prefix: str,
                    valid: Value, sub: Value, cnt: Value) -> tuple[Value, Value, Value]:
        """A pass's valid bit, subspace and counter through ``len(valids)`` registers (the
        internal stages of a distance lane or of the argmin tree); returns the last stage's."""
        for k, v in enumerate(valids):
            n_sub = Signal.like(sub, name=f"{prefix}{k}_sub")
            n_cnt = Signal.like(cnt, name=f"{prefix}{k}_cnt")
            m.d.sync += [v.eq(valid), n_sub.eq(sub), n_cnt.eq(cnt)]
            valid, sub, cnt = v, n_sub, n_cnt
        return valid, sub, cnt
