"""Jobs for a real fit pool in tests, in a module of their own that imports next to nothing:
a spawned worker imports the module of every function it runs, and a test module would bring
the whole controller (and seconds of start-up) with it."""

from __future__ import annotations

import os
import signal
import time


def answer() -> int:
    return 42


def die() -> int:
    os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does
    return 0


def hang() -> int:
    time.sleep(600)
    return 0


def niceness() -> int:
    return os.nice(0)
