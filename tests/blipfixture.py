"""A tiny, randomly initialised BLIP captioning model, built locally (no model hub needed).

`build_tiny_blip(folder)` saves the model and its processor into `folder`, where
`BlipForConditionalGeneration.from_pretrained` and `BlipProcessor.from_pretrained` find them, as
they would a downloaded `Salesforce/blip-image-captioning-large`. The captions are random words
from a small vocabulary. `build_blip(...)` makes the same kind of model at any size (the benchmark
builds one at the real `blip-image-captioning-large` sizes).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import BlipForConditionalGeneration, BlipProcessor

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
WORDS = [
    *("a", "man", "woman", "person", "dog", "cat", "sitting", "standing", "holding", "in"),
    *("front", "of", "on", "the", "wall", "table", "chair", "with", "red", "blue", "green"),
    *("white", "black", "shirt", "hat", "smiling", "looking", "at", "camera", "near"),
    *("window", "room", "outside", "tree", "grass", "street", "car", "and", "photo", "old"),
]

TINY_VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 64,
    "patch_size": 16,
}
TINY_TEXT = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "max_position_embeddings": 128,
}
LARGE_VISION = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 384,
    "patch_size": 16,
}
LARGE_TEXT = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 512,
}
LARGE_VOCAB_SIZE = 30524


def write_vocab(path: Path, size: int | None = None) -> list[str]:
    """Write a BERT vocabulary: the special tokens, the words, then filler tokens up to `size`."""
    tokens = SPECIAL_TOKENS + WORDS
    if size is not None:
        tokens += [f"word{index}" for index in range(size - len(tokens))]
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return tokens


def build_blip(
    folder: Path,
    vision: dict[str, int],
    text: dict[str, int],
    vocab_size: int | None = None,
    seed: int = 0,
) -> tuple[BlipForConditionalGeneration, BlipProcessor]:
    """A random BLIP with the given vision and text sizes; `folder` receives its vocab.txt."""
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessorPil,
        BlipProcessor,
    )

    folder.mkdir(parents=True, exist_ok=True)
    vocab_path = folder / "vocab.txt"
    tokens = write_vocab(vocab_path, vocab_size)
    # transformers 5 ignores vocab_file=: the vocabulary must be passed as vocab=.
    tokenizer = BertTokenizer(vocab=str(vocab_path), bos_token="[DEC]")
    text_config = {
        **text,
        "vocab_size": len(tokens),
        "bos_token_id": tokens.index("[DEC]"),
        "sep_token_id": tokens.index("[SEP]"),
        "eos_token_id": tokens.index("[SEP]"),
        "pad_token_id": tokens.index("[PAD]"),
    }
    config = BlipConfig(text_config=text_config, vision_config=vision)
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config).eval()
    size = vision["image_size"]
    image_processor = BlipImageProcessorPil(size={"height": size, "width": size})
    return model, BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_tiny_blip(folder: Path) -> Path:
    """Save a tiny random BLIP (about 200 KB) and its processor into `folder`; return `folder`."""
    model, processor = build_blip(folder, TINY_VISION, TINY_TEXT)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
