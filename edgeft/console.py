"""What a run shows: edgeft's own lines and progress bars on the console, everything else in the run's log.

Libraries talk a lot (Trainer's dict prints and tqdm bars, ModelOpt's warnings, transformers' notices);
inside ``capture(log_file)`` their stdout, stderr, Python warnings and logging go to the log file only
(also to the console with ``--verbose``), while ``line``/``progress`` write to the console that was
there before. Progress bars are drawn with rich where the console is a terminal; elsewhere (CI, pipes)
a bar prints its start and end as lines.
"""
from __future__ import annotations

import contextlib
import io
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Iterator, TextIO

LOG_FILE = "edgeft.log"


class _Tee(io.TextIOBase):
    """A text stream that writes to the log file, and to ``echo`` too when given (``--verbose``)."""

    def __init__(self, log: TextIO, echo: TextIO | None):
        self.log, self.echo = log, echo

    def write(self, s: str) -> int:
        self.log.write(s)
        if self.echo is not None:
            self.echo.write(s)
        return len(s)

    def flush(self) -> None:
        self.log.flush()
        if self.echo is not None:
            self.echo.flush()

    def isatty(self) -> bool:       # libraries draw no live bars into a log file
        return False


class Console:
    """One per process. ``verbose``: library output is shown as well as logged."""

    def __init__(self) -> None:
        self.verbose = False
        self._out: TextIO | None = None          # the console while capturing
        self._log: TextIO | None = None
        self._live = None                        # the rich Progress being drawn, if any

    @property
    def out(self) -> TextIO:
        return self._out or sys.stderr

    def line(self, msg: str) -> None:
        """One of edgeft's own progress lines: on the console and in the log."""
        if self._live is not None:            # above the live bar, not through it
            self._live.console.print(msg, markup=False, highlight=False, soft_wrap=True)
        else:
            print(msg, file=self.out, flush=True)
        if self._log is not None:
            print(f"{time.strftime('%H:%M:%S')} {msg}", file=self._log, flush=True)

    def detail(self, msg: str) -> None:
        """Detail worth keeping but not worth a console line: the log (and the console with --verbose)."""
        if self._log is not None:
            print(f"{time.strftime('%H:%M:%S')} {msg}", file=self._log, flush=True)
        if self.verbose or self._log is None:
            print(msg, file=self.out, flush=True)

    @contextlib.contextmanager
    def capture(self, log_path: Path) -> Iterator[None]:
        """Route library output to ``log_path`` (appended) for the duration; nests as a no-op."""
        if self._log is not None:
            yield
            return
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as log:
            console = sys.stderr
            tee = _Tee(log, console if self.verbose else None)
            self._out, self._log = console, log
            moved = _point_stream_handlers(tee, (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__))
            old_show = warnings.showwarning
            warnings.showwarning = lambda m, c, f, n, file=None, line=None: tee.write(
                warnings.formatwarning(m, c, f, n, line))
            try:
                with contextlib.redirect_stdout(tee), contextlib.redirect_stderr(tee):
                    yield
            finally:
                warnings.showwarning = old_show
                for handler, stream in moved:
                    handler.setStream(stream)
                self._out = self._log = None

    def bar(self, description: str, total: int | None) -> "_Bar":
        """A progress bar to ``close()`` when done (``progress`` closes it for a ``with`` block)."""
        return _Bar(self, description, total)

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None) -> Iterator["_Bar"]:
        bar = self.bar(description, total)
        try:
            yield bar
        finally:
            bar.close()


class _Bar:
    """A rich progress bar with ETA on a terminal; elsewhere a start line, a line every ``EVERY_S`` seconds
    while it moves (CI logs of long work are not silent for minutes), and an end line."""

    EVERY_S = 30.0

    def __init__(self, console: Console, description: str, total: int | None):
        self.console, self.description, self.total, self.done = console, description, total, 0
        self.t0 = self._said = time.monotonic()
        self._rich = None
        if console.out.isatty():
            from rich.console import Console as RichConsole
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
                TimeRemainingColumn

            self._rich = Progress(TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                  console=RichConsole(file=console.out), transient=True)
            self._task = self._rich.add_task(description, total=total)
            self._rich.start()
            console._live = self._rich
        else:
            console.line(f"  {description}: {total if total is not None else '?'} steps")

    def update(self, done: int, total: int | None = None, note: str | None = None) -> None:
        self.done = done
        if total is not None:
            self.total = total
        if self._rich is not None:
            self._rich.update(self._task, completed=done, total=self.total,
                              description=f"{self.description}{f' ({note})' if note else ''}")
        elif time.monotonic() - self._said >= self.EVERY_S:
            self._said = time.monotonic()
            self.console.line(f"  {self.description}: {done}/{self.total if self.total is not None else '?'} after "
                              f"{format_seconds(self._said - self.t0)}{f' ({note})' if note else ''}")
        if note and self.console._log is not None:
            self.console.detail(f"{self.description}: {done}/{self.total} {note}")

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self.console._live = None
        elapsed = time.monotonic() - self.t0
        self.console.line(f"  {self.description}: {self.done}/{self.total if self.total is not None else '?'} "
                          f"in {format_seconds(elapsed)}")


def format_seconds(s: float) -> str:
    return f"{s:.1f}s" if s < 60 else f"{int(s // 60)}m{int(s % 60):02d}s"


def _point_stream_handlers(stream, old: tuple) -> list:
    """Logging handlers that write to the console (transformers' own, the root's) write to ``stream``."""
    loggers = [logging.getLogger()] + [l for l in logging.Logger.manager.loggerDict.values()
                                       if isinstance(l, logging.Logger)]
    moved = []
    for logger in loggers:
        for h in logger.handlers:
            # logging's last-resort handler reads sys.stderr at each call: redirected with it already
            if type(h) is logging.StreamHandler and h.stream in old:
                moved.append((h, h.setStream(stream)))
    return moved


CONSOLE = Console()
