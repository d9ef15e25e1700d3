"""The progress display: a bar over the cases, and a line as each ends.

With rich installed the bar is live on a terminal; without it, or when
`quiet` is set, each step is one line on stderr (or nothing).
"""

import sys


class Display:
    """Shows which case runs, how far the run is, and each result."""

    def __init__(self, total: int, quiet: bool = False):
        self.total = total
        self.quiet = quiet
        self.done = 0
        self.progress = None
        self.task = None

    def __enter__(self):
        if self.quiet:
            return self
        try:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )
        except ImportError:
            return self
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
            MofNCompleteColumn(), TimeElapsedColumn(),
            console=Console(stderr=True), refresh_per_second=4)
        self.progress.__enter__()
        self.task = self.progress.add_task("starting", total=self.total)
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def step(self, text: str) -> None:
        """Say what is happening now (a case, or starting a server)."""
        if self.progress is not None:
            self.progress.update(self.task, description=text)
        elif not self.quiet:
            print(f"[{self.done + 1}/{self.total}] {text}", file=sys.stderr,
                  flush=True)

    def note(self, text: str) -> None:
        """A line that stays: a finished case, or a skipped peer."""
        if self.progress is not None:
            self.progress.console.print(text, highlight=False, markup=False)
        elif not self.quiet:
            print(text, file=sys.stderr, flush=True)

    def advance(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress.update(self.task, completed=self.done)
