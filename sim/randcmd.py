"""Constrained-random bank command streams, valid and invalid commands mixed.

Used by the golden-device tests, the RTL-vs-golden co-simulation (sim/test_bank_tb.py) and
``aqpim compare``. :class:`RandomStream` keeps a shadow of each head's token count (updated from
the responses it is shown), so most WRITE_KV and READ_CODES commands address real slots; with
probability ``p_bad`` a field, the length or the opcode is corrupted on purpose.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aqpim import isa
from aqpim.geometry import Geometry
from aqpim.isa import Command, Opcode, Response

if TYPE_CHECKING:
    from aqpim.sw.host.golden_device import GoldenBank

__all__ = ["ArrayStream", "RandomStream", "build_array_stream", "build_stream",
           "observe_commands"]

# relative weights of the opcodes (codebook loads dominate so that WRITE_KV can succeed)
_WEIGHTS = {
    Opcode.NOP: 1, Opcode.RESET: 0.15, Opcode.LOAD_CB: 8, Opcode.WRITE_KV: 5,
    Opcode.LOAD_LUT: 2, Opcode.SCORE: 3, Opcode.AGGREGATE: 3, Opcode.READ_PARTIAL: 2,
    Opcode.READ_STATUS: 1, Opcode.READ_CODES: 2, Opcode.READ_CB: 1, Opcode.READ_LUT: 1,
}


class RandomStream:
    """Seeded generator of commands for one bank of ``geometry``.

    Parameters
    ----------
    geometry:
        The bank's sizes.
    seed:
        Seed of the generator's own ``random.Random``.
    p_bad:
        Probability that a command is corrupted (bad opcode, field, length or count).
    max_tokens:
        Most tokens one WRITE_KV carries.
    focus:
        Probability that a command addresses the previous command's head slot (0: every head
        drawn afresh). With many slots a stream spread evenly rarely loads one slot's every
        codebook and finishes a pass; focus keeps it on a slot for a while.
    """

    def __init__(self, geometry: Geometry, seed: int, *, p_bad: float = 0.15,
                 max_tokens: int = 3, focus: float = 0.0) -> None:
        if not 0.0 <= p_bad <= 1.0:
            raise ValueError(f"p_bad must be in [0, 1], got {p_bad}")
        if not 0.0 <= focus < 1.0:
            raise ValueError(f"focus must be in [0, 1), got {focus}")
        self.focus = focus
        self.head = 0
        self.g = geometry
        self.rng = random.Random(seed)
        self.p_bad = p_bad
        self.max_tokens = max_tokens
        self.tokens = [0] * geometry.heads
        # shadow of the loaded codebook subspaces, so loads favour the missing ones and the
        # stream reaches the deep states (scores, partials) in a few dozen commands
        self.loaded = [[set(), set()] for _ in range(geometry.heads)]
        self.luts = (-1, 0)  # (head, query-head LUTs loaded) as the bank holds them

    def feedback(self, cmd: Command, resp: Response) -> None:
        """Track token counts from what the bank accepted."""
        if not resp.ok:
            return
        if cmd.opcode == Opcode.RESET:
            self.tokens = [0] * self.g.heads
            self.luts = (-1, 0)
            self.loaded = [[set(), set()] for _ in range(self.g.heads)]
        elif cmd.opcode == Opcode.LOAD_CB:
            self.loaded[cmd.head][cmd.kv].add(cmd.subspace)
        elif cmd.opcode == Opcode.WRITE_KV:
            self.tokens[cmd.head] += cmd.count
        elif cmd.opcode == Opcode.LOAD_LUT:
            self.luts = (cmd.head, cmd.subspace + 1)

    def next(self) -> Command:
        """One command (valid unless corrupted with probability ``p_bad``)."""
        r, g, n = self.rng, self.g, self.g.num
        # (no draw for focus = 0, so the streams of earlier seeds stay as they were)
        stay = self.focus > 0 and r.random() < self.focus
        head = self.head if stay else r.randrange(g.heads)
        self.head = head
        weights = dict(_WEIGHTS)
        if any(len(s) < n.side(kv).subspaces for kv, s in enumerate(self.loaded[head])):
            weights[Opcode.LOAD_CB] = 30  # reach WRITE_KV / AGGREGATE early in a stream
        op = r.choices(list(weights), weights=list(weights.values()))[0]

        def elems(count: int, lo: int, hi: int) -> list[int]:
            # mostly small values, sometimes the format's extremes
            return [r.choice((lo, hi)) if r.random() < 0.1 else r.randint(lo // 4, hi // 4)
                    for _ in range(count)]

        if op == Opcode.LOAD_CB:
            kv = r.randrange(2)
            ns = n.side(kv)
            missing = sorted(set(range(ns.subspaces)) - self.loaded[head][kv])
            sub = r.choice(missing) if missing and r.random() < 0.9 else r.randrange(ns.subspaces)
            cmd = isa.load_cb(g, head=head, kv=kv, subspace=sub,
                              centroids=elems(ns.centroids * ns.sub_dim, n.elem_min, n.elem_max))
        elif op == Opcode.WRITE_KV:
            cnt = r.randint(1, self.max_tokens)
            vecs = [elems(n.head_dim, n.elem_min, n.elem_max) for _ in range(2 * cnt)]
            cmd = isa.write_kv(g, head=head, token=self.tokens[head], keys=vecs[:cnt],
                               values=vecs[cnt:])
        elif op == Opcode.LOAD_LUT:
            # GQA: mostly the next query head of this head's set (or a new set), sometimes any
            nxt = self.luts[1] if self.luts[0] == head and self.luts[1] < g.queries else 0
            query = nxt if r.random() < 0.8 else r.randrange(g.queries)
            cmd = isa.load_lut(g, head=head, query=query,
                               lut=elems(n.subspaces * n.centroids, n.lut_min, n.lut_max))
        elif op in (Opcode.READ_LUT, Opcode.READ_PARTIAL):
            cmd = Command(op, head=head, subspace=r.randrange(g.queries))
        elif op == Opcode.READ_CODES:
            kv = r.randrange(2)
            used = g.used_columns(self.tokens[head], kv)
            col = r.randrange(max(used, 1))
            cmd = isa.read_codes(head=head, kv=kv, column=col,
                                 count=r.randint(1, max(used - col, 1)))
        elif op == Opcode.READ_CB:
            kv = r.randrange(2)
            cmd = isa.read_cb(head=head, kv=kv, subspace=r.randrange(n.side(kv).subspaces))
        elif op in (Opcode.NOP, Opcode.RESET, Opcode.READ_STATUS):
            cmd = Command(op)
        else:
            cmd = Command(op, head=head)
        if r.random() < self.p_bad:
            cmd = self._corrupt(cmd)
        return cmd

    def _corrupt(self, cmd: Command) -> Command:
        r = self.rng
        f = {k: getattr(cmd, k) for k in ("opcode", "head", "kv", "subspace", "addr", "count")}
        data = list(cmd.data)
        how = r.randrange(6)
        if how == 0:
            f["opcode"] = r.randint(max(Opcode) + 1, 15)
        elif how == 1:
            f["head"] = r.randrange(self.g.heads, 8) if self.g.heads < 8 else f["head"]
        elif how == 2:
            f["subspace"] = r.randrange(self.g.num.side(f["kv"]).subspaces, 256)
        elif how == 3:  # one beat too many or too few
            data = data[:-1] if data and r.random() < 0.5 else data + [r.getrandbits(256)]
        elif how == 4:
            f["addr"] = r.randrange(1 << 24) if r.random() < 0.5 else f["addr"] + r.randint(1, 3)
        else:
            f["count"] = r.randrange(4096) if r.random() < 0.3 else f["count"] + r.randint(1, 9)
        return Command(data=tuple(data), **f)


def build_stream(
    geometry: Geometry, seed: int, commands: int, *, observe_rejected: bool = True,
    p_bad: float = 0.15, max_tokens: int = 3,
) -> tuple[list[Command], list[Response], int]:
    """A random command stream and the golden bank's responses to it.

    After every rejected command (with ``observe_rejected``) the read commands of
    :func:`aqpim.sw.host.device.observe` are appended, so a device whose state a rejected command
    changed answers one of them differently. Returns (commands, expected responses, number
    of random commands that were rejected).
    """
    from aqpim.sw.host.device import observe
    from aqpim.sw.host.golden_device import GoldenDevice

    stream = RandomStream(geometry, seed, p_bad=p_bad, max_tokens=max_tokens)
    dev = GoldenDevice(geometry, 1)
    bank: GoldenBank = dev.banks[0]
    cmds: list[Command] = []
    resps: list[Response] = []
    rejected = 0

    class _Recorder:  # records the reads observe() issues, answered by the golden bank
        geometry = dev.geometry
        num_banks = 1

        def execute(self, b: int | None, cmd: Command) -> list[Response]:
            r = bank.execute(cmd)
            cmds.append(cmd)
            resps.append(r)
            return [r]

    for _ in range(commands):
        cmd = stream.next()
        r = bank.execute(cmd)
        stream.feedback(cmd, r)
        cmds.append(cmd)
        resps.append(r)
        if not r.ok:
            rejected += 1
            if observe_rejected:
                observe(_Recorder(), 0)  # type: ignore[arg-type]
    return cmds, resps, rejected


def observe_commands(bank: GoldenBank) -> list[Command]:
    """The read commands that show a bank's whole observable state, chosen from the golden
    bank's state: READ_STATUS; per head slot READ_CODES of every used column of both sides and
    READ_CB of every loaded subspace; READ_LUT and READ_PARTIAL of every query head (G of
    them, whether loaded or not: the status of an unloaded one is part of the state) for the
    slot holding the LUT and the partials. Like :func:`aqpim.sw.host.device.observe`, but
    every query head's LUT and partial, and as commands to batch."""
    g = bank.geometry
    limit = (1 << isa.HEADER_FIELDS["count"][1]) - 1
    out = [isa.read_status()]
    for h, hd in enumerate(bank.heads):
        for kv in (0, 1):
            used = g.used_columns(hd.tokens, kv)
            out += [isa.read_codes(head=h, kv=kv, column=c, count=min(limit, used - c))
                    for c in range(0, used, limit)]
            out += [isa.read_cb(head=h, kv=kv, subspace=int(m))
                    for m in range(g.side(kv).subspaces) if hd.mask[kv][m]]
    for head, read in ((bank.lut_head, isa.read_lut), (bank.partial_head, isa.read_partial)):
        if head is not None:
            out += [read(head=head, query=q) for q in range(g.queries)]
    return out


@dataclass
class ArrayStream:
    """A random command stream for a bank array and the golden device's answers.

    Attributes
    ----------
    items:
        ``(bank, command)`` in order; ``bank`` None is an all-bank broadcast.
    expected:
        The golden device's responses to each item, one per bank addressed.
    random_commands:
        Random commands among ``items`` (the rest are the reads observing the state after a
        rejected command).
    statuses:
        Random commands by (opcode name, status name) (a broadcast counted once per bank).
    """

    items: list[tuple[int | None, Command]]
    expected: list[list[Response]]
    random_commands: int
    statuses: Counter

    @property
    def rejected(self) -> int:
        return sum(c for (_op, st), c in self.statuses.items() if st != "OK")

    def summary(self) -> str:
        """Counts of accepted and rejected random commands by status, one line."""
        by_status = Counter()
        for (_op, st), c in self.statuses.items():
            by_status[st] += c
        return (f"{self.random_commands} random commands ({len(self.items)} with the observing "
                f"reads): " + ", ".join(f"{k} {v}" for k, v in by_status.most_common()))


def build_array_stream(
    geometry: Geometry, banks: int, seed: int, commands: int, *, p_bad: float = 0.15,
    max_tokens: int = 3, p_broadcast: float = 0.02, observe_rejected: bool = True,
    focus: float = 0.0,
) -> ArrayStream:
    """``commands`` random commands spread over ``banks`` banks (one :class:`RandomStream`
    per bank, seeded from ``seed``), a few broadcast (NOP, READ_STATUS, rarely RESET); after
    each rejected command, the reads of :func:`observe_commands` on that bank, so a device
    whose state a rejected command changed answers one of them differently. Seeded and
    reproducible; the golden device answers every item. ``focus``: :class:`RandomStream`'s."""
    from aqpim.sw.host.golden_device import GoldenDevice

    if isinstance(banks, bool) or not isinstance(banks, int) or banks < 1:
        raise ValueError(f"banks must be an int >= 1, got {banks!r}")
    rng = random.Random(seed)
    streams = [RandomStream(geometry, seed * 1009 + b, p_bad=p_bad, max_tokens=max_tokens,
                            focus=focus) for b in range(banks)]
    dev = GoldenDevice(geometry, banks)
    items: list[tuple[int | None, Command]] = []
    expected: list[list[Response]] = []
    statuses: Counter = Counter()

    def run(bank: int | None, cmd: Command) -> list[Response]:
        resps = dev.execute(bank, cmd)
        items.append((bank, cmd))
        expected.append(resps)
        return resps

    for _ in range(commands):
        if rng.random() < p_broadcast:
            op = rng.choices((Opcode.NOP, Opcode.READ_STATUS, Opcode.RESET), (5, 5, 1))[0]
            cmd = Command(op)
            resps = run(None, cmd)
            for st, r in zip(streams, resps, strict=True):
                st.feedback(cmd, r)
        else:
            b = rng.randrange(banks)
            cmd = streams[b].next()
            resps = run(b, cmd)
            streams[b].feedback(cmd, resps[0])
            if not resps[0].ok and observe_rejected:
                for read in observe_commands(dev.banks[b]):
                    run(b, read)
        name = cmd.opcode.name if isinstance(cmd.opcode, Opcode) else "BAD_OPCODE"
        for r in resps:
            statuses[(name, r.status.name)] += 1
    return ArrayStream(items, expected, commands, statuses)
