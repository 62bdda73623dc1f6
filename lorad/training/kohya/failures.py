"""Why a Kohya run failed, read from the end of its console output.

Under `accelerate launch` every failure of the training script ends as exit status 1 with a
subprocess.CalledProcessError, so the exit status alone says little: the reasons come from text.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass

from lorad.system.fsutil import FULL_DISK_TEXT


@dataclass(frozen=True)
class Failure:
    # classify() gives disk_full, oom, missing_model, missing_script, no_data, bad_args, refused,
    # crash or no_model; callers may add kinds of their own (a stalled run, say).
    kind: str
    message: str  # one sentence for a person (read on a phone), without a final full stop


_OOM = re.compile(
    r"CUDA out of memory|torch(?:\.cuda)?\.OutOfMemoryError|CUDA error: out of memory"
    r"|CUBLAS_STATUS_ALLOC_FAILED|HIP out of memory|MPS backend out of memory"
)
_TRIED_TO_ALLOCATE = re.compile(r"Tried to allocate ([\d.]+ [KMGT]i?B)")
_MISSING_MODEL = re.compile(
    r'pretrained_model_name_or_path "(?P<path>[^"]*)" is neither a valid local path nor a '
    r"valid repo id"
)
_NO_DATA = "No data found"
# python's own message when the script it is asked to run does not exist.
_MISSING_SCRIPT = re.compile(r"can't open file '(?P<path>[^']*)': \[Errno 2\]")
# Kohya's argument and combination checks, made before it trains: the same on every try.
_CHECK = re.compile(r"^(?:AssertionError|ValueError|ModuleNotFoundError)\b")
_TRAINING_STARTED = "running training"
# argparse prints "usage: ..." and then "prog: error: message" (exit status 2).
_ARGPARSE_ERROR = re.compile(r"^(?!\s)[^:\n]+: error: (?P<message>.+)$", re.MULTILINE)
_EXCEPTION = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Interrupt|Exit)\b.*")
_WRAPPER = re.compile(r"subprocess\.CalledProcessError|^Traceback |^\s*File \"|^\s*raise\b")
_KILLED = re.compile(r"died with <Signals\.(\w+): \d+>")
_BAR = re.compile(r"\d+%\|")
MAX_MESSAGE = 240


def classify(log_tail: str, exit_code: int | None, wrote_model: bool,
             training_started: bool | None = None) -> Failure | None:
    """The failure shown by a run's last output lines, or None for a success (exit 0 + a model).

    exit_code is the trainer's status (negative: killed by that signal; None: unknown);
    wrote_model says whether the final model file exists; training_started whether Kohya printed
    "running training" (None: look for it in the tail). An AssertionError, ValueError or
    ModuleNotFoundError before that is one of Kohya's checks refusing the settings ("refused"),
    which no retry changes.
    """
    if exit_code == 0 and wrote_model:
        return None
    if match := FULL_DISK_TEXT.search(log_tail):
        reason = "quota exceeded" if "122" in match[0] or "quota" in match[0] else "no space left"
        return Failure("disk_full", f"The disk is full: Kohya could not write its files ({reason})")
    if match := _OOM.search(log_tail):
        size = _TRIED_TO_ALLOCATE.search(log_tail[match.start():])
        detail = f" (it tried to allocate {size[1]} more)" if size else ""
        return Failure("oom", f"The GPU ran out of memory{detail}")
    if match := _MISSING_MODEL.search(log_tail):
        return Failure("missing_model",
                       _clip(f"The base model {match['path']!r} was not found; check its path in "
                             "the [models] section of lorad.toml"))
    if match := _MISSING_SCRIPT.search(log_tail):
        return Failure("missing_script",
                       _clip(f"Kohya's training script {match['path']!r} was not found; check "
                             "[kohya] sd_scripts in lorad.toml"))
    if _NO_DATA in log_tail:
        return Failure("no_data", "Kohya found no training images in the prepared dataset, so "
                                  "nothing was trained")
    if "usage:" in log_tail and (match := _ARGPARSE_ERROR.search(log_tail)):
        return Failure("bad_args", _clip(f"Kohya rejected its arguments: {match['message']}"))
    if exit_code == 0:
        return Failure("no_model", "Kohya finished without writing a model file")
    if training_started is None:
        training_started = _TRAINING_STARTED in log_tail
    line = last_error_line(log_tail)
    exited = exit_code is not None and exit_code > 0 and not _KILLED.search(log_tail)
    if exited and not training_started and line and _CHECK.match(line):
        return Failure("refused", _clip(f"Kohya refused the settings: {line}"))
    return Failure("crash", _crash_message(log_tail, exit_code))


def _crash_message(log_tail: str, exit_code: int | None) -> str:
    killed = _KILLED.search(log_tail)
    signal_name = killed[1] if killed else _signal_name(exit_code)
    if signal_name == "SIGKILL":
        return ("Training was killed (SIGKILL), most likely because the computer ran out of "
                "memory (RAM)")
    if signal_name:
        return f"Training was stopped by {signal_name}"
    line = last_error_line(log_tail)
    if line:
        return _clip(f"Training crashed: {line}")
    status = "no exit status" if exit_code is None else f"exit status {exit_code}"
    return f"Training stopped with {status} and printed no error"


def last_error_line(log_tail: str) -> str | None:
    """The last exception line of the trainer itself (accelerate's wrapper error is skipped),
    else the last line that is neither a traceback frame nor a progress bar."""
    lines = [line.strip() for line in log_tail.splitlines()]
    meaningful = [line for line in lines
                  if line and not _WRAPPER.search(line) and not _BAR.search(line)]
    exceptions = [line for line in meaningful if _EXCEPTION.match(line)]
    found = exceptions or meaningful
    return found[-1] if found else None


def _signal_name(exit_code: int | None) -> str | None:
    if exit_code is None or exit_code >= 0:
        return None
    try:
        return signal.Signals(-exit_code).name
    except ValueError:
        return f"signal {-exit_code}"


def _clip(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"
