"""What every ``hardprompts`` command shares: the stderr console and the handling of user errors
(one line and exit status 2; an interrupted run, which has said how to resume, status 130)."""

from __future__ import annotations

from functools import wraps

import typer
from rich.console import Console
from rich.text import Text

from hardprompts.errors import HardpromptsError

__all__ = ["err", "user_errors"]

err = Console(stderr=True)


def user_errors(fn):
    """Turn HardpromptsError into a one-line message and exit status 2, an interrupted run
    (which has said what it saved and how to resume) into status 130; keep libraries quiet."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        from hardprompts.interrupts import EXIT_INTERRUPTED
        from hardprompts.runtime import quiet_libraries

        try:
            with quiet_libraries():
                return fn(*args, **kwargs)
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except HardpromptsError as exc:
            # Text, not markup: messages quote user values such as "['a', 'b']" or "hf:x[train]".
            err.print(Text.assemble(("error:", "bold red"), f" {exc}"), soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper
