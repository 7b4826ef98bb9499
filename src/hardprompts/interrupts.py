"""Ctrl-C and SIGTERM during training: finish the step, save it, say how to resume.

While :func:`deferred_interrupts` is active (the training loop's steps), the first SIGINT or
SIGTERM only sets :attr:`StopRequest.signal`; the loop finishes the step in progress, writes a
checkpoint so that no finished step is lost, prints one line (what was saved and the exact
command that resumes, :func:`resume_command`) and raises :class:`RunInterrupted`, which the
command line turns into exit status 130. A second signal abandons the step at once (a plain
``KeyboardInterrupt``: the steps since the last checkpoint are lost, and the message says so).

Outside the main thread (a Ray worker, a thread of the user's program) signals cannot be caught,
and the block runs with the process' own handlers.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: Exit status of an interrupted command (128 + SIGINT, what shells report for Ctrl-C).
EXIT_INTERRUPTED = 130
#: Commands of the ``hardprompts`` CLI that run the training loop.
_TRAINING_COMMANDS = ("tune", "demo", "sweep")


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by SIGINT/SIGTERM after saving its last finished step (message: that line)."""


@dataclass
class StopRequest:
    """Set by the signal handler: the signal number asking the run to stop (0: none)."""

    signal: int = 0

    @property
    def requested(self) -> bool:
        return self.signal != 0


@contextlib.contextmanager
def deferred_interrupts(note: str = "") -> Iterator[StopRequest]:
    """Within the block, the first SIGINT/SIGTERM sets the yielded request instead of raising;
    a second one raises ``KeyboardInterrupt`` at once. ``note`` is printed at the first one."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def handler(signum: int, frame) -> None:
        if request.requested:  # the second one: stop now
            restore()
            raise KeyboardInterrupt
        request.signal = signum
        if note:
            from hardprompts.progress import console

            console.print(note, highlight=False, soft_wrap=True)

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield request
    finally:
        restore()


def resume_command(out_dir: str | Path) -> str:
    """The command that continues the run in ``out_dir``: this command line with ``--resume``
    (``demo`` also with ``--out``, so that it names this run; ``sweep`` as it is: a sweep
    resumes its unfinished cells by itself). Outside the CLI: the Python call."""
    argv = sys.argv[1:]
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in _TRAINING_COMMANDS:
        return f"hardprompts.training.run(config, resume=True) with out_dir {str(out_dir)!r}"
    program = sys.argv[0] if Path(sys.argv[0]).name == "hardprompts" else "hardprompts"
    if command != "sweep":
        if "--resume" not in argv:
            argv = [*argv, "--resume"]
        given_out = any(a == "--out" or a.startswith("--out=") for a in argv)
        if command == "demo" and not given_out:
            argv = [*argv, "--out", str(out_dir)]
    return shlex.join([program, *argv])
