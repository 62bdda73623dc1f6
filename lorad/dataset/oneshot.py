"""`lorad prepare`: one subject folder checked, converted, laid out and captioned, no daemon."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lorad.captioning.client import CaptionError, caption_folder, images_to_caption
from lorad.captioning.text import caption_path, prefix_only, write_caption
from lorad.dataset.layout import write_zip
from lorad.dataset.options import PrepareOptions
from lorad.dataset.prepare import prepare_dataset
from lorad.dataset.report import PrepareResult
from lorad.inbox.shape import FolderTooLarge, check_shape
from lorad.settings import CaptionSettings, ConfigError, Settings, load_settings
from lorad.subject import SubjectError, load_subject


class OneShotError(Exception):
    pass


def _settings(config: Path | None) -> Settings:
    """The daemon's configuration if there is one, else its defaults (no [models] table: any
    model name is accepted, as the daemon does on a first start)."""
    try:
        return load_settings(config)
    except ConfigError as error:
        raise OneShotError(str(error)) from None


def prepare_folder(config: Path | None, subject_dir: Path, out: Path, *, token: str | None,
                   caption: bool, make_zip: bool, echo: Callable[[str], None]) -> PrepareResult:
    settings = _settings(config)
    prepare_settings, caption_settings = settings.prepare, settings.caption
    ignore = list(settings.watch.ignore)
    try:  # the daemon's own checks, and its messages: the token, the model, the folder's shape
        check_shape(subject_dir, subject_dir.resolve().name)
        subject = load_subject(subject_dir, settings, name=subject_dir.resolve().name)
        if token is not None:
            subject = subject.model_validate({**subject.model_dump(), "token": token})
    except (FolderTooLarge, SubjectError, ValueError) as error:
        raise OneShotError(str(error)) from None
    assert subject.token
    if out.resolve() == subject_dir.resolve() or subject_dir.resolve() in out.resolve().parents:
        raise OneShotError(f"--out {out} is inside the subject folder; choose a folder outside "
                           "it (the photos are never changed)")
    options = PrepareOptions(token=subject.token, prefix=subject.prefix,
                             repeats=subject.repeats,
                             strict=subject.strict_or(prepare_settings.strict),
                             settings=prepare_settings,
                             ignore=ignore)
    result = prepare_dataset(subject_dir, out, options)
    for line in [*result.problems, *result.warnings]:
        echo(f"  {line}")
    echo(result.message)
    if not result.usable:
        return result
    if caption and subject.captions_or(caption_settings.enabled):
        _caption_with_blip(result.train_dir, subject.prefix, caption_settings, echo)
    else:
        _caption_with_prefix(result.train_dir, subject.prefix, echo)
    echo(f"dataset: {result.train_dir}")
    echo(f"report: {result.report_path}  sheet: {result.sheet_path}")
    if make_zip:
        echo(f"zip: {write_zip(out, out / 'dataset.zip')}")
    return result


def _caption_with_blip(folder: Path, prefix: str, settings: CaptionSettings,
                       echo: Callable[[str], None]) -> None:
    """BLIP writes a caption for every image the user did not caption."""
    echo(f"captioning with {settings.model} ...")
    try:
        outcome = caption_folder(folder, prefix, settings)
    except CaptionError as error:
        raise OneShotError(str(error)) from None
    for warning in outcome.warnings:
        echo(f"  {warning}")


def _caption_with_prefix(folder: Path, prefix: str, echo: Callable[[str], None]) -> None:
    """Captioning off: the prefix alone for every image the user did not caption (as the
    daemon does), so that every image has its .txt."""
    images = images_to_caption(folder)
    for image in images:
        write_caption(caption_path(image), prefix_only(prefix))
    if images:
        echo(f"captioning is off: {len(images)} images without a caption of their own get "
             f"{prefix_only(prefix)!r}")
