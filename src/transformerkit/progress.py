"""Progress on stderr: a live tqdm bar where someone watches it, plain lines where it is logged.

A bar redraws itself with carriage returns. On a terminal that is one line that moves; written
to a file (`make demo > log 2>&1`, a CI log) it is thousands of updates on one line. So a bar is
shown only where stderr is a terminal (or a notebook draws tqdm's widget); elsewhere callers
print one plain line now and then (the trainer: one per log interval) with `note`.
"""
from __future__ import annotations

import sys
from typing import TextIO

import tqdm.autonotebook
import tqdm.std
from tqdm.auto import tqdm as auto_tqdm


def live(stream: TextIO | None = None) -> bool:
    """Whether a redrawing bar can be shown on ``stream`` (default: stderr)."""
    if tqdm.autonotebook.tqdm is not tqdm.std.tqdm:     # a notebook: tqdm.auto draws a widget, not '\r'
        return True
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def bar(iterable=None, *, total: int | None = None, initial: int = 0, desc: str | None = None,
        enabled: bool = True) -> auto_tqdm:
    """A tqdm bar on stderr, turned off (it still counts and iterates) where it cannot be shown live."""
    return auto_tqdm(iterable, total=total, initial=initial, desc=desc, dynamic_ncols=True,
                     disable=not (enabled and live()))


def note(line: str) -> None:
    """One plain progress line on stderr, flushed so a log file that is followed (tail -f) shows it."""
    print(line, file=sys.stderr, flush=True)
