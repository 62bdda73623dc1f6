"""Sample images during training, named as Kohya names them, drawn as small solid-colour PNGs.

Prompt file (.txt): one prompt a line, options after " --": `--n` negative, `--w`/`--h` size,
`--d` seed, `--s` steps, `--l` scale, `--ss` sampler. Files go to `<output_dir>/sample/`:
`<name>_e000001_00_<YYYYmmddHHMMSS>_<seed>.png` at an epoch end, `<name>_000500_00_...png` every
n steps; without `--d` the seed part is left out. The colour depends on the epoch or step and on
the prompt, so sheets of samples tell them apart.
"""

import argparse
import hashlib
import os
import re
import struct
import time
import zlib

from library.console import Console

OPTION_PATTERNS = {
    "width": (r"w (\d+)", int),
    "height": (r"h (\d+)", int),
    "seed": (r"d (\d+)", int),
    "sample_steps": (r"s (\d+)", int),
    "scale": (r"l ([\d\.]+)", float),
    "negative_prompt": (r"n (.+)", str),
    "sample_sampler": (r"ss (.+)", str),
}


def parse_prompt(line: str) -> dict[str, object]:
    parts = line.split(" --")
    prompt: dict[str, object] = {"prompt": parts[0]}
    for part in parts:
        for key, (pattern, convert) in OPTION_PATTERNS.items():
            match = re.match(pattern, part, re.IGNORECASE)
            if match:
                prompt[key] = convert(match.group(1))
                break
    return prompt


def is_due(args: argparse.Namespace, epoch: int | None, steps: int) -> bool:
    """Kohya's rule: at step 0 only with --sample_at_first; --sample_every_n_epochs, when given,
    makes --sample_every_n_steps ignored."""
    if steps == 0:
        return bool(args.sample_at_first)
    if args.sample_every_n_epochs is not None:
        return epoch is not None and epoch % args.sample_every_n_epochs == 0
    if args.sample_every_n_steps is not None:
        return epoch is None and steps % args.sample_every_n_steps == 0
    return False


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def _colour(label: str, index: int) -> tuple[int, int, int]:
    digest = hashlib.sha256(f"{label}/{index}".encode()).digest()
    return digest[0], digest[1], digest[2]


def _read_prompts(path: str) -> list[str]:
    if not path.endswith(".txt"):
        raise NotImplementedError("the stand-in trainer reads .txt prompt files only")
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    return [line.strip() for line in lines if line.strip() and line[0] != "#"]


def _picture(sources: dict[str, list[str]], epoch: int | None, index: int) -> bytes | None:
    """The file the control's `samples_from` names for this epoch's sample `index`, if any."""
    files = sources.get(str(epoch)) if epoch is not None else None
    if not files:
        return None
    with open(files[index % len(files)], "rb") as f:
        return f.read()


def generate(args: argparse.Namespace, epoch: int | None, steps: int, console: Console,
             seconds: float = 0.0, sources: dict[str, list[str]] | None = None) -> None:
    """Kohya's sampling: one PNG per prompt line, each taking `seconds` (the control file's
    sample_seconds; real sampling is slow, and a kill can land in the middle of it), drawn from
    the control's `samples_from` files where it names some for this epoch."""
    if not is_due(args, epoch, steps):
        return
    console.log("INFO", "")
    console.log("INFO", f"generating sample images at step / サンプル画像生成 ステップ: {steps}")
    if not os.path.isfile(args.sample_prompts):
        console.log(
            "ERROR", f"No prompt file / プロンプトファイルがありません: {args.sample_prompts}"
        )
        return
    save_dir = args.output_dir + "/sample"
    os.makedirs(save_dir, exist_ok=True)
    label = f"e{epoch:06d}" if epoch is not None else f"{steps:06d}"
    prefix = "" if args.output_name is None else args.output_name + "_"
    for index, line in enumerate(_read_prompts(args.sample_prompts)):
        prompt = parse_prompt(line)
        width = max(64, int(prompt.get("width", 512)) // 8 * 8)
        height = max(64, int(prompt.get("height", 512)) // 8 * 8)
        seed = prompt.get("seed")
        console.log("INFO", f"prompt: {prompt['prompt']}")
        console.log("INFO", f"negative_prompt: {prompt.get('negative_prompt')}")
        console.log("INFO", f"height: {height}")
        console.log("INFO", f"width: {width}")
        console.log("INFO", f"sample_sampler: {prompt.get('sample_sampler', args.sample_sampler)}")
        if seed is not None:
            console.log("INFO", f"seed: {seed}")
        if seconds:
            time.sleep(seconds)
        stamp = time.strftime("%Y%m%d%H%M%S", time.localtime())
        seed_suffix = "" if seed is None else f"_{seed}"
        name = f"{prefix}{label}_{index:02d}_{stamp}{seed_suffix}.png"
        with open(os.path.join(save_dir, name), "wb") as f:
            f.write(_picture(sources or {}, epoch, index)
                    or png(width, height, _colour(label, index)))
