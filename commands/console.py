"""What a long command shows a person: one line per stage, a build progress bar, logs in a file.

The Verilator build, ``make``, g++ and the cocotb simulator are child processes that write to
file descriptors 1 and 2. :func:`logs_to_file` points both at a log file for the duration of a
command and hands the command two file objects that still reach the terminal, so the command's
own lines (and its JSON) are all the terminal shows. :class:`Console` writes the stage lines
with the elapsed time and shows a progress bar of the C++ files compiled during a build.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

__all__ = ["Console", "logged", "logs_to_file", "tail"]


@contextlib.contextmanager
def logs_to_file(path: Path | None) -> Iterator[tuple[TextIO, TextIO]]:
    """Send fds 1 and 2 to ``path`` meanwhile; yield (stdout, stderr) of the terminal.

    ``path=None`` redirects nothing (the verbose mode) and yields ``sys.stdout, sys.stderr``.
    """
    if path is None:
        yield sys.stdout, sys.stderr
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    out = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    err = os.fdopen(os.dup(saved[1]), "w", buffering=1)
    with open(path, "w") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield out, err
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        out.close()
        err.close()


@contextlib.contextmanager
def logged(prefix: str, log: Path | None) -> Iterator[Console]:
    """A :class:`Console` on the terminal while child-process logs go to ``log`` (None: not
    redirected). On a failure other than an argument error the log's last lines are shown."""
    with logs_to_file(log) as (_, err):
        console = Console(err, prefix=prefix)
        if log is not None:
            console.say(f"logs of the build and the simulator: {log}")
        try:
            yield console
        except (TypeError, ValueError):
            raise
        except BaseException:
            if log is not None:
                print(f"--- last lines of {log} ---\n{tail(log)}", file=err, flush=True)
            raise
        console.say("done")


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a text file ('' when it does not exist)."""
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class Console:
    """Stage lines ``[  12.3 s] stage: detail`` on ``stream``, timed from construction.

    Parameters
    ----------
    stream:
        Where the lines go (the terminal's stderr from :func:`logs_to_file`).
    prefix:
        Put before every line (the command's name).
    """

    def __init__(self, stream: TextIO, prefix: str = "") -> None:
        self._stream = stream
        self._prefix = prefix
        self._t0 = time.perf_counter()
        self._bar: _BuildBar | None = None

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def say(self, text: str) -> None:
        """One stage line with the elapsed time."""
        self.stop_progress()
        print(f"{self._prefix}[{self.elapsed:7.1f} s] {text}", file=self._stream, flush=True)

    def stage(self, name: str, build_dir: Path) -> None:
        """The co-simulation runner's stage hook (:func:`aqpim.sim.runner.build_and_run`)."""
        text = {
            "verilog": "generate Verilog",
            "verilog-cached": "Verilog unchanged since the last build (cached)",
            "build": f"Verilator build in {build_dir}",
            "start": "start the simulator",
        }.get(name, name)
        self.say(text)
        if name == "build":
            self._bar = _BuildBar(Path(build_dir), self._stream)

    def stop_progress(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class _BuildBar:
    """A tqdm bar of compiled objects (``*.o``) over generated C++ files (``*.cpp``), polled.

    Verilator writes all its C++ before make starts, so the file counts are a fair measure of
    the compile's progress; a warm build (nothing to compile) ends before the bar appears.
    """

    def __init__(self, build_dir: Path, stream: TextIO) -> None:
        self._dir = build_dir
        self._stream = stream
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="aqpim-build-bar")
        self._thread.start()

    def _run(self) -> None:
        if self._done.wait(3.0):
            return
        # disable=None: no bar when the stream is not a terminal (CI logs stay short).
        with tqdm(total=1, desc="  C++ files compiled", unit="file", file=self._stream,
                  disable=None, leave=False, dynamic_ncols=True) as bar:
            while not self._done.wait(1.0):
                sources = len(list(self._dir.glob("*.cpp")))
                objects = len(list(self._dir.glob("*.o")))
                bar.total = max(sources, objects, 1)
                bar.n = objects
                bar.refresh()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
