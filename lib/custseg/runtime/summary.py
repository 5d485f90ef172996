"""What a stage did, printed for people and kept for the run summary."""

from __future__ import annotations

import datetime as dt
import sys
import threading
import time
from dataclasses import dataclass, field

# print() writes the text and the newline separately, so lines from threads could interleave
_PRINTING = threading.Lock()


@dataclass
class StageSummary:
    """Rows in, rows out per table, rows quarantined by reason, and time taken."""

    stage: str
    rows_in: int = 0
    rows_out: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    _steps: list[tuple[float, str]] = field(default_factory=list, repr=False)

    def step(self, message: str) -> None:
        """Print a step of a long stage as it starts, so a long stage is never silent."""
        now = dt.datetime.now().isoformat(sep=" ", timespec="seconds")
        with _PRINTING:
            sys.stdout.write(f"{now} [{self.stage}]   {message}\n")
            sys.stdout.flush()
        self._steps.append((time.time(), message))

    def lines(self) -> list[str]:
        """The summary as printable lines."""
        out = [f"[{self.stage}] rows in: {self.rows_in:,}"]
        for table, n in self.rows_out.items():
            out.append(f"[{self.stage}]   -> {table}: {n:,}")
        if self.quarantined:
            total = sum(self.quarantined.values())
            out.append(f"[{self.stage}]   quarantined: {total:,}")
            for reason, n in sorted(self.quarantined.items(), key=lambda kv: -kv[1]):
                out.append(f"[{self.stage}]     {reason}: {n:,}")
        for note in self.notes:
            out.append(f"[{self.stage}]   {note}")
        for alert in self.alerts:
            out.append(f"[{self.stage}]   ALERT {alert}")
        out.append(f"[{self.stage}] done in {self.seconds:.1f} s")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())
