"""RTL device: bank controllers (hw/bank.py) under cocotb + Verilator behind the Device protocol.

:class:`RtlDevice` builds a :class:`aqpim.hw.bank.BankArray` of ``num_banks`` banks with
:func:`aqpim.sim.runner.build_and_run` (one build folder per parameter set, rebuilt only when
the Verilog changes) and runs the cocotb test ``serve`` of :mod:`aqpim.sim.test_bank_tb` in a
background thread. The test connects back over a Unix socket and executes each command this
device sends (JSON lines, see the testbench), with random idle cycles on the command streams
and random back-pressure on the responses. Every command's cycle count per bank is kept in
:attr:`RtlDevice.last_cycles` and :attr:`RtlDevice.cycles` (the trace recorder stores them).
:meth:`RtlDevice.execute_batch` sends a whole batch in one round trip, and the simulation runs
the commands of different banks at the same time (a driver's prefill over 4 banks about 4x
faster in wall time than one command after another).

Closing the device ends the simulation; a failed cocotb test (watchdog, stream rule) raises
there, and any later command raises too.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from aqpim.sw.host.device import check_bank

from aqpim import isa
from aqpim.checks import check_int
from aqpim.geometry import Geometry
from aqpim.isa import Command, Response
from aqpim.numerics import Numerics

__all__ = ["RtlDevice"]


class RtlDevice:
    """``num_banks`` RTL banks in one co-simulation.

    Parameters
    ----------
    geometry:
        Numerics, head slots and query heads of every bank.
    num_banks:
        Banks in the simulated array (1..16).
    lanes:
        Encoder lanes (default K: one sub-vector per cycle).
    seed:
        Seed of the testbench's idle/back-pressure randomness.
    idle, backpressure:
        Probabilities of an idle input cycle / a stalled output cycle.
    watchdog:
        Cycles one command may take before the testbench declares a hang.
    start_timeout:
        Seconds to wait for the build and the simulator to connect.
    on_stage:
        Told when Verilog generation, the Verilator build and the simulator start
        (:func:`aqpim.sim.runner.build_and_run`); called from the device's thread.
    """

    def __init__(
        self,
        geometry: Geometry,
        num_banks: int,
        *,
        lanes: int | None = None,
        seed: int = 0,
        idle: float = 0.2,
        backpressure: float = 0.2,
        watchdog: int = 400_000,
        start_timeout: float = 1800.0,
        on_stage: Callable[[str, Path], None] | None = None,
    ) -> None:
        if not isinstance(geometry, Geometry):
            raise TypeError(f"geometry must be a Geometry, got {type(geometry).__name__}")
        num_banks = check_int("num_banks", num_banks, 1, 16)
        self._g = geometry
        self._n = num_banks
        self.last_cycles: list[int] | None = None
        self.last_batch_cycles: list[list[int]] | None = None
        self.cycles: list[tuple[int | None, int, list[int]]] = []  # (bank, opcode, cycles)
        self._error: BaseException | None = None
        self._closed = False

        # a value side equal to the key side is None: left out, so the build folder of a
        # symmetric configuration is the one it always was
        fields = {f.name: getattr(geometry.num, f.name)
                  for f in dataclasses.fields(Numerics)
                  if f.init and getattr(geometry.num, f.name) is not None}
        params = {"banks": num_banks, "lanes": lanes or geometry.num.centroids, **fields}
        if geometry.queries != 1:  # (absent at 1: the build folders of G = 1 stay as they were)
            params["queries"] = geometry.queries
        if geometry.heads != 1:  # (likewise for one head slot)
            params["heads"] = geometry.heads
        self._tmp = tempfile.TemporaryDirectory(prefix="aqpim-rtl-")
        path = str(Path(self._tmp.name) / "bank.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(1)
        srv.settimeout(1.0)
        test_params = {"socket": path, "banks": num_banks, "idle": idle,
                       "backpressure": backpressure, "watchdog": watchdog}

        def run() -> None:
            from aqpim.hw.bank import BankArray
            from aqpim.sim.runner import build_and_run

            try:
                build_and_run(
                    BankArray, unit="bank_array", params=params,
                    test_module="aqpim.sim.test_bank_tb", testcase="serve",
                    test_params=test_params, seed=seed, on_stage=on_stage,
                )
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                self._error = e

        self._thread = threading.Thread(target=run, name="aqpim-rtl", daemon=True)
        self._thread.start()
        waited = 0.0
        conn = None
        while conn is None:
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                waited += 1.0
                if not self._thread.is_alive() or waited > start_timeout:
                    srv.close()
                    self._closed = True
                    raise RuntimeError(
                        f"RTL simulation did not start: {self._error!r}"
                    ) from self._error
        srv.close()
        self._conn = conn
        self._f: IO[str] = conn.makefile("rw", encoding="ascii")

    @property
    def geometry(self) -> Geometry:
        return self._g

    @property
    def num_banks(self) -> int:
        return self._n

    def _request(self, req: dict[str, object], what: str) -> dict[str, object]:
        if self._closed:
            raise RuntimeError("RTL device is closed")
        self._f.write(json.dumps(req) + "\n")
        self._f.flush()
        line = self._f.readline()
        if not line:
            self._thread.join(timeout=60)
            self._closed = True
            raise RuntimeError(f"RTL simulation ended during {what}: {self._error}") from (
                self._error
            )
        return json.loads(line)

    def _take(self, bank: int | None, cmd: Command, reply: dict) -> list[Response]:
        self.last_cycles = list(reply["cycles"])
        self.cycles.append((bank, int(cmd.opcode), self.last_cycles))
        return [isa.decode_response([int(w, 16) for w in r]) for r in reply["resps"]]

    @staticmethod
    def _item(bank: int | None, cmd: Command) -> dict[str, object]:
        return {"bank": bank, "words": [format(w, "x") for w in isa.encode_command(cmd)]}

    def execute(self, bank: int | None, cmd: Command) -> list[Response]:
        check_bank(bank, self._n)
        self.last_batch_cycles = None
        return self._take(bank, cmd, self._request(self._item(bank, cmd), repr(cmd)))

    def execute_batch(self, items: Sequence[tuple[int | None, Command]]) -> list[list[Response]]:
        """Run ``items`` in one round trip; commands of different banks between broadcasts
        run at the same time in the simulation (each bank's in order), as a channel's banks
        do. :attr:`last_batch_cycles` holds every command's cycles per bank."""
        items = list(items)
        for bank, _ in items:
            check_bank(bank, self._n)
        if not items:
            self.last_batch_cycles = []
            return []
        reply = self._request({"batch": [self._item(b, c) for b, c in items]},
                              f"a batch of {len(items)} commands")
        out = [self._take(b, c, r) for (b, c), r in zip(items, reply["results"], strict=True)]
        self.last_batch_cycles = [list(r["cycles"]) for r in reply["results"]]
        return out

    def close(self) -> None:
        """End the simulation; raise if the cocotb test failed."""
        if not self._closed:
            self._closed = True
            try:
                self._f.write(json.dumps({"quit": True}) + "\n")
                self._f.flush()
            except OSError:
                pass
            self._thread.join()
            self._f.close()
            self._conn.close()
            self._tmp.cleanup()
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def __enter__(self) -> RtlDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
