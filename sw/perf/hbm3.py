"""Command-level timing model of HBM3-PIM: one channel's command stream, cycle by cycle.

The unit of simulation is one HBM3 channel (2 pseudo-channels x 2 stack IDs x 4 bank groups x
4 banks = 64 banks with the AttAcc organisation). Commands are issued in order, each at the
earliest cycle that satisfies every timing rule against the commands before it
(:class:`ChannelTimer`). Two modes, as in the AttAcc simulator:

* **per-bank** (``ACT``, ``PRE``, ``RD``, ``MACPB``): one bank per command; ``nRRD_S/L`` and
  ``nFAW`` between activates of a stack ID, ``nCCD_S/L`` between column commands of a stack ID
  (different / same bank group), ``nBL`` between PIM column commands of the channel;
* **all-bank** (``ACTAB``, ``MACAB``, ``PREA``): one command opens, reads or closes the same
  row/column in all 64 banks; ``MACAB`` every ``nCCD_AB`` (6 with the power limit, 4 without)
  or slower when the units behind the banks need more cycles per column.

Refresh is all-bank (``REFAB``): due every ``nREFI``, issued by the controller at the next row
boundary, it needs every bank precharged and blocks activates for ``nRFC``.

A decode step (:func:`simulate_decode`) maps a :class:`PimWorkload` (jobs = one KV head of one
sequence in one layer, each with one pass per query head) onto all channels of all stacks,
simulates the most loaded channel of one layer and multiplies by the number of layers (every
layer has the same shape, and layers run one after the other because layer l + 1's query
needs layer l's output). Host-side traffic on each channel's data bus (LUT or query writes,
partial read-out, FP16 score round trips) overlaps the bank streaming, as AttAcc's data moves
do; only the first write and the last read are exposed.
"""

from __future__ import annotations

import enum
import json
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aqpim.numerics import distance_latency

__all__ = [
    "Cmd",
    "HBM3Config",
    "ChannelTimer",
    "TimingError",
    "StreamStats",
    "Segment",
    "stream_all_bank",
    "stream_per_bank",
    "closed_form_cycles",
    "PimWorkload",
    "ChannelPlan",
    "DecodeReport",
    "plan_channel",
    "simulate_decode",
    "load_json",
    "CONFIG_DIR",
    "CommandTiming",
    "command_unit_cycles",
    "score_drain_cycles",
    "trace_timing",
]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
NEVER = -(10**12)  # "long ago": a timestamp that satisfies every rule

_ORG_KEYS = (
    "channels", "pseudo_channels", "stack_ids", "bank_groups", "banks_per_group", "rows",
    "columns", "column_bytes",
)
_TIMING_KEYS = (
    "nBL", "nCL", "nRCD", "nRP", "nRAS", "nRC", "nRTPL", "nCCD_S", "nCCD_L", "nCCD_AB",
    "nCCD_AB_NPC", "nRRD_S", "nRRD_L", "nFAW", "nRFC", "nREFI",
)


def load_json(path: str | Path, what: str) -> dict[str, Any]:
    """Read a JSON object from ``path``; errors name the file and what it should hold."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{what} config {str(p)!r} does not exist")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} config {str(p)!r} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} config {str(p)!r} must hold a JSON object, got {type(data)}")
    return data


def _pos_int(where: str, key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where}: {key} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{where}: {key} must be >= 1, got {value}")
    return value


def _pos_num(where: str, key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{where}: {key} must be a number, got {value!r}")
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{where}: {key} must be > 0, got {value}")
    return float(value)


# ----------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HBM3Config:
    """HBM3-PIM organisation and timing (cycles of tCK), as in ``sw/configs/hbm3.json``.

    ``units`` holds the per-design unit costs (``aqpim`` and ``fp16``) the workload builders in
    :mod:`aqpim.sw.perf.systems` read; the timer itself does not interpret them.
    """

    name: str
    stacks: int
    org: dict[str, int]
    timing: dict[str, int]
    tck_ns: float
    external_gbs_per_stack: float
    power_limit: bool = True
    refresh: bool = True
    units: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False)
    source: str = ""
    # GPU-PIM link of one PIM device (AttAcc: NVLink 600 GB/s, half per direction); a system
    # with one device per GPU scales it by the device count.
    link_gbs: float = 600.0
    link_direction_share: float = 0.5
    n_wr: int = 21  # write recovery (tCK) after the new token's column writes
    energy: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "hbm3 config") -> HBM3Config:
        """Build and check a config; every error names the bad key and value."""
        if not isinstance(d, dict):
            raise TypeError(f"{where} must be a dict, got {type(d).__name__}")
        for key in ("organization", "timing", "tck_ns", "external_gbs_per_stack"):
            if key not in d:
                raise ValueError(f"{where}: missing key {key!r}")
        org_in, tim_in = d["organization"], d["timing"]
        if not isinstance(org_in, dict) or not isinstance(tim_in, dict):
            raise TypeError(f"{where}: organization and timing must be JSON objects")
        org = {}
        for k in _ORG_KEYS:
            if k not in org_in:
                raise ValueError(f"{where}: organization is missing {k!r}")
            org[k] = _pos_int(where, f"organization.{k}", org_in[k])
        unknown = set(org_in) - set(_ORG_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown organization keys {sorted(unknown)}")
        tim = {}
        for k in _TIMING_KEYS:
            if k not in tim_in:
                raise ValueError(f"{where}: timing is missing {k!r}")
            tim[k] = _pos_int(where, f"timing.{k}", tim_in[k])
        unknown = set(tim_in) - set(_TIMING_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown timing keys {sorted(unknown)}")
        if tim["nCCD_L"] < tim["nCCD_S"]:
            raise ValueError(f"{where}: nCCD_L {tim['nCCD_L']} < nCCD_S {tim['nCCD_S']}")
        if tim["nRRD_L"] < tim["nRRD_S"]:
            raise ValueError(f"{where}: nRRD_L {tim['nRRD_L']} < nRRD_S {tim['nRRD_S']}")
        if tim["nRC"] < tim["nRAS"]:
            raise ValueError(f"{where}: nRC {tim['nRC']} < nRAS {tim['nRAS']}")
        if tim["nREFI"] <= tim["nRFC"]:
            raise ValueError(f"{where}: nREFI {tim['nREFI']} must exceed nRFC {tim['nRFC']}")
        stacks = _pos_int(where, "stacks", d.get("stacks", 1))
        for flag in ("power_limit", "refresh"):
            if flag in d and not isinstance(d[flag], bool):
                raise TypeError(f"{where}: {flag} must be true or false, got {d[flag]!r}")
        units = d.get("units", {})
        if not isinstance(units, dict):
            raise TypeError(f"{where}: units must be a JSON object")
        link = d.get("link", {})
        if not isinstance(link, dict):
            raise TypeError(f"{where}: link must be a JSON object")
        link_gbs = _pos_num(where, "link.gbs", link.get("gbs", 600.0))
        share = _pos_num(where, "link.direction_share", link.get("direction_share", 0.5))
        if share > 1:
            raise ValueError(f"{where}: link.direction_share must be in (0, 1], got {share}")
        energy = d.get("energy", {})
        if not isinstance(energy, dict):
            raise TypeError(f"{where}: energy must be a JSON object")
        return cls(
            name=str(d.get("name", "HBM3-PIM")),
            stacks=stacks,
            org=org,
            timing=tim,
            tck_ns=_pos_num(where, "tck_ns", d["tck_ns"]),
            external_gbs_per_stack=_pos_num(
                where, "external_gbs_per_stack", d["external_gbs_per_stack"]
            ),
            power_limit=bool(d.get("power_limit", True)),
            refresh=bool(d.get("refresh", True)),
            units=units,
            source=str(d.get("source", "")),
            link_gbs=link_gbs,
            link_direction_share=share,
            n_wr=_pos_int(where, "write.nWR", d.get("write", {}).get("nWR", 21)),
            energy=energy,
        )

    @classmethod
    def load(cls, path: str | Path | None = None) -> HBM3Config:
        """Load ``path`` (default: the packaged ``hbm3.json``)."""
        p = CONFIG_DIR / "hbm3.json" if path is None else Path(path)
        return cls.from_dict(load_json(p, "hardware"), where=f"hardware config {str(p)!r}")

    def replace(self, **changes: Any) -> HBM3Config:
        """A copy with some fields changed (``stacks=8``, ``refresh=False``, ...)."""
        d = {f: getattr(self, f) for f in self.__dataclass_fields__}
        d.update(changes)
        if "stacks" in changes:
            _pos_int("HBM3Config", "stacks", changes["stacks"])
        return HBM3Config(**d)

    # --- derived sizes ------------------------------------------------------------------------
    @property
    def banks_per_rank(self) -> int:
        return self.org["bank_groups"] * self.org["banks_per_group"]

    @property
    def ranks_per_channel(self) -> int:
        """Stack IDs x pseudo-channels: the scopes of nRRD, nFAW and nCCD_S/L."""
        return self.org["pseudo_channels"] * self.org["stack_ids"]

    @property
    def banks_per_channel(self) -> int:
        return self.ranks_per_channel * self.banks_per_rank

    @property
    def channels(self) -> int:
        """Channels of all stacks."""
        return self.stacks * self.org["channels"]

    @property
    def banks(self) -> int:
        return self.channels * self.banks_per_channel

    @property
    def row_bytes(self) -> int:
        return self.org["columns"] * self.org["column_bytes"]

    @property
    def bank_bytes(self) -> int:
        return self.org["rows"] * self.row_bytes

    @property
    def capacity_bytes(self) -> int:
        return self.banks * self.bank_bytes

    @property
    def n_ccd_ab(self) -> int:
        """All-bank column spacing: with the power limit or without."""
        return self.timing["nCCD_AB"] if self.power_limit else self.timing["nCCD_AB_NPC"]

    @property
    def internal_gbs(self) -> float:
        """Peak internal bandwidth of all stacks with every bank streaming in all-bank mode."""
        per_cycle = self.banks * self.org["column_bytes"] / self.n_ccd_ab
        return per_cycle / self.tck_ns

    @property
    def external_gbs(self) -> float:
        return self.stacks * self.external_gbs_per_stack

    @property
    def link_bytes_per_cycle(self) -> float:
        """GPU-PIM link, one direction, bytes per tCK."""
        return self.link_gbs * self.link_direction_share * self.tck_ns

    @property
    def bus_bytes_per_cycle(self) -> float:
        """One channel's data bus (both pseudo-channels), bytes per tCK."""
        return self.external_gbs_per_stack / self.org["channels"] * self.tck_ns

    def unit(self, design: str, key: str) -> Any:
        """A unit cost from ``units.<design>.<key>``, with an error naming what is missing."""
        try:
            return self.units[design][key]
        except KeyError:
            raise ValueError(f"hardware config: units.{design}.{key} is missing") from None


# ----------------------------------------------------------------------------------------------
# the command timer
# ----------------------------------------------------------------------------------------------
class Cmd(enum.Enum):
    """Commands the timer knows. Row commands occupy the row bus two cycles (HBM3 ACT)."""

    ACT = "ACT"
    PRE = "PRE"
    RD = "RD"
    MACPB = "MACPB"
    ACTAB = "ACTAB"
    MACAB = "MACAB"
    PREA = "PREA"
    REFAB = "REFAB"


_ROW_CMDS = {Cmd.ACT, Cmd.PRE, Cmd.ACTAB, Cmd.PREA, Cmd.REFAB}


class TimingError(ValueError):
    """A command that is illegal in the bank state (column to a closed bank, ...)."""


class ChannelTimer:
    """In-order issue of commands to one channel, each at its earliest legal cycle.

    Banks are addressed by ``(rank, bg, bank)`` with ``rank`` in ``[0, pseudo_channels *
    stack_ids)``. :meth:`issue` returns the issue cycle; ``log`` (when enabled) keeps every
    ``(cycle, cmd, rank, bg, bank, row)`` for tests and traces.
    """

    def __init__(self, cfg: HBM3Config, *, log: bool = False) -> None:
        self.cfg = cfg
        t = cfg.timing
        self.t = t
        self.nranks = cfg.ranks_per_channel
        self.nbg = cfg.org["bank_groups"]
        self.nbk = cfg.org["banks_per_group"]
        n = cfg.banks_per_channel
        self.open_row = [-1] * n
        self.b_act = [NEVER] * n
        self.b_pre = [NEVER] * n
        self.b_col = [NEVER] * n
        self.bg_act = [NEVER] * (self.nranks * self.nbg)
        self.bg_col = [NEVER] * (self.nranks * self.nbg)
        self.r_act = [NEVER] * self.nranks
        self.r_col = [NEVER] * self.nranks
        self.r_faw: list[deque[int]] = [deque(maxlen=4) for _ in range(self.nranks)]
        self.ch_macpb = NEVER
        self.ch_macab = NEVER
        self.ch_actab = NEVER
        self.ch_ref = NEVER
        self.all_open = -1
        self.last_issue = 0
        self.last_row = NEVER
        self.last_row_len = 1
        self.last_col = NEVER
        self.next_ref_due = t["nREFI"]
        self.refreshes = 0
        self.log: list[tuple[int, Cmd, int, int, int, int]] | None = [] if log else None

    def _index(self, rank: int, bg: int, bank: int) -> int:
        if not (0 <= rank < self.nranks and 0 <= bg < self.nbg and 0 <= bank < self.nbk):
            raise ValueError(f"bank address ({rank}, {bg}, {bank}) out of range")
        return (rank * self.nbg + bg) * self.nbk + bank

    def issue(
        self,
        cmd: Cmd,
        rank: int = 0,
        bg: int = 0,
        bank: int = 0,
        row: int = 0,
        *,
        spacing: int = 0,
        not_before: int = 0,
    ) -> int:
        """Issue ``cmd`` at its earliest legal cycle (>= ``not_before``); return that cycle.

        ``spacing`` is the unit's own minimum distance between column commands (MACAB /
        MACPB to the same bank), when the logic behind the bank is slower than the DRAM.
        """
        t = self.t
        at = max(self.last_issue, not_before)
        if cmd in _ROW_CMDS:
            at = max(at, self.last_row + self.last_row_len)
        else:
            at = max(at, self.last_col + 1)

        if cmd is Cmd.ACT:
            i = self._index(rank, bg, bank)
            if self.open_row[i] >= 0:
                raise TimingError(
                    f"ACT to bank {(rank, bg, bank)} with row {self.open_row[i]} open"
                )
            g = rank * self.nbg + bg
            faw = self.r_faw[rank]
            at = max(
                at, self.b_act[i] + t["nRC"], self.b_pre[i] + t["nRP"],
                self.r_act[rank] + t["nRRD_S"], self.bg_act[g] + t["nRRD_L"],
                self.ch_ref + t["nRFC"], self.ch_actab + t["nRC"],
                faw[0] + t["nFAW"] if len(faw) == 4 else NEVER,
            )
            self.open_row[i] = row
            self.all_open = -1
            self.b_act[i] = at
            self.r_act[rank] = at
            self.bg_act[g] = at
            faw.append(at)
        elif cmd is Cmd.PRE:
            i = self._index(rank, bg, bank)
            if self.open_row[i] < 0:
                raise TimingError(f"PRE to closed bank {(rank, bg, bank)}")
            last_col = max(self.b_col[i], self.ch_macab)
            at = max(at, self.b_act[i] + t["nRAS"], last_col + t["nRTPL"])
            self.open_row[i] = -1
            self.all_open = -1
            self.b_pre[i] = at
        elif cmd in (Cmd.RD, Cmd.MACPB):
            i = self._index(rank, bg, bank)
            if self.open_row[i] < 0:
                raise TimingError(f"{cmd.value} to closed bank {(rank, bg, bank)}")
            g = rank * self.nbg + bg
            at = max(
                at, self.b_act[i] + t["nRCD"], self.r_col[rank] + t["nCCD_S"],
                self.bg_col[g] + t["nCCD_L"], max(self.b_col[i], self.ch_macab) + spacing,
            )
            if cmd is Cmd.MACPB:  # AttAcc: per-bank MACs of a channel are nBL apart
                at = max(at, self.ch_macpb + t["nBL"])
                self.ch_macpb = at
            self.b_col[i] = at
            self.r_col[rank] = at
            self.bg_col[g] = at
        elif cmd is Cmd.ACTAB:
            if any(r >= 0 for r in self.open_row):
                raise TimingError("ACTAB with a bank open")
            at = max(
                at, self.ch_actab + t["nRC"], max(self.b_pre) + t["nRP"],
                max(self.b_act) + t["nRC"], self.ch_ref + t["nRFC"],
            )
            n = len(self.open_row)
            self.open_row = [row] * n
            self.b_act = [at] * n
            self.ch_actab = at
            self.all_open = row
        elif cmd is Cmd.MACAB:
            # all_open is the row ACTAB opened everywhere, kept until a per-bank command; the
            # per-bank state is only scanned when it is unknown (keeps a MACAB O(1)).
            if self.all_open != row and any(r != row for r in self.open_row):
                raise TimingError(f"MACAB needs row {row} open in every bank")
            at = max(
                at, self.ch_actab + t["nRCD"], self.ch_macab + max(self.cfg.n_ccd_ab, spacing)
            )
            self.ch_macab = at
        elif cmd is Cmd.PREA:
            last_col = max(max(self.b_col), self.ch_macab)
            at = max(at, max(self.b_act) + t["nRAS"], last_col + t["nRTPL"])
            n = len(self.open_row)
            self.open_row = [-1] * n
            self.b_pre = [at] * n
            self.all_open = -1
        elif cmd is Cmd.REFAB:
            if any(r >= 0 for r in self.open_row):
                raise TimingError("REFAB with a bank open")
            at = max(at, max(self.b_pre) + t["nRP"], self.ch_ref + t["nRFC"])
            self.ch_ref = at
            self.refreshes += 1
            self.next_ref_due += t["nREFI"]
        else:  # pragma: no cover - every Cmd is handled above
            raise ValueError(f"unknown command {cmd!r}")

        if cmd in _ROW_CMDS:
            self.last_row = at
            self.last_row_len = 2 if cmd in (Cmd.ACT, Cmd.ACTAB) else 1
        else:
            self.last_col = at
        self.last_issue = at
        if self.log is not None:
            self.log.append((at, cmd, rank, bg, bank, row))
        return at

    def refresh_due(self, now: int) -> bool:
        return self.cfg.refresh and now >= self.next_ref_due


# ----------------------------------------------------------------------------------------------
# streaming: what the controller issues for a run of columns
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Segment:
    """A run of ``columns`` column reads per bank, starting on a fresh row.

    ``spacing`` is the unit's minimum cycles between two columns (0: the DRAM decides).
    """

    columns: int
    spacing: int = 0
    label: str = ""


@dataclass
class StreamStats:
    """Cycles of a stream and where they went (every cycle is in exactly one bucket)."""

    cycles: int = 0
    columns: int = 0
    column_cycles: int = 0  # columns x the column spacing: the bandwidth bound
    row_switch_cycles: int = 0  # stalls at row boundaries (PREA + ACTAB + nRCD)
    refresh_cycles: int = 0  # stalls at row boundaries that carried a refresh
    rows: int = 0
    refreshes: int = 0

    def add(self, other: StreamStats, times: int = 1) -> None:
        for f in self.__dataclass_fields__:
            setattr(self, f, getattr(self, f) + times * getattr(other, f))


def stream_all_bank(timer: ChannelTimer, segments: list[Segment]) -> StreamStats:
    """Issue every segment in all-bank mode (ACTAB, MACAB per column, PREA per row).

    Refresh is issued at row boundaries once due. Returns the stream's cycles from the first
    command to the cycle after the last column command's slot.
    """
    cols_per_row = timer.cfg.org["columns"]
    st = StreamStats()
    start = timer.last_issue
    row = 0
    prev = None  # issue cycle of the previous MACAB
    prev_sp = 0
    for seg in segments:
        if seg.columns < 0:
            raise ValueError(f"segment columns must be >= 0, got {seg.columns}")
        sp = max(timer.cfg.n_ccd_ab, seg.spacing)
        left = seg.columns
        while left > 0:
            n = min(cols_per_row, left)
            if timer.open_row[0] >= 0:
                timer.issue(Cmd.PREA)
            refreshed = False
            if timer.refresh_due(timer.last_issue):
                timer.issue(Cmd.REFAB)
                refreshed = True
            timer.issue(Cmd.ACTAB, row=row)
            for c in range(n):
                at = timer.issue(Cmd.MACAB, row=row, spacing=sp)
                stall = at - start if prev is None else at - (prev + prev_sp)
                if c == 0 and refreshed:
                    st.refresh_cycles += stall
                else:  # a column slot only ever slips at a row boundary
                    st.row_switch_cycles += stall
                prev, prev_sp = at, sp
                st.column_cycles += sp
            st.columns += n
            st.rows += 1
            st.refreshes += int(refreshed)
            row = (row + 1) % timer.cfg.org["rows"]
            left -= n
    if timer.open_row[0] >= 0:
        timer.issue(Cmd.PREA)
    st.cycles = 0 if prev is None else prev + prev_sp - start
    return st


def stream_per_bank(timer: ChannelTimer, columns: int, *, spacing: int = 0,
                    pch_broadcast: bool = True) -> StreamStats:
    """Stream ``columns`` per bank over every bank of the channel with per-bank commands.

    Column commands rotate over stack IDs and bank groups first (so consecutive commands hit
    different bank groups, nCCD_S apart) and over the banks of a group last. Each bank opens a
    new row every ``columns`` per row (PRE, ACT; nRRD and nFAW apply). With ``pch_broadcast``
    (AttAcc's HBM3-PIM.cpp: "ACTPB and MACPB are broadcasted to pCHs in a channel") one
    command reads the same bank in both pseudo-channels: the commands go to pseudo-channel
    0's banks (ranks ``[0, stack_ids)``) and the other pseudo-channel mirrors them, with the
    same timing (its nRRD, nFAW and nCCD scopes are its own), so every command moves
    ``pseudo_channels`` columns.
    """
    cfg = timer.cfg
    cols_per_row = cfg.org["columns"]
    mirror = cfg.org["pseudo_channels"] if pch_broadcast else 1
    ranks = timer.nranks // mirror
    order = [
        (r, g, b) for b in range(timer.nbk) for g in range(timer.nbg) for r in range(ranks)
    ]
    st = StreamStats()
    start = timer.last_issue
    last = start
    for c in range(columns):
        row, col = divmod(c, cols_per_row)
        for r, g, b in order:
            if col == 0:
                if timer.open_row[timer._index(r, g, b)] >= 0:
                    timer.issue(Cmd.PRE, r, g, b)
                timer.issue(Cmd.ACT, r, g, b, row=row)
            last = timer.issue(Cmd.MACPB, r, g, b, row=row, spacing=spacing)
    commands = columns * len(order)
    st.columns = commands * mirror
    st.rows = -(-columns // cols_per_row) * len(order) * mirror
    st.cycles = last + cfg.timing["nBL"] - start if columns else 0
    st.column_cycles = commands * cfg.timing["nBL"]
    st.row_switch_cycles = st.cycles - st.column_cycles
    return st


def closed_form_cycles(cfg: HBM3Config, columns: int, spacing: int = 0, *,
                       refresh: bool = False) -> float:
    """Closed-form bound of an all-bank stream of ``columns`` per bank.

    ``columns x spacing`` (bytes over the internal bandwidth) plus, per row after the first,
    the row-switch gap ``nRTPL + nRP + nRCD`` in place of one column slot, plus the first
    ``nRCD``. With ``refresh``, every ``nREFI`` adds ``nRFC`` (a refresh rides on a row switch:
    PREA, nRP, REFAB, nRFC, ACTAB), solved for the total. The cycle model can only be slower
    (it also honours nRAS, nRC and the command bus).
    """
    t = cfg.timing
    sp = max(cfg.n_ccd_ab, spacing)
    rows = -(-columns // cfg.org["columns"])
    if columns == 0:
        return 0.0
    base = t["nRCD"] + columns * sp + (rows - 1) * (t["nRTPL"] + t["nRP"] + t["nRCD"] - sp)
    if refresh:
        return base / (1.0 - t["nRFC"] / t["nREFI"])
    return float(base)


# ----------------------------------------------------------------------------------------------
# a whole decode step
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PimWorkload:
    """What one decode step asks of the PIM banks, design-independent.

    A *job* is one KV head of one sequence in one layer: its tokens' data lie in a set of
    banks; it is run ``passes`` times (one per query head the units cannot serve together).
    Per pass each bank holding part of the job streams ``key_cols(tokens)`` columns then
    ``value_cols(tokens)`` columns. Bus traffic is in 32-byte beats on the channel data bus.
    """

    layers: int
    jobs_per_layer: int
    passes: int
    tokens: int  # tokens of one job held in the banks
    key_bits_per_token: int
    value_bits_per_token: int
    key_spacing: int  # unit cycles per key column (tCK), 0: DRAM-bound
    value_spacing: int
    write_beats_per_job: int  # per step: the new token's K and V (and any codebook update)
    query_beats_per_pass: int  # per pass and job: LUT (AQPIM) or FP16 query (AttAcc)
    partial_beats_per_bank: int  # per pass and bank: read-out of a partial
    roundtrip_bytes_per_token: int = 0  # per pass and token: scores out + weights in (FP16)
    tail_cycles: int = 0  # unit latency after the last column (pipelines, merge unit)
    # per pass and round, on every streaming bank: unit work the next pass's stream waits for
    # (AQPIM: the value MAC reading its G histograms out, G (K_v + 3) cycles; the bank runs one
    # command at a time, so the next SCORE starts after AGGREGATE has answered)
    pass_cycles: int = 0
    lut_load_cycles: int = 0  # per pass: the units take the LUT in (AQPIM: its beats)
    label: str = ""
    # GPU-PIM link (0: not counted). Down: per job and layer, the new token's K/V and the
    # queries; up: per partial (one per streaming bank, or per channel with the merge unit,
    # and per query head a pass serves).
    link_down_bytes_per_job: int = 0
    link_up_bytes_per_partial: int = 0
    queries_per_pass: int = 1
    merge: bool = False  # buffer-die merge unit: one partial per channel and query head
    write_columns_per_job: int = 0  # DRAM columns written per job per step (new token)
    mapping: str = "aqpim"  # "aqpim": spread chosen by the schedule; "attacc": a channel per job

    def __post_init__(self) -> None:
        for name in ("layers", "jobs_per_layer", "passes"):
            _pos_int("PimWorkload", name, getattr(self, name))
        for name in (
            "tokens", "key_bits_per_token", "value_bits_per_token", "key_spacing",
            "value_spacing", "write_beats_per_job", "query_beats_per_pass",
            "partial_beats_per_bank", "roundtrip_bytes_per_token", "tail_cycles",
            "lut_load_cycles", "link_down_bytes_per_job", "link_up_bytes_per_partial",
            "write_columns_per_job", "pass_cycles",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"PimWorkload.{name} must be an int, got {v!r}")
            if v < 0:
                raise ValueError(f"PimWorkload.{name} must be >= 0, got {v}")
        _pos_int("PimWorkload", "queries_per_pass", self.queries_per_pass)
        if self.mapping not in ("aqpim", "attacc"):
            raise ValueError(f"PimWorkload.mapping must be 'aqpim' or 'attacc', "
                             f"got {self.mapping!r}")


@dataclass(frozen=True)
class ChannelPlan:
    """How the most loaded channel runs one layer."""

    spread: int  # banks one job's tokens are cut over
    jobs: int  # distinct jobs with data in this channel
    pieces: int  # (job, bank) pieces in this channel: banks that stream and return a partial
    rounds: int  # jobs one bank runs one after the other
    tokens_per_bank: int  # per job piece
    segments: tuple[Segment, ...]
    bus_beats: int  # everything on the channel data bus for the layer
    head_beats: int  # the first write the streaming waits for
    tail_beats: int  # the last read-out, after the streaming
    tail_cycles: int
    exposed_roundtrip_beats: int  # FP16 score round trip that nothing overlaps
    lut_load_cycles: int = 0  # per pass, units busy taking the LUT in
    link_cycles: int = 0  # GPU-PIM link, whole layer (queries + new K/V down, partials up)
    link_bytes: int = 0  # whole layer, both directions
    partials: int = 0  # partials crossing the link per layer
    write_cycles: int = 0  # the new tokens' DRAM writes (all-bank streaming waits for them)


def _cols(tokens: int, bits: int, column_bits: int) -> int:
    return -(-tokens * bits // column_bits)


def _plan(cfg: HBM3Config, w: PimWorkload, spread: int) -> ChannelPlan:
    bpc = cfg.banks_per_channel
    jobs = w.jobs_per_layer
    if w.mapping == "attacc":
        # AttAcc's trace generator: a head's tokens over all banks of one channel, heads of a
        # stack in rounds of one per channel (gen_trace_attacc_bank.py, run_attention).
        spread = bpc
        per_stack = -(-jobs // cfg.stacks)
        rounds = -(-per_stack // cfg.org["channels"])
        pieces = bpc * rounds
        tokens_per_bank = -(-w.tokens // bpc)
        ch_jobs = rounds
        channels_per_job = 1
    elif jobs <= cfg.banks:
        rounds = 1
        pieces = min(bpc, -(-jobs * spread // cfg.channels))
        tokens_per_bank = -(-w.tokens // spread)
        # A job's banks may straddle two channels: one more LUT write than a clean split.
        ch_jobs = min(jobs, -(-pieces // spread) + (0 if spread == 1 else 1))
        aligned = spread % bpc == 0 or bpc % spread == 0
        channels_per_job = -(-spread // bpc) + (0 if aligned else 1)
    else:
        rounds = -(-jobs // cfg.banks)
        pieces = bpc * rounds
        tokens_per_bank = w.tokens
        ch_jobs = pieces
        spread = 1
        channels_per_job = 1
    column_bits = cfg.org["column_bytes"] * 8
    key_cols = _cols(tokens_per_bank, w.key_bits_per_token, column_bits)
    val_cols = _cols(tokens_per_bank, w.value_bits_per_token, column_bits)
    segments = []
    for _ in range(rounds * w.passes):
        segments.append(Segment(key_cols, w.key_spacing, "key"))
        segments.append(Segment(val_cols, w.value_spacing, "value"))
    beat = cfg.org["column_bytes"]
    per_round = pieces // rounds
    rt_beats = -(-per_round * tokens_per_bank * w.roundtrip_bytes_per_token // beat)
    bus = (
        ch_jobs * w.write_beats_per_job
        + ch_jobs * w.passes * w.query_beats_per_pass
        + rounds * w.passes * (per_round * w.partial_beats_per_bank + rt_beats)
    )
    # With one pass in the whole layer the FP16 score round trip sits between the key and the
    # value stream with nothing to overlap it; with more, another pass streams meanwhile.
    exposed_rt = rt_beats if rounds * w.passes == 1 else 0
    # Partials leaving the device per layer: one per streaming bank piece (or, with the
    # merge unit, one per channel a job touches), per pass and per query head of a pass.
    pieces_per_job = channels_per_job if w.merge else spread
    partials = jobs * pieces_per_job * w.passes * w.queries_per_pass
    down = jobs * w.link_down_bytes_per_job
    up = partials * w.link_up_bytes_per_partial
    link = 0
    if down or up:
        link = math.ceil(down / cfg.link_bytes_per_cycle) + math.ceil(up / cfg.link_bytes_per_cycle)
    # The new token's columns are written per bank (ACT, one WR per column on the channel's
    # bus, write recovery, PRE) before the all-bank stream can start.
    t = cfg.timing
    write = 0
    if w.write_columns_per_job:
        write = (t["nRCD"] + ch_jobs * w.write_columns_per_job * t["nCCD_S"] + cfg.n_wr
                 + t["nRP"])
    return ChannelPlan(
        spread=spread,
        jobs=ch_jobs,
        pieces=pieces,
        rounds=rounds,
        tokens_per_bank=tokens_per_bank,
        segments=tuple(segments),
        bus_beats=bus,
        head_beats=w.query_beats_per_pass,
        tail_beats=per_round * w.partial_beats_per_bank,
        tail_cycles=w.tail_cycles + rounds * w.passes * w.pass_cycles,
        exposed_roundtrip_beats=exposed_rt,
        lut_load_cycles=w.lut_load_cycles,
        link_cycles=link,
        link_bytes=down + up,
        partials=partials,
        write_cycles=write,
    )


def _layer_cycles(cfg: HBM3Config, plan: ChannelPlan,
                  stream_cycles: float) -> tuple[int, int, int]:
    """(layer cycles, exposed bus cycles, of which the head): the bus overlaps the stream but
    for the head (queries or LUTs written and taken in before a pass streams) and the tail."""
    nbl = cfg.timing["nBL"]
    per_beat = nbl / cfg.org["pseudo_channels"]  # two pseudo-channel buses in parallel
    bus = math.ceil(plan.bus_beats * per_beat)
    # The first pass waits for its LUT to arrive and be taken in; a later pass's LUT loads
    # while the previous pass streams its values (the LUT-accumulate unit is idle then), so
    # only what the value stream does not cover shows.
    head = max(plan.head_beats * nbl, plan.lut_load_cycles)
    passes = len(plan.segments) // 2
    if passes > 1 and plan.lut_load_cycles:
        value = closed_form_cycles(cfg, plan.segments[1].columns, plan.segments[1].spacing)
        head += (passes - 1) * max(0, math.ceil(plan.lut_load_cycles - value))
    tail_bus = math.ceil(plan.tail_beats * per_beat)
    rt = math.ceil(plan.exposed_roundtrip_beats * per_beat)
    overlappable = max(0, bus - head - tail_bus - rt)
    exposed = head + tail_bus + rt + max(0, overlappable - math.ceil(stream_cycles))
    # The link and the writes do not overlap the stream: the queries and the new token must be
    # in before it starts, the partials leave after it (the next layer needs this layer's out).
    return (math.ceil(stream_cycles) + exposed + plan.tail_cycles + plan.link_cycles
            + plan.write_cycles, exposed, head)


def plan_channel(cfg: HBM3Config, w: PimWorkload, spread: int | None = None) -> ChannelPlan:
    """Map one layer's jobs onto the banks; return the most loaded channel's plan.

    With fewer jobs than banks a job's tokens are cut over ``spread`` banks (``spread`` <=
    banks // jobs): more banks stream fewer columns each, but every bank returns a partial
    over the channel bus and every channel a job touches needs its LUT. When ``spread`` is
    None the schedule picks the spread (powers of two and banks // jobs) with the smallest
    closed-form layer time. With more jobs than banks each bank runs ``ceil(jobs / banks)``
    jobs in turn. All banks of a channel get the same all-bank column addresses, so every
    streaming bank of a channel holds the same number of tokens.
    """
    most = max(1, cfg.banks // w.jobs_per_layer)
    if w.mapping == "attacc":
        return _plan(cfg, w, cfg.banks_per_channel)
    if spread is not None:
        if isinstance(spread, bool) or not isinstance(spread, int) or not 1 <= spread <= most:
            raise ValueError(f"spread must be an int in [1, {most}], got {spread!r}")
        return _plan(cfg, w, spread)
    candidates = {most}
    s = 1
    while s < most:
        candidates.add(s)
        s *= 2
    best = None
    for s in sorted(candidates):
        plan = _plan(cfg, w, s)
        est = sum(
            closed_form_cycles(cfg, g.columns, g.spacing, refresh=cfg.refresh)
            for g in plan.segments
        )
        cycles, _, _ = _layer_cycles(cfg, plan, est)
        if best is None or cycles < best[0]:
            best = (cycles, plan)
    assert best is not None
    return best[1]


@dataclass
class DecodeReport:
    """One decode step's PIM attention: times in seconds, and where the time goes."""

    label: str
    seconds: float
    layer_cycles: int
    stream: StreamStats
    bus_cycles: int
    exposed_bus_cycles: int  # all exposed bus cycles, query_load_cycles included
    tail_cycles: int
    bytes_streamed: int  # inside the banks, all banks, whole step
    bandwidth_utilisation: float  # bytes streamed / (time x peak internal bandwidth)
    plan: ChannelPlan
    link_bytes: int = 0  # GPU-PIM link, whole step, both directions
    bus_bytes: int = 0  # channel data buses, all channels, whole step (energy)
    query_load_cycles: int = 0  # per layer: the queries / LUTs in before the passes stream

    def breakdown(self) -> dict[str, float]:
        """Seconds per bucket; the buckets sum to ``seconds``."""
        per_cycle = self.seconds / self.layer_cycles if self.layer_cycles else 0.0
        s = self.stream
        return {
            "pim_stream": s.column_cycles * per_cycle,
            "pim_row_switch": s.row_switch_cycles * per_cycle,
            "pim_refresh": s.refresh_cycles * per_cycle,
            # queries (FP16) or LUTs (AQPIM) written over the bus and taken in by the units
            # before a pass streams; the rest of the exposed bus time: partial read-out, etc.
            "pim_query_load": self.query_load_cycles * per_cycle,
            "pim_bus": (self.exposed_bus_cycles - self.query_load_cycles) * per_cycle,
            "pim_unit_tail": self.tail_cycles * per_cycle,
            "pim_link": self.plan.link_cycles * per_cycle,
            "pim_write": self.plan.write_cycles * per_cycle,
        }




_STREAM_CACHE: dict[tuple[Any, ...], StreamStats] = {}


def _simulate_segments(cfg: HBM3Config, segments: tuple[Segment, ...]) -> StreamStats:
    key = (tuple(sorted(cfg.timing.items())), cfg.power_limit, cfg.refresh,
           tuple(sorted(cfg.org.items())), segments)
    hit = _STREAM_CACHE.get(key)
    if hit is None:
        hit = stream_all_bank(ChannelTimer(cfg), list(segments))
        if len(_STREAM_CACHE) > 4096:
            _STREAM_CACHE.clear()
        _STREAM_CACHE[key] = hit
    return hit


def simulate_decode(cfg: HBM3Config, w: PimWorkload, spread: int | None = None) -> DecodeReport:
    """Time of the PIM part of one decode step: all layers, all jobs, all banks.

    Per layer: the most loaded channel's all-bank command stream (simulated command by
    command), with its bus traffic overlapped but for the first write and the last read-out;
    layers run one after the other.
    """
    plan = plan_channel(cfg, w, spread)
    stream = _simulate_segments(cfg, plan.segments)
    layer, exposed, head = _layer_cycles(cfg, plan, stream.cycles)
    bus = math.ceil(plan.bus_beats * cfg.timing["nBL"] / cfg.org["pseudo_channels"])
    seconds = w.layers * layer * cfg.tck_ns * 1e-9
    # Useful bytes only: padding of a job's last column and idle banks do not count.
    bytes_streamed = (
        w.layers * w.jobs_per_layer * w.passes * w.tokens
        * (w.key_bits_per_token + w.value_bits_per_token) // 8
    )
    peak = cfg.internal_gbs * 1e9
    util = bytes_streamed / (seconds * peak) if seconds else 0.0
    # Bus bytes of all channels: the most loaded channel's beats scaled by the channels in use.
    used = max(1, min(cfg.channels, -(-w.jobs_per_layer * plan.spread
                                      // (cfg.banks_per_channel * plan.rounds))))
    bus_bytes = w.layers * plan.bus_beats * cfg.org["column_bytes"] * used
    return DecodeReport(
        label=w.label,
        seconds=seconds,
        layer_cycles=layer,
        stream=stream,
        bus_cycles=bus,
        exposed_bus_cycles=exposed,
        query_load_cycles=head,
        tail_cycles=plan.tail_cycles,
        bytes_streamed=bytes_streamed,
        bandwidth_utilisation=util,
        plan=plan,
        link_bytes=w.layers * plan.link_bytes,
        bus_bytes=bus_bytes,
    )


# ----------------------------------------------------------------------------------------------
# driver traces (sw/host/trace.py format) through the model
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CommandTiming:
    """The model's cost of one traced command on one bank, next to what was recorded.

    ``unit_cycles`` is what the bank's units take (the quantity the RTL device records:
    first header beat offered to last response beat taken); ``dram_cycles`` is the same
    command on HBM3 in all-bank mode (tCK), bounded by the DRAM timing or by the units.
    """

    index: int
    opcode: str
    bank: int | None
    tokens: int
    unit_cycles: int
    dram_cycles: int
    recorded: tuple[int, ...] | None


def command_unit_cycles(cfg: HBM3Config, num: Any, opcode: str, tokens: int, length: int, *,
                        count: int = 0, accepted: bool = True, kv: int = 0,
                        queries: int = 1, heads: int = 1) -> int:
    """Model cycles one bank spends on a command (unit clock), from ``units.aqpim``.

    The quantity the RTL device records: from the first header beat offered to the last
    response beat taken, with no idle input cycles and no back-pressure. The bank controller
    (hw/bank.py) takes one header or data beat per cycle, hands the beat's groups (centroids,
    sub-vectors) to its unit one per cycle (a LUT beat goes to the unit whole, one per cycle),
    and returns one response beat per cycle; ``units.aqpim.command_cycles`` holds its fixed
    overheads, measured on the RTL and checked command by command against co-simulation
    (tests/test_perf.py).

    Parameters
    ----------
    cfg:
        Hardware config (its ``units.aqpim``).
    num:
        The bank's :class:`aqpim.numerics.Numerics`.
    opcode:
        Opcode name (``"SCORE"``, ...); an unknown name costs a rejected command.
    tokens:
        Tokens the bank holds (SCORE, AGGREGATE) or the command writes (WRITE_KV).
    length:
        The command's data beats.
    count:
        READ_CODES: code columns read back.
    accepted:
        False for a command the bank rejected: it drains its data beats and answers.
    kv:
        LOAD_CB / READ_CB: the side (0 keys, 1 values) whose K and beats count.
    queries:
        G, query heads per pass (GQA): AGGREGATE reads G histograms out through the one value
        MAC, ``K_v x D / lanes + value_mac_latency`` cycles each (measured on the RTL); SCORE is
        unchanged.
    heads:
        H, the bank's head slots: READ_STATUS sends 3 beats per slot (measured on the RTL at
        H = 2). No other command depends on H or on the slot it addresses.

    SCORE streams the key columns (``M_k * b_k`` bits per token), AGGREGATE the value columns
    (``M_v * b_v``): one column per cycle, so a token over two columns takes two cycles.
    """
    from aqpim.geometry import Geometry

    u = lambda k: cfg.unit("aqpim", k)  # noqa: E731
    cc = u("command_cycles")
    g = Geometry(num, heads=heads)
    base = cc["base"]  # header in, the one-cycle check, response header out
    if not accepted or opcode not in _ACCEPTED_COST:
        return base + cc["reject"] + length
    column_bits = cfg.org["column_bytes"] * 8
    nk, nv = num.keys, num.values
    cols = _cols(tokens, nk.subspaces * nk.code_bits, column_bits)
    if opcode == "SCORE":  # key-code columns into the LUT-accumulate unit; 0 tokens: one beat
        return base + cc["score"] + max(cols, 1) * u("lut_accumulate_cycles_per_column")
    if opcode == "AGGREGATE":  # softmax + histogram per token, then histogram x centroids
        # one token per cycle, or one value column per cycle when a token spans several
        vcols = _cols(tokens, nv.subspaces * nv.code_bits, column_bits)
        # the value MAC (hw/value_mac.py) takes D / lanes cycles per bin (lanes = min(lanes,
        # D), as the RTL's default) and its pipeline latency, once per query head
        per_bin = nv.head_dim // min(u("value_mac_lanes"), nv.head_dim)
        return (base + cc["aggregate"]
                + max(tokens * u("softmax_histogram_cycles_per_token"), vcols, 1)
                + queries * (nv.centroids * per_bin + u("value_mac_latency")))
    if opcode == "LOAD_CB":  # each beat, then its centroids one per cycle
        return base + cc["load"] + length + num.side(kv).centroids
    if opcode == "LOAD_LUT":  # each 256-bit beat straight into the LUT-accumulate unit
        return base + cc["load"] + length * u("lut_load_cycles_per_beat")
    if opcode == "WRITE_KV":
        # 2M sub-vectors per token through the encoder, K / lanes cycles each; a beat's load
        # cycle hides behind a busy encoder unless it takes one sub-vector per cycle.
        per_sub = -(-num.centroids // u("encoder_lanes"))
        # the argmin tree's registered stages (hw/encoder.py: argmin_latency) delay the last
        # code once per command
        depth = (u("encoder_lanes") - 1).bit_length()
        levels = u("encoder_argmin_stage_levels")
        argmin = (depth - 1) // levels if levels and depth else 0
        # and the distance lanes' registered stages (hw/distance.py), at the encoder's d: the
        # larger of the two sides' (one encoder for both)
        if u("encoder_distance_pipelined"):
            argmin += distance_latency(max(nk.sub_dim, nv.sub_dim), num.elem_bits)
        # the last code leaves min(c, 2) cycles after its sub-vector's slot: measured on the
        # RTL at c = 1, 2, 4, 16 (the model had c here, which holds only for c <= 2)
        return (base + cc["write_kv"] + min(per_sub, 2) + argmin
                + tokens * (nk.subspaces + nv.subspaces) * per_sub
                + length * max(0, 2 - per_sub))
    reads = {"READ_PARTIAL": g.partial_beats, "READ_STATUS": g.status_beats}
    if opcode in reads:  # from registers
        return base + reads[opcode]
    if opcode == "READ_CODES":  # from the code storage: one cycle of read latency first
        return base + cc["read_memory"] + count
    if opcode in ("READ_CB", "READ_LUT"):
        # from the units' working storage, one element (centroid, LUT entry) per cycle, then
        # the unit's read latency and the packing register (hw/bank_reader.py); a beat of one
        # element waits for the element in flight, 2 cycles each
        if opcode == "READ_CB":
            side = num.side(kv)
            elems, per_beat = side.centroids, 256 // (side.sub_dim * g.elem_width)
        else:
            elems, per_beat = num.subspaces * num.centroids, g.lut_entries_per_beat
        return base + cc["read_working"] + (elems if per_beat > 1 else 2 * elems - 1)
    return base  # NOP, RESET


def score_drain_cycles(cfg: HBM3Config, geometry: Any) -> int:
    """Extra cycles of an AGGREGATE that follows a SCORE at once: the last score in flight.

    The value pass starts once the last score is stored, 1 + ceil(log2 M_k) + 1 cycles after
    SCORE's last column (hw/attention.py); SCORE's response and AGGREGATE's header hide
    ``score_to_aggregate_slack`` of them, and a value group of ``cpt`` columns gathers its
    first ``cpt - 1`` columns meanwhile (measured: 1 cycle fewer at 2 columns per token).
    Known gap: at M_k = 128 the RTL takes one cycle more than this (docs/bank.md).
    """
    drain = 2 + (geometry.num.subspaces - 1).bit_length()
    slack = cfg.unit("aqpim", "command_cycles")["score_to_aggregate_slack"]
    return max(0, drain - slack - (geometry.value.columns_per_token - 1))


_ACCEPTED_COST = ("NOP", "RESET", "LOAD_CB", "WRITE_KV", "LOAD_LUT", "SCORE", "AGGREGATE",
                  "READ_PARTIAL", "READ_STATUS", "READ_CODES", "READ_CB", "READ_LUT")


def _response_beats(geometry: Any, opcode: str, count: int, accepted: bool, kv: int = 0) -> int:
    """Data beats of a command's response (the header not counted)."""
    if not accepted:
        return 0
    return {"READ_PARTIAL": geometry.partial_beats, "READ_STATUS": geometry.status_beats,
            "READ_CODES": count, "READ_CB": geometry.side(kv).cb_beats,
            "READ_LUT": geometry.lut_beats}.get(opcode, 0)


def trace_timing(path: str | Path, cfg: HBM3Config) -> list[CommandTiming]:
    """Run a recorded driver trace (``aqpim.sw.host.trace``) through the model, command by command.

    Tracks each (bank, head)'s token count from WRITE_KV commands the banks accepted (RESET
    clears them), so SCORE and AGGREGATE cost what the bank really holds. A broadcast gives
    one entry with the most loaded bank's cost (all banks run in lockstep).
    """
    from aqpim.sw.host.trace import read_trace

    from aqpim.isa import Status

    geometry, num_banks, entries = read_trace(path)
    num = geometry.num
    tokens: dict[tuple[int, int], int] = {}
    last: dict[int, str] = {}  # the last command each bank accepted
    out: list[CommandTiming] = []
    nbl = cfg.timing["nBL"]
    for i, e in enumerate(entries):
        name = e.cmd.opcode.name if hasattr(e.cmd.opcode, "name") else str(e.cmd.opcode)
        banks = range(num_banks) if e.bank is None else [e.bank]
        ok = [b for b, s in zip(banks, e.status, strict=False) if s == int(Status.OK)]
        if name == "RESET":
            for b in ok:
                for key in [k for k in tokens if k[0] == b]:
                    del tokens[key]
        if name == "WRITE_KV":
            for b in ok:
                key = (b, e.cmd.head)
                tokens[key] = max(tokens.get(key, 0), e.cmd.addr + e.cmd.count)
        held = max((tokens.get((b, e.cmd.head), 0) for b in banks), default=0)
        n = e.cmd.count if name == "WRITE_KV" else held
        # A broadcast that some banks took costs what those banks do (they set the pace).
        accepted = bool(ok)
        unit = command_unit_cycles(cfg, num, name, n, e.cmd.length, count=e.cmd.count,
                                   accepted=accepted, kv=e.cmd.kv, queries=geometry.queries,
                                   heads=geometry.heads)
        if accepted and name == "AGGREGATE" and any(last.get(b) == "SCORE" for b in ok):
            unit += score_drain_cycles(cfg, geometry)
        for b in ok:
            last[b] = name
        div = cfg.unit("aqpim", "clock_divider")
        if accepted and name in ("SCORE", "AGGREGATE"):
            side = num.keys if name == "SCORE" else num.values
            bits = side.subspaces * side.code_bits
            cols = _cols(held, bits, cfg.org["column_bytes"] * 8)
            if name == "SCORE":
                per_col = cfg.unit("aqpim", "lut_accumulate_cycles_per_column")
            else:  # a column's tokens one per cycle, at least a cycle per column
                per_col = max(cfg.org["column_bytes"] * 8 / bits
                              * cfg.unit("aqpim", "softmax_histogram_cycles_per_token"), 1.0)
            spacing = math.ceil(per_col * div)
            stream = stream_all_bank(ChannelTimer(cfg), [Segment(cols, spacing)]).cycles
            # the column stream on DRAM timing, plus what the units do around it
            dram = stream + math.ceil(max(0, unit - cols * per_col) * div)
        else:
            # beats cross the pseudo-channel bus at nBL each while the units work at
            # tCK x clock_divider: the slower of the two
            beats = 1 + e.cmd.length + _response_beats(geometry, name, e.cmd.count, accepted,
                                                       e.cmd.kv)
            dram = max(math.ceil(unit * div), beats * nbl)
        out.append(CommandTiming(i, name, e.bank, n, unit, dram, e.cycles))
    return out
