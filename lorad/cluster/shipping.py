"""What goes to a node with a training, and what comes back from it, verified.

To the node: the job's dataset (`--train_data_dir`), the run folder's files (its prompts), and
for a continued run the saved state (`--resume`) or the weights (`--network_weights`) it starts
from; the command's paths are rewritten to the node's scratch folder. Base models, sd-scripts and
its python are expected on every node at the configured paths.

Back from the node, as they are written: every epoch file once its header matches its size
(Kohya writes it whole), every sample once its PNG is complete, every saved state folder once it
has stopped changing (its train_state.json last, so that lorad never sees a state folder cut
short), and anything else once it has stopped changing or the trainer has exited. Each file comes
in pieces of at most PIECE_BYTES into a hidden temporary file beside its place in the run's local
folder, and is renamed into place once it is whole and verified: the harvest (lorad.training.
epochs) sees only whole files, exactly as with a local run.

Only the standard library and lorad's safetensors check are used: this module runs on the nodes.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from lorad.training.kohya.outputs import safetensors_problem

PIECE_BYTES = 8 * 1024 * 1024  # one message's file bytes at most (Ray's object store is small)
STABLE_SECONDS = 1.0  # a file that changes neither size nor time this long is written
PNG_END = b"IEND\xaeB`\x82"
TEMP_PREFIX = ".lorad-tmp-recv-"
# The command's options whose paths travel: option -> the name of its copy on the node.
SHIPPED_OPTIONS = {"--train_data_dir": "data", "--output_dir": "run", "--resume": "resume",
                   "--network_weights": "weights", "--sample_prompts": "prompts"}


@dataclass(frozen=True)
class Piece:
    """Part of one file: `data` at `offset`; `size` is the whole file's."""

    path: str  # relative to the folder it travels between
    offset: int
    data: bytes
    size: int

    @property
    def last(self) -> bool:
        return self.offset + len(self.data) >= self.size


# ---- to the node -------------------------------------------------------------------------
def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv and argv.index(name) + 1 < len(argv) else None


def node_paths(argv: list[str], scratch: str) -> dict[str, str]:
    """Each shipped path of the command (coordinator's) -> its copy under `scratch` (node's)."""
    mapping: dict[str, str] = {}
    for name, copy in SHIPPED_OPTIONS.items():
        value = option(argv, name)
        if not value or any(value == p or value.startswith(p + "/") for p in mapping):
            continue  # e.g. the prompts inside the run folder travel with it
        local = Path(value)
        mapping[value] = (f"{scratch}/{copy}" if name in ("--train_data_dir", "--output_dir")
                          else f"{scratch}/{copy}/{local.name}")
    return mapping


def rewrite(argv: list[str], mapping: dict[str, str]) -> list[str]:
    """argv with every shipped path (or a path inside one) replaced by its node's copy."""
    out = []
    for arg in argv:
        for local in sorted(mapping, key=len, reverse=True):
            if arg == local or arg.startswith(local + "/"):
                arg = mapping[local] + arg[len(local):]
                break
        out.append(arg)
    return out


def outgoing(mapping: dict[str, str], scratch: str) -> list[tuple[Path, str]]:
    """Every file to send: (its path here, its path relative to the node's scratch folder)."""
    files = []
    for local, remote in mapping.items():
        base = Path(local)
        relative = remote[len(scratch) + 1:]
        if base.is_file():
            files.append((base, relative))
        elif base.is_dir():
            files += [(p, f"{relative}/{p.relative_to(base)}") for p in sorted(base.rglob("*"))
                      if p.is_file() and not p.name.startswith(".")]
    return files


def pieces_of(path: Path, relative: str, size: int | None = None) -> list[Piece]:
    """A whole file as pieces (read one at a time by the caller's loop: small files only here)."""
    size = path.stat().st_size if size is None else size
    out, offset = [], 0
    with open(path, "rb") as handle:
        while True:
            data = handle.read(PIECE_BYTES)
            out.append(Piece(relative, offset, data, size))
            offset += len(data)
            if offset >= size or not data:
                return out


# ---- receiving (either side) ----------------------------------------------------------------
def verify(path: Path, size: int) -> str | None:
    """None when the received file is whole, else what is wrong with it."""
    got = path.stat().st_size
    if got != size:
        return f"{path.name}: {got} of {size} bytes arrived"
    if path.name.endswith(".safetensors"):
        return safetensors_problem(path)
    if path.suffix == ".png":
        with open(path, "rb") as handle:
            handle.seek(max(0, size - len(PNG_END)))
            if handle.read() != PNG_END:
                return f"{path.name}: not a whole PNG"
    return None


class Receiver:
    """Files arriving in pieces under `root`: each written under a hidden name beside its place,
    verified and renamed into place when its last piece is in."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.received = 0  # bytes

    def take(self, piece: Piece) -> Path | None:
        """Write one piece; the file's path once it is whole and in place."""
        target = self.root / piece.path
        if ".." in Path(piece.path).parts or Path(piece.path).is_absolute():
            raise ValueError(f"refused a file from outside the run's folder: {piece.path}")
        temp = target.with_name(TEMP_PREFIX + target.name + ".part")
        temp.parent.mkdir(parents=True, exist_ok=True)
        with open(temp, "r+b" if piece.offset else "wb") as handle:
            handle.seek(piece.offset)
            handle.write(piece.data)
        self.received += len(piece.data)
        if not piece.last:
            return None
        problem = verify(temp, piece.size)
        if problem:
            temp.unlink(missing_ok=True)
            raise ValueError(f"a file from the node did not arrive whole: {problem}")
        os.replace(temp, target)
        return target


# ---- from the node --------------------------------------------------------------------------
@dataclass
class Collector:
    """The node's side: which files of the run's output folder are written and not yet sent,
    and their pieces, a budget at a time."""

    root: Path
    skip: set[str] = field(default_factory=set)  # sent to the node: never sent back
    sent: set[str] = field(default_factory=set)
    looks: dict[str, tuple[int, float, float]] = field(default_factory=dict)  # size, mtime, since
    queue: list[tuple[Path, str, int]] = field(default_factory=list)  # path, relative, size
    offset: int = 0  # of the first queued file
    sent_bytes: int = 0

    def scan(self, final: bool = False) -> None:
        """Queue what is written now (everything left, once the trainer has exited)."""
        if not self.root.is_dir():
            return
        now = time.monotonic()
        queued = {relative for _, relative, _ in self.queue}
        states: dict[Path, list[Path]] = {}
        for path in sorted(self.root.rglob("*")):
            relative = str(path.relative_to(self.root))
            if (not path.is_file() or relative in self.skip or relative in self.sent
                    or relative in queued or path.name.startswith(".")):
                continue
            folder = next((p for p in path.relative_to(self.root).parents
                           if p.name.endswith("-state")), None)
            if folder is not None:
                states.setdefault(self.root / folder, []).append(path)
            elif self._written(path, relative, now, final):
                self.queue.append((path, relative, path.stat().st_size))
        for folder, files in states.items():
            stable = [self._written(p, str(p.relative_to(self.root)), now, final) for p in files]
            if all(stable) and self._state_whole(folder, final):
                files.sort(key=lambda p: p.name == "train_state.json")  # that one last
                self.queue += [(p, str(p.relative_to(self.root)), p.stat().st_size)
                               for p in files]

    def _written(self, path: Path, relative: str, now: float, final: bool) -> bool:
        """Whole: an epoch file whose header matches its size, a PNG that ends as PNGs do;
        anything else once it has not changed for STABLE_SECONDS, or the trainer has exited."""
        stat = path.stat()
        in_state = any(p.name.endswith("-state") for p in path.relative_to(self.root).parents)
        if path.name.endswith(".safetensors") and not in_state:
            return safetensors_problem(path) is None
        if path.suffix == ".png":
            return verify(path, stat.st_size) is None
        if final:
            return True
        seen = self.looks.get(relative)
        if seen is None or seen[:2] != (stat.st_size, stat.st_mtime):
            self.looks[relative] = (stat.st_size, stat.st_mtime, now)
            return False
        return now - seen[2] >= STABLE_SECONDS

    @staticmethod
    def _state_whole(folder: Path, final: bool) -> bool:
        try:
            json.loads((folder / "train_state.json").read_text())
        except (OSError, ValueError):
            return final  # after the trainer's exit a state cut short travels as it is
        return True

    def pieces(self, budget: int = PIECE_BYTES) -> list[Piece]:
        """The next pieces of the queued files, about `budget` bytes in all."""
        out: list[Piece] = []
        while self.queue and budget > 0:
            path, relative, size = self.queue[0]
            with open(path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read(min(budget, PIECE_BYTES))
            piece = Piece(relative, self.offset, data, size)
            out.append(piece)
            budget -= len(data)
            self.sent_bytes += len(data)
            self.offset += len(data)
            if piece.last or not data:
                self.queue.pop(0)
                self.sent.add(relative)
                self.offset = 0
        return out

    def idle(self) -> bool:
        return not self.queue
