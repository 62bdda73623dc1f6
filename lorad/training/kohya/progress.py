"""Reading Kohya's console output: lines out of a byte stream, and training progress out of lines.

Kohya prints `num epochs / epoch数: N`, `total optimization steps / 学習ステップ数: T` and
`epoch i/N` on stdout, and redraws a tqdm bar on stderr with `\\r` and no newline:
`steps:  50%|█████     | 10/20 [01:03<01:03,  6.40s/it, avr_loss=0.111]`. Run Kohya with
PYTHONUNBUFFERED=1; the tracker copes with stdout and stderr read through separate pipes (their
lines then interleave a little out of order).

A run started with --resume draws its bar from 0 against the full total, so the overall step is
counted from the epoch lines (see ProgressTracker). A run that continues an earlier LoRA with
--network_weights counts its epochs from 1: Progress.shifted() and describe(epoch_offset=...)
report the real ones.
"""

from __future__ import annotations

import codecs
import contextlib
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class LineSplitter:
    """Feed it chunks of a stream; it returns the complete lines, split at \\r, \\n and \\r\\n.

    Empty lines are dropped (every tqdm redraw starts with \\r). Bytes are decoded as UTF-8 even
    when a character is split across chunks. A line longer than max_line is cut there.
    """

    def __init__(self, max_line: int = 64 * 1024) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""
        self._max_line = max_line

    def feed(self, chunk: bytes | str) -> list[str]:
        text = self._decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        *lines, self._partial = _LINE_BREAK.split(self._partial + text)
        while len(self._partial) > self._max_line:
            lines.append(self._partial[: self._max_line])
            self._partial = self._partial[self._max_line :]
        return [line for line in lines if line]

    def flush(self) -> list[str]:
        """The last, unterminated line (if any), at the end of the stream."""
        rest = self._partial + self._decoder.decode(b"", final=True)
        self._partial = ""
        return [rest] if rest else []


@dataclass(frozen=True)
class Progress:
    epoch: int | None  # the epoch in progress, 1-based; None before the first epoch line
    epochs: int | None
    step: int  # optimisation steps done over the whole training
    total_steps: int | None
    fraction: float  # 0..1
    loss: float | None  # Kohya's moving average (avr_loss)
    speed_it_s: float | None  # steps per second
    eta_seconds: int | None

    @property
    def steps_per_epoch(self) -> float | None:
        return self.total_steps / self.epochs if self.total_steps and self.epochs else None

    @property
    def epoch_fraction(self) -> float:
        """How much of the epoch in progress is done, 0..1."""
        per_epoch = self.steps_per_epoch
        if not per_epoch or self.epoch is None:
            return 0.0
        return min(max((self.step - (self.epoch - 1) * per_epoch) / per_epoch, 0.0), 1.0)

    def seconds_to_epoch_end(self) -> float | None:
        """Seconds until the epoch in progress ends (and Kohya saves it), if known."""
        per_epoch = self.steps_per_epoch
        if not per_epoch or self.epoch is None or not self.speed_it_s:
            return None
        return max(self.epoch * per_epoch - self.step, 0) / self.speed_it_s

    def shifted(self, epoch_offset: int, epochs_total: int | None = None) -> Progress:
        """The same progress counted in real epochs, for a run that continues after epoch_offset
        finished ones (--network_weights counts from 1 again); epochs_total is the real last."""
        per_epoch = self.steps_per_epoch
        epochs = epochs_total or (self.epochs + epoch_offset if self.epochs else None)
        if not per_epoch or not epochs:
            return replace(self, epoch=self.epoch and self.epoch + epoch_offset, epochs=epochs)
        step = round(self.step + epoch_offset * per_epoch)
        total = round(epochs * per_epoch)
        return replace(
            self,
            epoch=self.epoch and self.epoch + epoch_offset,
            epochs=epochs,
            step=step,
            total_steps=total,
            fraction=min(step / total, 1.0),
            eta_seconds=round((total - step) / self.speed_it_s) if self.speed_it_s else None,
        )

    def describe(self, epoch_offset: int = 0, epochs_total: int | None = None) -> str:
        """One line for people: "epoch 2/6 · step 130/600 · loss 0.112 · 1.92 it/s · ETA 4m05s".

        With epoch_offset (and epochs_total), in real epochs: see shifted()."""
        if epoch_offset or epochs_total:
            return self.shifted(epoch_offset, epochs_total).describe()
        parts = []
        if self.epoch is not None and self.epochs is not None:
            parts.append(f"epoch {self.epoch}/{self.epochs}")
        if self.total_steps:
            parts.append(f"step {self.step}/{self.total_steps}")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.3f}")
        if self.speed_it_s:
            parts.append(f"{self.speed_it_s:.2f} it/s" if self.speed_it_s >= 1
                         else f"{1 / self.speed_it_s:.2f} s/it")
        if self.eta_seconds is not None:
            parts.append(f"ETA {format_duration(self.eta_seconds)}")
        return " · ".join(parts) or "starting"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def format_duration(seconds: float) -> str:
    """45s, 4m05s, 1h02m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


_NUM_EPOCHS = re.compile(r"^num epochs\b.*?[:=]\s*(\d+)$")
_TOTAL_STEPS = re.compile(r"^total optimization steps\b.*?[:=]\s*(\d+)$")
_EPOCH = re.compile(r"^epoch (\d+)/(\d+)$")
_SAVED = re.compile(r"^saving checkpoint: (.+)$")
_ANY_BAR = re.compile(r"\d+%\|[^|]*\|\s*\d+/\d+")
# The training bar only ("steps:"), not "validation steps:" or "caching latents:".
_BAR = re.compile(
    r"(?<![\w ])steps:\s*\d+%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)\s*"
    r"\[[^<\]]*<[^,\]]*,\s*(?:\?|(?P<rate>[\d.]+(?:e[+-]?\d+)?))(?P<unit>it/s|s/it)"
    r"(?P<postfix>[^\]]*)\]"
)
_LOSS = re.compile(r"\bavr_loss=([-+\w.]+)")


class ProgressTracker:
    """Feed it Kohya's output line by line; snapshot() says how far this run has come.

    The overall step is anchored at the first epoch line: (that epoch - 1) * steps per epoch plus
    the bar's advance since then. This holds for a --resume run, whose bar starts at 0 in a later
    epoch, and it does not drift when stdout and stderr arrive slightly out of order.
    """

    def __init__(self) -> None:
        self.checkpoints = 0  # "saving checkpoint" lines seen
        self.saved_files: list[str] = []  # their paths, in order
        self.model_saved = False  # "model saved.": Kohya finished the training
        self.training_started = False  # "running training": Kohya's checks are behind it
        self._epochs: int | None = None
        self._total: int | None = None
        self._epoch: int | None = None
        self._first_epoch: tuple[int, int] | None = None  # (epoch, bar step at its line)
        self._bar_n = 0
        self._bar_total: int | None = None
        self._loss: float | None = None
        self._speed: float | None = None

    def feed(self, line: str) -> bool:
        """Take one line; True when it is a progress-bar redraw (callers may thin those out)."""
        text = line.strip()
        if match := _BAR.search(text):
            self._read_bar(match)
        elif match := _EPOCH.match(text):
            self._epoch, self._epochs = int(match[1]), int(match[2])
            if self._first_epoch is None:
                self._first_epoch = (self._epoch, self._bar_n)
        elif match := _NUM_EPOCHS.match(text):
            self._epochs = int(match[1])
        elif match := _TOTAL_STEPS.match(text):
            self._total = int(match[1])
        elif match := _SAVED.match(text):
            self.checkpoints += 1
            self.saved_files.append(match[1])
        elif text == "model saved.":
            self.model_saved = True
        elif text.startswith("running training"):
            self.training_started = True
        return _ANY_BAR.search(text) is not None

    def _read_bar(self, match: re.Match[str]) -> None:
        self._bar_n, self._bar_total = int(match["n"]), int(match["total"])
        if match["rate"]:
            rate = float(match["rate"])
            self._speed = rate if match["unit"] == "it/s" else (1 / rate if rate else None)
        if loss := _LOSS.search(match["postfix"]):
            with contextlib.suppress(ValueError):
                self._loss = float(loss[1])

    def snapshot(self) -> Progress:
        total, epochs = self._total or self._bar_total, self._epochs
        step = self._bar_n
        if total and epochs and self._epoch and self._first_epoch:
            per_epoch = total / epochs
            first, bar_at_first = self._first_epoch
            step_float = (first - 1) * per_epoch + self._bar_n - bar_at_first
            # Stay inside the epoch that the last epoch line announced.
            step_float = min(max(step_float, (self._epoch - 1) * per_epoch),
                             self._epoch * per_epoch)
            step = round(step_float)
        if total:
            step = min(step, total)
        eta = round((total - step) / self._speed) if total and self._speed else None
        return Progress(
            epoch=self._epoch,
            epochs=epochs,
            step=step,
            total_steps=total,
            fraction=step / total if total else 0.0,
            loss=self._loss,
            speed_it_s=self._speed,
            eta_seconds=eta,
        )
