"""The captioning child's protocol (`python -m lorad.captioning.blip`), defined once for both
sides: the daemon (`lorad.captioning.client`) sends one `Request` on the child's stdin, the
child answers with one event a line on stdout.

Request (one JSON object)::

    {"model": "Salesforce/blip-image-captioning-large", "device": "auto", "precision": "auto",
     "batch_size": 4,
     "generation": {"num_beams": 9, "min_length": 15, "max_length": 75, "no_repeat_ngram_size": 3},
     "remove": ["holding a remote control", ...],
     "jobs": [{"job": 7, "prefix": "alice, ", "images": ["/abs/path/01.png", ...]}, ...]}

Events::

    {"event": "loaded", "model": ..., "device": "cuda:0", "dtype": "float16", "seconds": 4.2}
    {"event": "progress", "job": 7, "done": 4, "total": 20}          after each batch
    {"event": "job_done", "job": 7, "warnings": ["03.png: ..."]}
    {"event": "job_error", "job": 7, "error": "/abs/path/05.png: cannot read the image (...)"}
    {"event": "fatal", "error": "cannot load the BLIP model ..."}     then exit status 2

Each side reads what it receives with `read` or `parse_event`: a malformed message is a
ValueError of one line that names the fields at fault. Only pydantic is imported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field

from lorad.system.jsonchild import Event, Message, read_event


class Generation(Message):
    """The settings passed to `generate` (the prefix is added afterwards, never as a prompt)."""

    num_beams: int
    min_length: int
    max_length: int
    no_repeat_ngram_size: int


class Job(Message):
    model_config = ConfigDict(validate_by_name=True, serialize_by_alias=True)

    job_id: int = Field(alias="job")
    prefix: str
    images: list[Path]  # absolute paths of the PNGs to caption


class Request(Message):
    model: str
    device: str
    precision: str = "auto"
    batch_size: int
    generation: Generation
    remove: list[str]
    jobs: list[Job]


class Loaded(Event):
    event: Literal["loaded"] = "loaded"
    model: str
    device: str
    dtype: str
    seconds: float = 0.0


class Progress(Event):
    event: Literal["progress"] = "progress"
    job: int
    done: int
    total: int


class JobDone(Event):
    event: Literal["job_done"] = "job_done"
    job: int
    warnings: list[str] = Field(default_factory=list)


class JobError(Event):
    event: Literal["job_error"] = "job_error"
    job: int
    error: str


class Fatal(Event):
    event: Literal["fatal"] = "fatal"
    error: str


EVENTS: dict[str, type[Event]] = {
    "loaded": Loaded, "progress": Progress, "job_done": JobDone, "job_error": JobError,
    "fatal": Fatal,
}


def parse_event(data: dict[str, Any]) -> Event | None:
    """The event a line of the child holds; None for a kind this side does not know."""
    return read_event(EVENTS, data)
