"""Progress bars that read well on a terminal and in a batch job's log.

On a terminal: tqdm. Elsewhere (a log file, a pipe): a plain line at every tenth of
the work and at the end, so a log holds a few readable lines instead of a flood of
carriage returns.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class LogLines:
    """The part of tqdm's interface srjax uses, written as whole lines."""

    def __init__(self, iterable=None, total=None, desc: str = "", unit: str = "it", initial: int = 0,
                 file=None):
        self.iterable, self.desc, self.unit, self.n = iterable, desc, unit, initial
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.file = file or sys.stderr
        self.start, self.postfix, self.closed = time.monotonic(), "", False
        self.next_report = self._next(initial)

    def _next(self, n: int) -> int:
        if not self.total:
            return n + 1
        step = max(1, self.total // 10)
        return (n // step + 1) * step

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def update(self, count: int = 1) -> None:
        self.n += count
        if self.n >= self.next_report and (not self.total or self.n < self.total):
            self._write()
            self.next_report = self._next(self.n)

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def _write(self) -> None:
        total = f"/{self.total}" if self.total else ""
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        postfix = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}{total} {self.unit}{share}, {time.monotonic() - self.start:.0f} s{postfix}",
              file=self.file, flush=True)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._write()


def bar(iterable=None, *, total=None, desc: str = "", unit: str = "it", initial: int = 0, disable: bool = False):
    """A progress bar over ``iterable`` (or updated by hand up to ``total``)."""
    if disable:
        return tqdm(iterable, total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial)
    return LogLines(iterable, total=total, desc=desc, unit=unit, initial=initial)


def close_all() -> None:
    """End the lines of bars an error cut short, so the error starts on its own line."""
    for open_bar in list(getattr(tqdm, "_instances", [])):
        open_bar.close()
