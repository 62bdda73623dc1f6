"""Where the trainer's words go, as in Kohya.

`print` lines (accelerator.print) go to stdout. Log messages go through rich to stderr
(`[time] LEVEL    message`, wrapped at 80 columns when stderr is not a terminal); with
--console_log_simple they are plain message lines on stdout; with --console_log_file they go to
that file instead of the console. A muted console (the "silent" fault) writes
nothing at all.
"""

import sys
import textwrap
import time

LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
RICH_WIDTH = 80


class Console:
    def __init__(self) -> None:
        self.simple = False
        self.level = LEVELS["INFO"]
        self.log_file: str | None = None
        self.muted = False

    def configure(self, simple: bool, level: str | None, log_file: str | None) -> None:
        self.simple = simple
        self.level = LEVELS[level or "INFO"]
        if log_file:
            self.log_file = log_file
            open(log_file, "w").close()  # a new file per run, as logging.FileHandler(mode="w")

    def print(self, text: str = "") -> None:
        if not self.muted:
            print(text, flush=True)

    def write_progress(self, text: str) -> None:
        """Raw text for the progress bar on stderr: no newline added."""
        if not self.muted:
            sys.stderr.write(text)
            sys.stderr.flush()

    def log(self, level: str, message: str) -> None:
        if self.muted or LEVELS[level] < self.level:
            return
        if self.log_file is not None:
            with open(self.log_file, "a", encoding="utf-8") as f:
                f.write(f"{message}\n")
        elif self.simple:
            print(message, flush=True)
        else:
            sys.stderr.write(_rich_lines(level, message))
            sys.stderr.flush()


def _rich_lines(level: str, message: str) -> str:
    prefix = f"{time.strftime('[%x %X]')} {level:<8} "
    width = RICH_WIDTH - len(prefix)
    lines = textwrap.wrap(message, width, break_on_hyphens=False) or [""]
    indent = " " * len(prefix)
    return "".join(
        (prefix if i == 0 else indent) + line + "\n" for i, line in enumerate(lines)
    )
