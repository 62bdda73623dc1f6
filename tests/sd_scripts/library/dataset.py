"""Kohya's DreamBooth-style dataset folder: `<train_data_dir>/<repeats>_<class token>/<images>`.

Only direct subfolders count. The folder name is split at the first "_": a non-numeric prefix
is ignored with a warning, repeats of 0 or less silently. Images: png, jpg, jpeg, webp, bmp in
any case. The caption is the first line of `<stem><caption_extension>` (UTF-8), else the class
token; an empty caption file is an error.
"""

from dataclasses import dataclass, field
from pathlib import Path

from library.console import Console

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


@dataclass
class Subset:
    folder: Path
    repeats: int
    images: list[Path]
    captions: list[str]


@dataclass
class Dataset:
    subsets: list[Subset] = field(default_factory=list)
    reg_subsets: list[Subset] = field(default_factory=list)

    @property
    def num_train_images(self) -> int:
        return sum(len(s.images) * s.repeats for s in self.subsets)

    @property
    def num_reg_images(self) -> int:
        return sum(len(s.images) * s.repeats for s in self.reg_subsets)

    def num_batches(self, batch_size: int) -> int:
        """Batches per epoch: with regularisation images every training image is paired with one."""
        images = self.num_train_images * (2 if self.num_reg_images else 1)
        return -(-images // batch_size)

    def tag_frequency(self) -> dict[str, dict[str, int]]:
        frequency: dict[str, dict[str, int]] = {}
        for subset in self.subsets:
            tags = frequency.setdefault(subset.folder.name, {})
            for caption in subset.captions:
                for tag in caption.split(","):
                    tag = tag.strip().lower()
                    if tag:
                        tags[tag] = tags.get(tag, 0) + 1
        return frequency

    def dirs_info(self, reg: bool = False) -> dict[str, dict[str, int]]:
        return {
            s.folder.name: {"n_repeats": s.repeats, "img_count": len(s.images)}
            for s in (self.reg_subsets if reg else self.subsets)
        }


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def _caption(image: Path, caption_extension: str, class_token: str, console: Console) -> str:
    path = Path(str(image.with_suffix("")) + caption_extension)
    if not path.is_file():
        return class_token
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        console.log(
            "ERROR",
            f"illegal char in file (not UTF-8) / ファイルにUTF-8以外の文字があります: {path}",
        )
        raise
    if not lines:
        raise AssertionError(f"caption file is empty / キャプションファイルが空です: {path}")
    return lines[0].strip()


def _subsets(base: str | None, caption_extension: str, console: Console) -> list[Subset]:
    if base is None or not Path(base).is_dir():
        return []
    subsets = []
    for folder in sorted(Path(base).iterdir()):
        if not folder.is_dir():
            continue
        prefix, _, class_token = folder.name.partition("_")
        try:
            repeats = int(prefix)
        except ValueError:
            console.log(
                "WARNING",
                "ignore directory without repeats / 繰り返し回数のないディレクトリを無視します:"
                f" {folder.name}",
            )
            continue
        if repeats < 1:
            continue
        images = sorted(p for p in folder.iterdir() if _is_image(p))
        console.log("INFO", f"found directory {folder} contains {len(images)} image files")
        if not images:
            console.log(
                "WARNING",
                f"ignore subset with image_dir='{folder}': no images found"
                " / 画像が見つからないためサブセットを無視します",
            )
            continue
        captions = [_caption(i, caption_extension, class_token, console) for i in images]
        subsets.append(Subset(folder, repeats, images, captions))
    return subsets


def load(
    train_data_dir: str | None, reg_data_dir: str | None, caption_extension: str, console: Console
) -> Dataset:
    console.log("INFO", "Using DreamBooth method.")
    console.log("INFO", "prepare images.")
    dataset = Dataset(
        subsets=_subsets(train_data_dir, caption_extension, console),
        reg_subsets=_subsets(reg_data_dir, caption_extension, console),
    )
    console.log("INFO", f"{dataset.num_train_images} train images with repeating.")
    console.log("INFO", f"{dataset.num_reg_images} reg images.")
    if not dataset.num_reg_images:
        console.log("INFO", "no regularization images / 正則化画像が見つかりませんでした")
    return dataset
