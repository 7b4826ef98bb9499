"""Live progress bars (rich) for training and scoring; silent when disabled or not a terminal."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


class TrainProgress:
    """Step bar showing mean reward, the best dev score so far and steps per second."""

    def __init__(
        self,
        total: int,
        start: int,
        *,
        enabled: bool = True,
        label: str = "train",
        score_name: str = "accuracy",
    ) -> None:
        self.enabled = enabled
        self.score_label = "acc" if score_name == "accuracy" else score_name
        self.progress = Progress(
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
        )
        self.task = self.progress.add_task(label, total=total, completed=start, info="")
        self.start = start

    def __enter__(self) -> TrainProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def update(
        self, step: int, values: dict[str, float], best: dict | None, usage: str | None = None
    ) -> None:
        info = []
        for key in ("charts/mean_reward", "rewards/mean", "charts/reward"):
            if key in values:
                info.append(f"reward {values[key]:.2f}")
                break
        if best is not None:
            info.append(f"best dev {self.score_label} {best['score']:.3f}")
        elapsed = self.progress.tasks[0].elapsed or 0.0
        if elapsed > 0:
            info.append(f"{(step - self.start) / elapsed:.2f} steps/s")
        if usage:
            info.append(f"target: {usage}")
        self.progress.update(self.task, completed=step, info="  ".join(info))


class CountProgress:
    """A plain bar over a count of items (e.g. scored prompt-example pairs)."""

    def __init__(self, total: int, label: str, *, enabled: bool = True) -> None:
        self.progress = Progress(
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=not enabled,
            transient=True,
        )
        self.task = self.progress.add_task(label, total=total)

    def __enter__(self) -> CountProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def advance(self, n: int) -> None:
        self.progress.advance(self.task, n)


class GridProgress:
    """One bar for a sweep's grid: cells done / running / failed / queued, and notes above it."""

    def __init__(self, total: int, *, enabled: bool = True) -> None:
        self.progress = Progress(
            TextColumn("[bold]sweep"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not enabled,
        )
        self.task = self.progress.add_task("sweep", total=total, info="")

    def __enter__(self) -> GridProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def update(self, done: int, running: int, failed: int, queued: int) -> None:
        info = f"done {done}  running {running}  failed {failed}  queued {queued}"
        self.progress.update(self.task, completed=done + failed, info=info)

    def note(self, text: str) -> None:
        """A line printed above the bar (e.g. a failed cell and its error)."""
        self.progress.console.print(text, highlight=False, markup=False, soft_wrap=True)
