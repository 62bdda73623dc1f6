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
from lorad.settings import CaptionSettings, ConfigError, PrepareSettings, find_config, load_settings
from lorad.subject import SubjectError, fill_token, read_subject_file


class OneShotError(Exception):
    pass


def _settings(config: Path | None) -> tuple[PrepareSettings, CaptionSettings, list[str]]:
    """The [prepare] and [caption] tables of a configuration if there is one, else defaults."""
    try:
        if find_config(config) is None:
            return PrepareSettings(), CaptionSettings(), []
        settings = load_settings(config)
    except ConfigError as error:
        raise OneShotError(str(error)) from None
    return settings.prepare, settings.caption, list(settings.watch.ignore)


def prepare_folder(config: Path | None, subject_dir: Path, out: Path, *, token: str | None,
                   caption: bool, make_zip: bool, echo: Callable[[str], None]) -> PrepareResult:
    prepare_settings, caption_settings, ignore = _settings(config)
    try:
        subject = read_subject_file(subject_dir)
        if token is not None:
            subject = subject.model_validate({**subject.model_dump(), "token": token})
        fill_token(subject, subject_dir.resolve().name, subject_dir / "lora.toml")
    except (SubjectError, ValueError) as error:
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
