"""A tqdm-style progress bar on stderr, drawn the way tqdm draws it when stderr is not a terminal.

Each redraw is "\\r" + the line (padded with spaces over a longer previous line) and no newline;
closing draws once more and ends the line:
`steps:  50%|█████     | 10/20 [01:03<01:03,  6.40s/it, avr_loss=0.111]`
"""

import time

from library.console import Console

BAR_WIDTH = 10
BAR_CHARS = " ▏▎▍▌▋▊▉█"


def format_interval(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def format_number(value: float) -> str:
    """tqdm's compact number: 3 significant digits unless the plain form is shorter."""
    short = f"{value:.3g}".replace("+0", "+").replace("-0", "-")
    plain = str(value)
    return short if len(short) < len(plain) else plain


def _bar(fraction: float) -> str:
    steps = len(BAR_CHARS) - 1
    full, partial = divmod(int(fraction * BAR_WIDTH * steps), steps)
    if full >= BAR_WIDTH:
        return BAR_CHARS[-1] * BAR_WIDTH
    return BAR_CHARS[-1] * full + BAR_CHARS[partial] + " " * (BAR_WIDTH - full - 1)


def format_meter(n: int, total: int, elapsed: float, postfix: str, desc: str = "steps") -> str:
    rate = n / elapsed if n and elapsed > 0 else None
    if rate is None:
        rate_text = "?it/s"
    elif rate < 1:
        rate_text = f"{1 / rate:5.2f}s/it"
    else:
        rate_text = f"{rate:5.2f}it/s"
    tail = f", {postfix}" if postfix else ""
    if not total or n > total:
        return f"{desc}: {n}it [{format_interval(elapsed)}, {rate_text}{tail}]"
    remaining = format_interval((total - n) / rate) if rate else "?"
    fraction = n / total
    return (
        f"{desc}: {fraction * 100:3.0f}%|{_bar(fraction)}| {n}/{total} "
        f"[{format_interval(elapsed)}<{remaining}, {rate_text}{tail}]"
    )


class ProgressBar:
    def __init__(self, total: int, console: Console) -> None:
        self.total = total
        self.console = console
        self.n = 0
        self.postfix = ""
        self.started = time.monotonic()
        self.last_length = 0
        self._draw()

    def step(self, avr_loss: float) -> None:
        self.n += 1
        self.postfix = f"avr_loss={format_number(avr_loss)}"
        self._draw()

    def close(self) -> None:
        self._draw()
        self.console.write_progress("\n")

    def _draw(self) -> None:
        line = format_meter(self.n, self.total, time.monotonic() - self.started, self.postfix)
        padding = " " * max(self.last_length - len(line), 0)
        self.last_length = len(line)
        self.console.write_progress("\r" + line + padding)
