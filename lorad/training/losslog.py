"""A training's loss history: `loss.jsonl` in the job's work folder, one line a point.

The train stage appends a point from the progress it already parses, at most one a second, so a
long training stays small (a day of training is under 90 000 short lines); the web page reads it
to draw the loss curve. A line is `{"t": seconds since the epoch, "step": N, "epoch": E,
"loss": L}`; a torn last line (a kill mid-write) is skipped by the reader.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MIN_INTERVAL = 1.0


class LossLog:
    """Appends points to one loss.jsonl, no more often than `interval` seconds."""

    def __init__(self, path: Path, interval: float = MIN_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.interval = interval
        self.clock = clock
        self._last_at: float | None = None
        self._last_step: int | None = None

    def record(self, step: int, epoch: int | None, loss: float | None) -> bool:
        """Append a point unless it is too soon, the loss is unknown or the step did not move.
        True when a point was written."""
        now = self.clock()
        if loss is None or step == self._last_step:
            return False
        if self._last_at is not None and now - self._last_at < self.interval:
            return False
        line = json.dumps({"t": round(time.time(), 2), "step": step, "epoch": epoch,
                           "loss": round(loss, 6)})
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        self._last_at, self._last_step = now, step
        return True


def read_points(path: Path, limit: int = 600) -> list[dict[str, Any]]:
    """The history's points, thinned evenly to at most `limit` (the last one always kept)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    points = []
    for line in text.splitlines():
        try:
            point = json.loads(line)
        except ValueError:
            continue
        if isinstance(point, dict) and isinstance(point.get("step"), int) and isinstance(
                point.get("loss"), int | float):
            points.append(point)
    if len(points) <= limit:
        return points
    every = len(points) / (limit - 1)
    return [points[int(i * every)] for i in range(limit - 1)] + [points[-1]]
