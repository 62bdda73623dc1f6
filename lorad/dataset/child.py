"""Preparation in a child process: `python -m lorad.dataset.child` reads a request on stdin, runs
`lorad.dataset.prepare.prepare_dataset` (which converts in a process pool) and reports on stdout.

The daemon never imports the image libraries: they, and the memory of a preparation, go away
with the child. Events: {"event": "progress", "done", "total"}, then {"event": "result", ...}
with the PrepareResult's fields, or {"event": "error", "error"}.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lorad.settings import PrepareSettings
from lorad.system.jsonchild import JsonChild, Protocol, describe_exit


@dataclass
class Prepared:
    """What the daemon learns from a preparation (a PrepareResult, as plain data)."""

    usable: bool
    message: str
    accepted: int
    refused: int
    warnings: list[str]
    problems: list[str]
    repeats: int
    train_dir: str
    report_path: str
    sheet_path: str
    fingerprint: str  # the photos' content: lorad.dataset.listing.content_fingerprint


class PrepareFailed(Exception):
    """The preparation process itself failed (not the photos): the message says how."""


def request(source: Path, dest: Path, *, token: str, prefix: str, repeats: int | None,
            strict: bool, settings: PrepareSettings, ignore: list[str]) -> dict[str, Any]:
    return {"source": str(source), "dest": str(dest), "token": token, "prefix": prefix,
            "repeats": repeats, "strict": strict, "settings": settings.model_dump(),
            "ignore": ignore}


def run_preparer(req: dict[str, Any], *, python: str = "",
                 on_progress: Callable[[int, int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 spawn: Callable[..., Any] | None = None) -> Prepared:
    child = JsonChild(python, "lorad.dataset.child", None, **({"spawn": spawn} if spawn else {}))
    result: Prepared | None = None
    error: str | None = None
    try:
        child.send(req)
        for event in child.events(should_stop):
            kind = event.get("event")
            if kind == "progress" and on_progress:
                on_progress(event["done"], event["total"])
            elif kind == "result":
                result = Prepared(**event["result"])
            elif kind == "error":
                error = event["error"]
    except BaseException:
        child.terminate()
        raise
    finally:
        returncode = child.finish()
    if result is None:
        detail = error or f"it {describe_exit(returncode)}:\n{child.stderr_text()}"
        raise PrepareFailed(f"the preparation process failed: {detail}")
    return result


def main() -> None:
    from lorad.dataset.listing import content_fingerprint
    from lorad.dataset.options import PrepareOptions
    from lorad.dataset.prepare import prepare_dataset

    protocol = Protocol()
    req = protocol.request()
    options = PrepareOptions(token=req["token"], prefix=req["prefix"], repeats=req["repeats"],
                             strict=req["strict"],
                             settings=PrepareSettings.model_validate(req["settings"]),
                             ignore=req["ignore"])
    try:
        result = prepare_dataset(Path(req["source"]), Path(req["dest"]), options,
                                 progress=lambda d, t: protocol.emit("progress", done=d, total=t))
    except OSError as error:
        protocol.emit("error", error=f"{error.filename or ''} {error.strerror or error}".strip())
        raise SystemExit(1) from None
    data = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(result).items()}
    data["fingerprint"] = content_fingerprint(Path(req["source"]), req["ignore"])
    protocol.emit("result", result=data)


if __name__ == "__main__":
    main()
