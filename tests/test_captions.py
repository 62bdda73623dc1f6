"""Caption clean-up rules and the prefix (pure text: no model, no child process)."""

from __future__ import annotations

import pytest

from lorad.captioning.text import (
    apply_prefix,
    caption_path,
    clean_caption,
    compile_phrases,
    has_prefix,
    prefix_only,
    write_caption,
)
from lorad.sections import DEFAULT_CAPTION_REMOVE

DEFAULTS = compile_phrases(DEFAULT_CAPTION_REMOVE)


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("a man holding a remote control in front of a wall", "a man in front of a wall"),
        ("a woman with a microphone in her hand and smiling", "a woman and smiling"),
        ("arafed man sitting on a bench", "man sitting on a bench"),
        ("there is a woman standing next to a tree", "a woman standing next to a tree"),
        ("a a man with with a hat", "a man with a hat"),
        ("a man a man in a red shirt", "a man in a red shirt"),
        ("a woman holding a cell phone , smiling", "a woman, smiling"),
        ("a man , , sitting", "a man, sitting"),
        ("a woman standing with a microphone", "a woman standing"),
        ("a man wearing a tie and holding a banana", "a man wearing a tie"),
        ("HOLDING A REMOTE CONTROL a man", "a man"),
        ("  a   dog \n on   grass  ", "a dog on grass"),
        ("a man holding a microphone.", "a man."),
    ],
)
def test_default_rules_clean_blip_captions(raw: str, cleaned: str) -> None:
    assert clean_caption(raw, DEFAULTS) == cleaned


def test_phrases_match_whole_words_only() -> None:
    patterns = compile_phrases(["tie", "there is"])
    assert clean_caption("a man with a tied scarf", patterns) == "a man with a tied scarf"
    assert clean_caption("a man wearing a tie near the door", patterns) == (
        "a man wearing a near the door"
    )
    assert clean_caption("thereis a cat", patterns) == "thereis a cat"


def test_a_phrase_is_a_regular_expression() -> None:
    patterns = compile_phrases([r"with (?:his|her) (?:left|right) hand"])
    assert clean_caption("a man waving with his left hand", patterns) == "a man waving"


def test_an_invalid_regular_expression_is_named() -> None:
    with pytest.raises(ValueError, match=r"caption.remove: 'holding \(a' is not a valid"):
        compile_phrases(["holding (a"])


def test_repeated_words_are_said_once_but_similar_words_stay() -> None:
    assert clean_caption("the the man and the woman", []) == "the man and the woman"
    assert clean_caption("a man a manatee", []) == "a man a manatee"


def test_cleaning_twice_changes_nothing() -> None:
    for raw in ("there is a a man holding a remote control , , with", "and a dog ,"):
        once = clean_caption(raw, DEFAULTS)
        assert clean_caption(once, DEFAULTS) == once


def test_a_caption_of_removed_phrases_only_comes_out_empty() -> None:
    assert clean_caption("there is arafed holding a remote control", DEFAULTS) == ""
    assert apply_prefix("", "alice, ") == "alice,"
    assert prefix_only("alice, ") == "alice,"


def test_apply_prefix_adds_the_prefix_once() -> None:
    assert apply_prefix("a man in front of a wall", "alice, ") == "alice, a man in front of a wall"
    assert apply_prefix("alice, a woman smiling", "alice, ") == "alice, a woman smiling"
    assert apply_prefix("Alice smiling at the camera", "alice, ") == "Alice smiling at the camera"
    assert apply_prefix("alicent in a garden", "alice, ") == "alice, alicent in a garden"
    assert apply_prefix("a photo\nof ohwx", "sks person, ") == "sks person, a photo of ohwx"


def test_an_empty_prefix_leaves_the_text_alone() -> None:
    assert has_prefix("a man", "")
    assert apply_prefix(" a man ", "") == "a man"


def test_user_captions_keep_their_words_and_get_the_prefix_once() -> None:
    user = "alice, at the beach in summer, wearing sunglasses"
    assert apply_prefix(user, "alice, ") == user
    assert apply_prefix(apply_prefix("at the beach", "alice, "), "alice, ") == "alice, at the beach"


def test_write_caption_writes_one_utf8_line(tmp_path) -> None:
    image = tmp_path / "01.png"
    write_caption(caption_path(image), "alice, a café\nin Zürich")
    assert (tmp_path / "01.txt").read_bytes() == "alice, a café in Zürich\n".encode()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["01.txt"]


def test_every_caption_file_is_one_line_without_control_characters(tmp_path):
    path = tmp_path / "alice_001.txt"
    write_caption(path, "alice,\x1b[2J a\x00woman\n--network_module evil\u2028\tsmiling")
    assert path.read_text() == "alice, [2J a woman --network_module evil smiling\n"
