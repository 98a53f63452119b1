"""cocotb drivers and monitors for ``amaranth.lib.stream`` ports as they appear in Verilog.

Amaranth flattens a stream member ``name`` into ``name__payload`` (one vector, whatever the
payload layout), ``name__valid`` and ``name__ready``. This module gives:

- :func:`pack` / :func:`unpack`: payload value <-> integer, by the Amaranth shape or layout
  (``StructLayout`` -> dict, ``ArrayLayout`` -> list, signed fields as Python ints);
- :class:`StreamSource`: drives payloads in order, with random idle cycles (seeded);
- :class:`StreamSink`: accepts payloads with random backpressure (seeded) and checks the
  stream rules (valid held, payload stable until the transfer);
- every transfer is stamped with its clock cycle (from simulation time, so drivers resuming in
  any order at the same edge agree), for latency and throughput measurements.

Idle and backpressure are ON by default (probability 0.3): tests that need a full-rate stream
pass ``idle_prob=0.0`` / ``backpressure_prob=0.0`` explicitly.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Transfer",
    "StreamSink",
    "StreamSource",
    "pack",
    "shape_width",
    "unpack",
]


# ----------------------------------------------------------------------------------------------
# payload packing (pure Python over Amaranth shapes; no simulator needed)
# ----------------------------------------------------------------------------------------------
def _as_layout_or_shape(shape: Any) -> Any:
    from amaranth.hdl import Shape
    from amaranth.lib import data

    if isinstance(shape, data.Layout):
        return shape
    try:
        return data.Layout.cast(shape)
    except TypeError:
        return Shape.cast(shape)


def shape_width(shape: Any) -> int:
    """Width in bits of an Amaranth shape or layout."""
    s = _as_layout_or_shape(shape)
    return s.size if hasattr(s, "size") else s.width


def pack(shape: Any, value: Any) -> int:
    """Integer whose bits are ``value`` laid out by ``shape`` (as Amaranth lays it out).

    ``value`` is an int for plain shapes, a mapping for ``StructLayout`` and a sequence for
    ``ArrayLayout`` (nested as the layout nests); an int for a layout is taken as its raw bits.
    Raises ValueError for out-of-range values or missing fields.
    """
    from amaranth.lib import data

    s = _as_layout_or_shape(shape)
    if isinstance(s, data.Layout) and isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < 1 << s.size:
            raise ValueError(f"raw value {value} does not fit {s.size} bits of {s!r}")
        return value  # the layout's raw bits
    if isinstance(s, data.Layout):
        word = 0
        if isinstance(s, data.ArrayLayout):
            if not isinstance(value, Sequence) or len(value) != s.length:
                raise ValueError(f"expected a sequence of {s.length} elements, got {value!r}")
            items: Iterable[tuple[Any, Any]] = (
                (field, value[i]) for i, field in ((i, s[i]) for i in range(s.length))
            )
        else:
            if not isinstance(value, Mapping):
                raise ValueError(f"expected a mapping for {s!r}, got {value!r}")
            names = [name for name, _ in s]
            extra = set(value) - set(names)
            if extra:
                raise ValueError(f"unknown fields {sorted(extra)} for layout {s!r}")
            missing = [n for n in names if n not in value]
            if missing:
                raise ValueError(f"missing fields {missing} for layout {s!r}")
            items = ((s[name], value[name]) for name in names)
        for field, v in items:
            word |= pack(field.shape, v) << field.offset
        return word
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(value)  # numpy integers
        except (TypeError, ValueError):
            raise TypeError(f"expected an int for {s!r}, got {value!r}") from None
    lo, hi = (-(1 << (s.width - 1)), (1 << (s.width - 1)) - 1) if s.signed else (0, 2**s.width - 1)
    if s.width == 0:
        lo = hi = 0
    if not lo <= value <= hi:
        raise ValueError(f"value {value} does not fit {s!r} (range [{lo}, {hi}])")
    return value & ((1 << s.width) - 1)


def unpack(shape: Any, word: int) -> Any:
    """Inverse of :func:`pack`: ints (sign-extended where signed), dicts and lists."""
    from amaranth.lib import data

    s = _as_layout_or_shape(shape)
    word = int(word)
    if isinstance(s, data.ArrayLayout):
        return [unpack(s[i].shape, word >> s[i].offset) for i in range(s.length)]
    if isinstance(s, data.Layout):
        return {name: unpack(field.shape, word >> field.offset) for name, field in s}
    word &= (1 << s.width) - 1
    if s.signed and s.width and word >> (s.width - 1):
        word -= 1 << s.width
    return word


# ----------------------------------------------------------------------------------------------
# simulator side
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Transfer:
    """One handshake: the decoded payload, its raw bits and the clock cycle of the edge."""

    value: Any
    raw: int
    cycle: int


def _cycle(period_ns: float) -> int:
    from cocotb.utils import get_sim_time

    return int(round(get_sim_time(unit="ns") / period_ns))


def _read_int(handle: Any) -> int:
    return int(handle.value.to_unsigned()) if hasattr(handle.value, "to_unsigned") else int(
        handle.value
    )


class _StreamPort:
    def __init__(self, dut: Any, name: str, clk: Any, shape: Any, period_ns: float) -> None:
        self.dut = dut
        self.name = name
        self.clk = clk
        self.shape = shape
        self.period_ns = float(period_ns)
        try:
            self.payload = getattr(dut, f"{name}__payload")
            self.valid = getattr(dut, f"{name}__valid")
            self.ready = getattr(dut, f"{name}__ready")
        except AttributeError as e:
            raise ValueError(f"{dut._name} has no stream {name!r} ({e})") from None

    def cycle(self) -> int:
        """Current clock cycle number (simulation time / clock period)."""
        return _cycle(self.period_ns)


class StreamSource(_StreamPort):
    """Drive ``<name>__payload/valid`` in order, with random idle cycles.

    Parameters
    ----------
    dut, name, clk:
        The toplevel handle, the stream member name (``"i_x"``) and the clock handle.
    shape:
        Amaranth shape or layout of the payload (for :func:`pack`).
    rng:
        Seeded ``random.Random``; every idle decision draws from it.
    idle_prob:
        Probability that the source idles in a cycle where it could present the next payload.
    period_ns:
        Clock period, to turn simulation time into cycle numbers.
    """

    def __init__(
        self,
        dut: Any,
        name: str,
        clk: Any,
        shape: Any,
        rng: random.Random,
        *,
        idle_prob: float = 0.3,
        period_ns: float = 10.0,
    ) -> None:
        super().__init__(dut, name, clk, shape, period_ns)
        if not 0.0 <= idle_prob < 1.0:
            raise ValueError(f"idle_prob must be in [0, 1), got {idle_prob}")
        self.rng = rng
        self.idle_prob = idle_prob
        self.queue: deque[tuple[Any, int]] = deque()
        self.sent: list[Transfer] = []
        self.valid.value = 0
        self._task: Any = None

    def send(self, value: Any) -> None:
        """Queue one payload (checked and packed now, so bad stimulus fails at once)."""
        self.queue.append((value, pack(self.shape, value)))

    def send_all(self, values: Iterable[Any]) -> None:
        for v in values:
            self.send(v)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being presented."""
        return not self.queue

    def start(self) -> StreamSource:
        import cocotb

        self._task = cocotb.start_soon(self._run())
        return self

    async def wait_idle(self) -> None:
        from cocotb.triggers import RisingEdge

        while self.queue:
            await RisingEdge(self.clk)

    async def _run(self) -> None:
        from cocotb.triggers import RisingEdge

        presenting = False
        while True:
            await RisingEdge(self.clk)
            # Values read at the edge are the ones the flops sampled: a transfer happened
            # if we presented and the DUT was ready.
            if presenting and _read_int(self.ready):
                value, raw = self.queue.popleft()
                self.sent.append(Transfer(value, raw, self.cycle()))
                presenting = False
            if not presenting and self.queue and self.rng.random() >= self.idle_prob:
                presenting = True
            if presenting:
                self.payload.value = self.queue[0][1]
            self.valid.value = int(presenting)


class StreamSink(_StreamPort):
    """Accept from ``<name>__payload/valid``, driving ``<name>__ready`` with random stalls.

    Checks the stream rules on every cycle: once valid is high without ready, valid must stay
    high and the payload must not change until the transfer. Violations are collected in
    :attr:`errors` (a test asserts it is empty).
    """

    def __init__(
        self,
        dut: Any,
        name: str,
        clk: Any,
        shape: Any,
        rng: random.Random,
        *,
        backpressure_prob: float = 0.3,
        period_ns: float = 10.0,
    ) -> None:
        super().__init__(dut, name, clk, shape, period_ns)
        if not 0.0 <= backpressure_prob < 1.0:
            raise ValueError(f"backpressure_prob must be in [0, 1), got {backpressure_prob}")
        self.rng = rng
        self.backpressure_prob = backpressure_prob
        self.received: list[Transfer] = []
        self.errors: list[str] = []
        self.ready.value = 0
        self._task: Any = None

    def start(self) -> StreamSink:
        import cocotb

        self._task = cocotb.start_soon(self._run())
        return self

    async def wait_for(self, count: int, timeout_cycles: int = 100_000) -> None:
        """Wait until ``count`` transfers arrived; raise TimeoutError after ``timeout_cycles``."""
        from cocotb.triggers import RisingEdge

        for _ in range(timeout_cycles):
            if len(self.received) >= count:
                return
            await RisingEdge(self.clk)
        raise TimeoutError(
            f"{self.name}: {len(self.received)} of {count} transfers after {timeout_cycles} cycles"
        )

    async def _run(self) -> None:
        from cocotb.triggers import RisingEdge

        ready = False
        stalled: int | None = None  # raw payload held while valid and not ready
        while True:
            await RisingEdge(self.clk)
            valid = _read_int(self.valid)
            raw = _read_int(self.payload) if valid else 0
            if stalled is not None:
                if not valid:
                    self.errors.append(
                        f"{self.name}: valid dropped before transfer @{self.cycle()}"
                    )
                elif raw != stalled:
                    self.errors.append(
                        f"{self.name}: payload changed {stalled:#x} -> {raw:#x} while stalled "
                        f"@{self.cycle()}"
                    )
            if valid and ready:
                self.received.append(Transfer(unpack(self.shape, raw), raw, self.cycle()))
                stalled = None
            else:
                stalled = raw if valid else None
            ready = self.rng.random() >= self.backpressure_prob
            self.ready.value = int(ready)
