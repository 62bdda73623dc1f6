"""Caption text rules: clean-up of generated captions, the trigger-word prefix, caption files.

Pure text and file handling (no torch, no transformers): the daemon uses it for user-supplied
captions, and the captioning process (`lorad.captioning.blip`) for the captions BLIP generates.

Clean-up, in order:
1. every configured phrase is removed where it stands as whole words, ignoring case (a phrase is a
   regular expression: "with a microphone in (?:his|her) hand");
2. immediately repeated words and short phrases are said once ("a a man" -> "a man");
3. spaces before punctuation, repeated punctuation and punctuation left at either end go, and
   so do a dangling "and"/"or" at the start and "and"/"or"/"with"/an article at the end;
4. whitespace is collapsed to single spaces.

A caption that comes out empty is written as the prefix alone, without its trailing whitespace
("alice,"): the trigger word still labels the image. The captioning process warns about it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from lorad.system.fsutil import atomic_write_text

# A word, or a run of up to three words, said twice or more in a row.
_REPEATED = re.compile(r"\b(\w+(?:\s+\w+){0,2})(?:\s+\1\b)+", re.IGNORECASE)
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([,.;:!?])")
_REPEATED_PUNCTUATION = re.compile(r"([,;:])(?:\s*[,;:])+")
_LEADING_JUNK = re.compile(r"^(?:[\s,.;:!?-]+|(?:and|or)\b)+", re.IGNORECASE)
_TRAILING_JUNK = re.compile(r"(?:[\s,;:-]+|\b(?:and|or|with|a|an|the))+$", re.IGNORECASE)
_SPACES = re.compile(r"\s+")
# Line breaks, tabs, escapes, NUL...: what may not stand in a one-line caption or prompt.
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def compile_phrases(phrases: Iterable[str]) -> list[re.Pattern[str]]:
    """Compile the `caption.remove` phrases; a ValueError names a phrase that is no valid regex."""
    patterns = []
    for phrase in phrases:
        try:
            patterns.append(re.compile(rf"(?<!\w)(?:{phrase})(?!\w)", re.IGNORECASE))
        except re.error as error:
            raise ValueError(
                f"caption.remove: {phrase!r} is not a valid regular expression ({error})"
            ) from None
    return patterns


def _collapse_repeats(text: str) -> str:
    return _REPEATED.sub(r"\1", text)


def _tidy_punctuation(text: str) -> str:
    text = _SPACE_BEFORE_PUNCTUATION.sub(r"\1", text)
    text = _REPEATED_PUNCTUATION.sub(r"\1", text)
    text = _LEADING_JUNK.sub("", text)
    return _TRAILING_JUNK.sub("", text)


def _collapse_spaces(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def clean_caption(text: str, patterns: Iterable[re.Pattern[str]]) -> str:
    """Apply the clean-up rules (module docstring) to one caption; may return ""."""
    for pattern in patterns:
        text = pattern.sub(" ", text)
    text = _collapse_spaces(text)
    text = _collapse_repeats(text)
    text = _tidy_punctuation(text)
    return _collapse_spaces(text)


def has_prefix(text: str, prefix: str) -> bool:
    """Whether `text` already starts with the prefix's words ("alice, " -> "alice"), any case."""
    token = prefix.strip().rstrip(",;:").strip()
    return not token or re.match(rf"\s*{re.escape(token)}(?!\w)", text, re.IGNORECASE) is not None


def apply_prefix(text: str, prefix: str) -> str:
    """`prefix` + `text` on one line, the prefix exactly once: added only where it is missing.

    `apply_prefix("a man", "alice, ")` is "alice, a man"; `apply_prefix("alice, a man", "alice, ")`
    and `apply_prefix("Alice smiling", "alice, ")` keep the text; an empty text gives "alice,".
    """
    text = _collapse_spaces(text)
    if has_prefix(text, prefix):
        return text
    return f"{prefix_only(prefix)} {text}".strip()


def prefix_only(prefix: str) -> str:
    """The caption of an image with no words of its own: the prefix without trailing space."""
    return prefix.rstrip()


def write_caption(path: Path, text: str) -> None:
    """Write a caption file: UTF-8, one line, atomically (a temporary file, then os.replace).

    Every caption file is written here. Line breaks and other control characters become spaces:
    Kohya reads only a caption's first line."""
    atomic_write_text(path, one_line(text) + "\n")


def one_line(text: str) -> str:
    """text on one line: control characters (line breaks, tabs, escapes) and runs of whitespace
    become single spaces."""
    return _collapse_spaces(CONTROL_CHARACTER.sub(" ", text))


def caption_path(image: Path) -> Path:
    """The caption file of an image: `X.png` -> `X.txt`."""
    return image.with_suffix(".txt")
