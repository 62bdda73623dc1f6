"""The prepare child's protocol (`python -m lorad.dataset.child`), defined once for both sides.

The daemon sends one `PrepareRequest` on the child's stdin; the child answers with JSON lines on
stdout: `Progress` events ({"event": "progress", "done", "total"}), then one `Result`
({"event": "result", "result": {...}}, a `Prepared`) or one `Failure` ({"event": "error",
"error"}). Each side reads what it receives with `read` or `parse_event`: a malformed message
is a ValueError of one line that names the fields at fault.

Only pydantic and the settings are imported here: the daemon never loads the image libraries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from lorad.dataset.options import PrepareOptions
from lorad.settings import PrepareSettings
from lorad.system.jsonchild import Event, Message, read_event


class PrepareRequest(Message):
    source: Path  # the subject folder, only read
    dest: Path  # where the dataset, report.json and dataset.png go
    token: str
    prefix: str
    repeats: int | None
    strict: bool
    settings: PrepareSettings
    ignore: list[str]
    faces: bool = False  # look for mirrored faces too ([score] on, lorad[faces] installed)

    def options(self) -> PrepareOptions:
        return PrepareOptions(token=self.token, prefix=self.prefix, repeats=self.repeats,
                              strict=self.strict, settings=self.settings, ignore=self.ignore,
                              faces=self.faces)


class Prepared(Message):
    """What the daemon learns from a preparation (a PrepareResult, as plain data)."""

    usable: bool
    message: str
    accepted: int
    refused: int
    warnings: list[str]
    problems: list[str]
    repeats: int
    train_dir: Path
    report_path: Path
    sheet_path: Path
    fingerprint: str  # the photos' content: lorad.dataset.listing.content_fingerprint


class Progress(Event):
    event: Literal["progress"] = "progress"
    done: int
    total: int


class Result(Event):
    event: Literal["result"] = "result"
    result: Prepared


class Failure(Event):
    event: Literal["error"] = "error"
    error: str


EVENTS: dict[str, type[Event]] = {"progress": Progress, "result": Result, "error": Failure}


def parse_event(data: dict[str, Any]) -> Event | None:
    """The event a line of the child holds; None for a kind this side does not know."""
    return read_event(EVENTS, data)
