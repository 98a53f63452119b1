"""Command-stream traces: a recorder device and a replay function.

Trace format (JSON lines, UTF-8, one object per line; docs/driver.md):

* line 1, the header: ``{"format": "aqpim-trace", "version": 1, "num_banks": B,
  "heads": H, "numerics": {...Numerics fields...}}``
* then one line per command: ``{"bank": b | null, "words": ["<hex>", ...], "status": [s, ...],
  "data": [["<hex>", ...], ...], "cycles": [c, ...] | null}``. ``bank`` null is an all-bank
  broadcast. ``words`` is the command exactly as on the wire (:func:`aqpim.isa.encode_command`:
  header word then data beats, lower-case hex without ``0x``). ``status`` is the status each
  bank answered (bank order) and ``data`` the data beats of each bank's response
  (READ_PARTIAL's partials, READ_CODES' columns...); ``cycles`` the cycles each bank took when
  the device reports them (the RTL device does), else null.

The performance model (:func:`aqpim.sw.perf.hbm3.trace_timing`) reads these files;
:func:`replay` runs one on any device and checks every status and response beat against
it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from aqpim.sw.host.device import Device, DeviceWrapper

from aqpim import isa
from aqpim.geometry import Geometry
from aqpim.isa import Command, Response
from aqpim.numerics import Numerics

__all__ = ["TraceRecorder", "TraceEntry", "read_trace", "replay", "FORMAT", "VERSION"]

FORMAT = "aqpim-trace"
VERSION = 2


@dataclasses.dataclass(frozen=True)
class TraceEntry:
    """One recorded command and what the banks answered."""

    bank: int | None
    cmd: Command
    status: tuple[int, ...]
    data: tuple[tuple[int, ...], ...]
    cycles: tuple[int, ...] | None


def _header(geometry: Geometry, num_banks: int) -> dict[str, object]:
    num = {f.name: getattr(geometry.num, f.name)
           for f in dataclasses.fields(Numerics) if f.init}
    return {"format": FORMAT, "version": VERSION, "num_banks": num_banks,
            "heads": geometry.heads, "queries": geometry.queries, "numerics": num}


class TraceRecorder(DeviceWrapper):
    """A device that forwards to ``inner`` and appends every command to a trace file.

    Parameters
    ----------
    inner:
        The device that executes the commands.
    path:
        Trace file (overwritten). Use as a context manager or call :meth:`close`.
    """

    def __init__(self, inner: Device, path: str | Path) -> None:
        super().__init__(inner)
        self._path = Path(path)
        self._fh: IO[str] | None = self._path.open("w", encoding="utf-8")
        self._fh.write(json.dumps(_header(inner.geometry, inner.num_banks)) + "\n")
        self.commands = 0

    def _record(self, bank: int | None, cmd: Command, resps: list[Response],
                cycles: list[int] | None) -> None:
        if self._fh is None:
            raise RuntimeError(f"trace {self._path} is closed")
        if cycles is not None and len(cycles) != len(resps):
            raise RuntimeError(f"the device reported {len(cycles)} cycle counts for "
                               f"{len(resps)} responses")
        entry = {
            "bank": bank,
            "words": [format(w, "x") for w in isa.encode_command(cmd)],
            "status": [int(r.status) for r in resps],
            "data": [[format(w, "x") for w in r.data] for r in resps],
            "cycles": None if cycles is None else list(cycles),
        }
        self._fh.write(json.dumps(entry) + "\n")
        self.commands += 1

    def execute(self, bank: int | None, cmd: Command) -> list[Response]:
        resps = self._inner.execute(bank, cmd)
        self._record(bank, cmd, resps, self._inner.last_cycles)
        return resps

    def execute_batch(self, items: Sequence[tuple[int | None, Command]]) -> list[list[Response]]:
        items = list(items)
        results = self._inner.execute_batch(items)
        per = self._inner.last_batch_cycles
        if per is None:
            per = [None] * len(items)
        if len(per) != len(items):
            raise RuntimeError("the device's last_batch_cycles do not match the batch")
        for (bank, cmd), resps, cyc in zip(items, results, per, strict=True):
            self._record(bank, cmd, resps, cyc)
        return results

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> TraceRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_trace(path: str | Path) -> tuple[Geometry, int, Iterator[TraceEntry]]:
    """Open a trace: (geometry, num_banks, iterator over its entries).

    Raises ValueError on a file that is not an aqpim trace or has a malformed line.
    """
    path = Path(path)
    fh = path.open(encoding="utf-8")
    try:
        head = json.loads(fh.readline() or "null")
    except json.JSONDecodeError as e:
        fh.close()
        raise ValueError(f"{path}: first line is not JSON ({e})") from None
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        fh.close()
        raise ValueError(f"{path}: not an {FORMAT} file")
    if head.get("version") != VERSION:
        fh.close()
        raise ValueError(f"{path}: trace version {head.get('version')!r}, expected {VERSION}")
    geometry = Geometry(Numerics(**head["numerics"]), heads=head["heads"],
                        queries=head.get("queries", 1))

    def entries() -> Iterator[TraceEntry]:
        with fh:
            for lineno, line in enumerate(fh, start=2):
                try:
                    e = json.loads(line)
                    cmd = isa.decode_command([int(w, 16) for w in e["words"]])
                    data = tuple(tuple(int(w, 16) for w in r) for r in e["data"])
                    yield TraceEntry(bank=e["bank"], cmd=cmd, status=tuple(e["status"]),
                                     data=data,
                                     cycles=None if e["cycles"] is None else tuple(e["cycles"]))
                except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
                    raise ValueError(f"{path}:{lineno}: bad trace line ({exc})") from None

    return geometry, int(head["num_banks"]), entries()


def replay(path: str | Path, device: Device, *, check: bool = True) -> list[list[Response]]:
    """Run a trace's commands on ``device``; with ``check``, every response must equal the
    recorded one (status and data beats).

    Raises ValueError when the device's geometry or bank count differ from the trace's, and
    AssertionError (naming the command) when a status or a response beat differs.
    """
    geometry, banks, entries = read_trace(path)
    if device.geometry != geometry or device.num_banks != banks:
        raise ValueError(
            f"trace is for {banks} banks of {geometry}, device has {device.num_banks} banks "
            f"of {device.geometry}"
        )
    out = []
    for i, e in enumerate(entries):
        resps = device.execute(e.bank, e.cmd)
        if check and tuple(int(r.status) for r in resps) != e.status:
            raise AssertionError(
                f"{path}: command {i} {e.cmd!r} answered {[r.status.name for r in resps]}, "
                f"trace says {e.status}"
            )
        got = tuple(tuple(r.data) for r in resps)
        if check and got != e.data:
            bank, beat = next((b, j) for b, (x, y) in enumerate(zip(got, e.data, strict=True))
                              for j in range(max(len(x), len(y)))
                              if j >= min(len(x), len(y)) or x[j] != y[j])
            raise AssertionError(
                f"{path}: command {i} {e.cmd!r}: response {bank} beat {beat} differs from the "
                "recorded run"
            )
        out.append(resps)
    return out
