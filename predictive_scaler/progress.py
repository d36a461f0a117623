"""Progress for long CLI work: a bar on a terminal, a line every 10 % otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """Call with (done, total); cheap enough to call on every step."""

    def __init__(self, label: str, stream: TextIO | None = None, width: int = 30) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._last_shown = -1

    def __call__(self, done: int, total: int) -> None:
        if total <= 0:
            return
        # Redraw at most 200 times on a terminal, 10 times in a log.
        slots = 200 if self.tty else 10
        slot = done * slots // total
        if slot == self._last_shown and done < total:
            return
        self._last_shown = slot
        elapsed = time.monotonic() - self.started
        eta = elapsed / done * (total - done) if done else 0.0
        fraction = done / total
        if self.tty:
            filled = int(self.width * fraction)
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(
                f"\r{self.label} [{bar}] {100 * fraction:5.1f}% {elapsed:5.0f}s eta {eta:4.0f}s"
            )
            if done >= total:
                self.stream.write("\n")
        else:
            self.stream.write(f"{self.label}: {100 * fraction:.0f}% ({elapsed:.0f}s)\n")
        self.stream.flush()
