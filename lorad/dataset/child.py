"""Preparation in a child process: `python -m lorad.dataset.child` reads a `PrepareRequest` on
stdin, runs `lorad.dataset.prepare.prepare_dataset` (which converts in a process pool) and
reports on stdout (`lorad.dataset.protocol` defines both).

The daemon never imports the image libraries: they, and the memory of a preparation, go away
with the child.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any, NoReturn

from lorad.dataset.protocol import (
    Failure,
    Prepared,
    PrepareRequest,
    Progress,
    Result,
    parse_event,
)
from lorad.system.jsonchild import JsonChild, Protocol, describe_exit


class PrepareFailed(Exception):
    """The preparation process itself failed (not the photos): the message says how."""


def run_preparer(req: PrepareRequest, *, python: str = "",
                 on_progress: Callable[[int, int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 spawn: Callable[..., Any] | None = None) -> Prepared:
    child = JsonChild(python, "lorad.dataset.child", None, **({"spawn": spawn} if spawn else {}))
    result: Prepared | None = None
    error: str | None = None
    try:
        child.send(req.model_dump(mode="json"))
        for data in child.events(should_stop):
            event = parse_event(data)
            if isinstance(event, Progress) and on_progress:
                on_progress(event.done, event.total)
            elif isinstance(event, Result):
                result = event.result
            elif isinstance(event, Failure):
                error = event.error
    except BaseException:
        child.terminate()
        raise
    finally:
        returncode = child.finish()
    if result is None:
        detail = error or f"it {describe_exit(returncode)}:\n{child.stderr_text()}"
        raise PrepareFailed(f"the preparation process failed: {detail}")
    return result


def _fail(protocol: Protocol, error: str) -> NoReturn:
    Failure(error=error).send(protocol.emit)
    raise SystemExit(1)


def main() -> None:
    from lorad.dataset.listing import content_fingerprint
    from lorad.dataset.prepare import prepare_dataset

    protocol = Protocol()
    try:
        req = PrepareRequest.read(protocol.request())
    except ValueError as error:
        _fail(protocol, f"lorad.dataset.child: unusable request on stdin ({error})")
    try:
        result = prepare_dataset(
            req.source, req.dest, req.options(),
            progress=lambda done, total: Progress(done=done, total=total).send(protocol.emit),
        )
    except OSError as error:
        _fail(protocol, f"{error.filename or ''} {error.strerror or error}".strip())
    fingerprint = content_fingerprint(req.source, req.ignore)
    Result(result=Prepared(**asdict(result), fingerprint=fingerprint)).send(protocol.emit)


if __name__ == "__main__":
    main()
