"""The training progress bar: epoch, batch, images/s, ETA and loss."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def training_progress(console: Console | None = None, *, transient: bool = False) -> Progress:
    """A rich Progress whose tasks carry the fields `batch`, `ips` and `loss` (see `train.fit`)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("batch {task.fields[batch]}"),
        TextColumn("{task.fields[ips]:.1f} img/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        console=console,
        transient=transient,
    )
