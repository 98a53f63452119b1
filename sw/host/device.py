"""The device protocol: how the host driver talks to N PIM banks.

A device is anything that executes :class:`aqpim.isa.Command` s on numbered banks and answers
with :class:`aqpim.isa.Response` s: the golden NumPy model (:mod:`aqpim.sw.host.golden_device`), the
RTL under co-simulation (:mod:`aqpim.sim.rtl_device`), the trace recorder
(:mod:`aqpim.sw.host.trace`). The driver sees only this interface, so one command stream runs on
all of them.

A command goes to one bank, or to every bank at once (``bank=None``: the all-bank broadcast
that HBM-PIM uses for LUT writes); a broadcast returns one response per bank, in bank order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from aqpim.geometry import Geometry
from aqpim.isa import Command, Response

__all__ = ["Device", "DeviceWrapper", "check_bank", "observe"]


@runtime_checkable
class Device(Protocol):
    """N banks behind one command interface."""

    @property
    def geometry(self) -> Geometry:
        """Sizes every bank of this device shares (numerics, head slots)."""
        ...

    @property
    def num_banks(self) -> int:
        ...

    @property
    def last_cycles(self) -> list[int] | None:
        """Clock cycles each bank that ran the last :meth:`execute` took (bank order), or None
        when this device does not count cycles (the golden model)."""
        ...

    @property
    def last_batch_cycles(self) -> list[list[int]] | None:
        """Per command of the last :meth:`execute_batch`, the cycles as :attr:`last_cycles`."""
        ...

    def execute(self, bank: int | None, cmd: Command) -> list[Response]:
        """Run ``cmd`` on ``bank`` (or on every bank when None); one response per bank run."""
        ...

    def execute_batch(self, items: Sequence[tuple[int | None, Command]]) -> list[list[Response]]:
        """Run several commands in order; a device may overlap their transport."""
        ...


class DeviceWrapper:
    """Base of devices that forward to an ``inner`` device (recorders, counters): geometry,
    bank count and cycle counts are the inner device's."""

    def __init__(self, inner: Device) -> None:
        self._inner = inner

    @property
    def geometry(self) -> Geometry:
        return self._inner.geometry

    @property
    def num_banks(self) -> int:
        return self._inner.num_banks

    @property
    def last_cycles(self) -> list[int] | None:
        return self._inner.last_cycles

    @property
    def last_batch_cycles(self) -> list[list[int]] | None:
        return self._inner.last_batch_cycles


def check_bank(bank: object, num_banks: int) -> None:
    """Raise TypeError/ValueError unless ``bank`` is None or an index in ``[0, num_banks)``."""
    if bank is None:
        return
    if isinstance(bank, bool) or not isinstance(bank, int):
        raise TypeError(f"bank must be an int or None, got {bank!r}")
    if not 0 <= bank < num_banks:
        raise ValueError(f"bank {bank} out of range [0, {num_banks})")


def observe(device: Device, bank: int) -> dict[str, object]:
    """Everything the commands of :mod:`aqpim.isa` can read back from one bank.

    READ_STATUS, then READ_CODES of every used column, READ_CB of every loaded subspace,
    READ_LUT and READ_PARTIAL where their flags are set. Works on any device, so two devices
    can be compared after every command (the random-stream tests do this). Only read commands
    are sent: observing changes no state.
    """
    from aqpim import isa  # local: keeps the protocol module import-light

    g = device.geometry
    check_bank(bank, device.num_banks)

    def one(cmd: Command) -> Response:
        (r,) = device.execute(bank, cmd)
        if r.status != isa.Status.OK:
            raise RuntimeError(f"observe: bank {bank} answered {r.status.name} to {cmd!r}")
        return r

    heads = isa.decode_status(g, one(isa.read_status()))
    out: dict[str, object] = {"status": heads}
    limit = (1 << isa.HEADER_FIELDS["count"][1]) - 1
    for h, hs in enumerate(heads):
        for kv in (0, 1):
            cols: list[int] = []
            used = g.used_columns(hs.tokens, kv)
            for c in range(0, used, limit):
                cnt = min(limit, used - c)
                cols += one(isa.read_codes(head=h, kv=kv, column=c, count=cnt)).data
            out[f"codes/{h}/{kv}"] = cols
            mask = hs.v_mask if kv else hs.k_mask
            for m in range(g.side(kv).subspaces):
                if mask >> m & 1:
                    out[f"cb/{h}/{kv}/{m}"] = one(isa.read_cb(head=h, kv=kv, subspace=m)).data
        if hs.flags & isa.Flag.LUT:
            out["lut"] = (h, one(isa.read_lut(head=h)).data)
        if hs.flags & isa.Flag.PARTIAL:
            out["partial"] = (h, one(isa.read_partial(head=h)).data)
    return out
