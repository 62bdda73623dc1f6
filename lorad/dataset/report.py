"""What a preparation concludes: `judge` decides whether the dataset is usable (the checks'
problems, strict mode) and says so in a `PrepareResult`; `write_report` writes report.json,
every file's verdict, the checks and the summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorad.dataset.checks import Checks
from lorad.dataset.image import FORMAT_NAMES
from lorad.dataset.layout import TRAIN_ROOT, write_json
from lorad.dataset.listing import NOT_AN_IMAGE, Entry, shown
from lorad.dataset.options import PrepareOptions

REPORT = "report.json"
SHEET = "dataset.png"
REPEAT_BUDGET = 400  # the guide: repeats = 400 / number of images


@dataclass
class PrepareResult:
    usable: bool
    message: str  # one sentence: why refused, or "N images ready (M refused, K warnings)"
    accepted: int
    refused: int
    warnings: list[str]  # human lines, each naming its file
    problems: list[str]  # refused files and dataset-level refusals, each naming its file
    repeats: int
    train_dir: Path  # dest/training_images/<repeats>_<token>
    report_path: Path
    sheet_path: Path


def judge(
    entries: list[Entry], accepted: list[Entry], checks: Checks, options: PrepareOptions, dest: Path
) -> PrepareResult:
    """Usable or not, and why: the checks' problems refuse the set; in strict mode, so do any
    warning and any refused file."""
    refused = [entry for entry in entries if entry.status == "refused"]
    warnings = checks.warnings + [
        f"{shown(entry.rel)} {warning}" for entry in entries for warning in entry.warnings
    ]
    problems = checks.problems + [f"{shown(entry.rel)} {entry.reason}" for entry in refused]
    if not accepted:  # then what was dropped instead of photos is worth naming
        problems += [f"{shown(entry.rel)} is not a photo: lorad reads {FORMAT_NAMES} files"
                     for entry in entries if entry.reason == NOT_AN_IMAGE]
    strict_stop = options.strict and not checks.problems and bool(warnings or refused)
    if strict_stop:
        problems = [
            f"strict mode is on and there are {len(warnings)} warnings and {len(refused)} "
            "refused files: fix them, or turn strict off",
            *problems,
            *warnings,
        ]
    usable = not checks.problems and not strict_stop
    if usable:
        message = f"{len(accepted)} images ready ({len(refused)} refused, {len(warnings)} warnings)"
    else:
        message = _refusal(problems)
    repeats = options.repeats or max(1, REPEAT_BUDGET // max(1, len(accepted)))
    return PrepareResult(
        usable=usable,
        message=message,
        accepted=len(accepted),
        refused=len(refused),
        warnings=warnings,
        problems=problems,
        repeats=repeats,
        train_dir=dest / TRAIN_ROOT / f"{repeats}_{options.token}",
        report_path=dest / REPORT,
        sheet_path=dest / SHEET,
    )


def _refusal(problems: list[str]) -> str:
    others = len(problems) - 1
    # The others are listed after this line (error.txt, lorad show, lorad prepare), once each.
    more = f" (and {others} more problem{'s' if others > 1 else ''})" if others else ""
    return f"The dataset cannot be used: {problems[0]}{more}"


def write_report(
    source: Path, options: PrepareOptions, result: PrepareResult, entries: list[Entry],
    checks: Checks,
) -> None:
    """report.json at result.report_path: the result, every listed file, the checks."""
    write_json(result.report_path, _report(source, options, result, entries, checks))


def _report(
    source: Path, options: PrepareOptions, result: PrepareResult, entries: list[Entry],
    checks: Checks,
) -> dict[str, Any]:
    return {
        "source": str(source),
        "token": options.token,
        "prefix": options.prefix,
        "repeats": result.repeats,
        "strict": options.strict,
        "usable": result.usable,
        "message": result.message,
        "summary": {
            "images": sum(entry.status in ("accepted", "refused") for entry in entries),
            "accepted": result.accepted,
            "refused": result.refused,
            "ignored": sum(entry.status == "ignored" for entry in entries),
            "warnings": len(result.warnings),
        },
        "problems": result.problems,
        "warnings": result.warnings,
        "checks": checks.report,
        "settings": options.settings.model_dump(),
        "files": [_file_report(entry) for entry in entries],
    }


def _file_report(entry: Entry) -> dict[str, Any]:
    verdict = entry.verdict
    before = verdict.size_before if verdict and verdict.size_before else (None, None)
    after = verdict.size_after if verdict and verdict.size_after else (None, None)
    return {
        "source": entry.rel,
        "output": entry.output,
        "status": entry.status,
        "reason": entry.reason or None,
        "warnings": entry.warnings,
        "format": verdict.format or None if verdict else None,
        "width_before": before[0],
        "height_before": before[1],
        "orientation": verdict.orientation if verdict else None,
        "width_after": after[0],
        "height_after": after[1],
        "sharpness": verdict.sharpness if verdict else None,
        "phash": verdict.phash or None if verdict else None,
        "phash_mirror": verdict.phash_mirror or None if verdict else None,
        "caption_file": entry.caption_file,
        "user_caption": entry.caption is not None,
        "checks": entry.checks,
    }
