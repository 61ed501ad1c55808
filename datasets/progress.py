"""Progress on stderr that suits where stderr goes: a live tqdm bar on a terminal; one line
per finished pass elsewhere (a log file, a pipe), never carriage-return redraws."""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO

from tqdm import tqdm


class Progress:
    """Counts steps of one pass (an epoch, a conversion). On a terminal it draws a tqdm bar
    (removed when done); elsewhere it prints `<desc>: <n> <unit>s in <t> s` once, at close.

    desc: what the pass is, e.g. `train 3`; total: expected steps (for the bar), if known;
    show: False draws and prints nothing (e.g. on DDP ranks other than 0); stream: where it
    writes (stderr by default).
    """

    def __init__(self, desc: str, total: int | None = None, unit: str = "batch", show: bool = True,
                 stream: TextIO | None = None) -> None:
        self.desc, self.unit, self.show = desc, unit, show
        self.stream = stream if stream is not None else sys.stderr
        self.count, self.start, self.closed = 0, time.perf_counter(), False
        self.bar = None
        if show and _is_terminal(self.stream):
            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, file=self.stream)

    def update(self, n: int = 1) -> None:
        self.count += n
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
        elif self.show:
            plural = "" if self.count == 1 else ("es" if self.unit.endswith(("s", "ch")) else "s")
            print(f"{self.desc}: {self.count} {self.unit}{plural} in {time.perf_counter() - self.start:.1f} s",
                  file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(items: Iterable, desc: str, total: int | None = None, unit: str = "batch",
             show: bool = True, stream: TextIO | None = None) -> Iterator:
    """Yield `items` while counting them with a `Progress` (its line is printed only when
    every item was taken)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    bar = Progress(desc, total, unit, show, stream)
    for item in items:
        yield item
        bar.update()
    bar.close()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):   # closed or file-like objects without a descriptor
        return False
