"""Garbage in, through the running daemon: every bad file and every bad lora.toml is refused with a
message that names it and what is wrong, the folder reaches failed/ unchanged, and the daemon
goes on to serve the next folder."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from badimages import write_corpus
from badsubjects import BAD_LORA_TOML

from tests.daemon_process import DaemonProcess, all_final, lorad
from tests.photos import make_photos

FAST = {"caption": {"enabled": False}}


def contents(folder: Path) -> dict[str, str]:
    """Every entry below folder: the bytes of files, the targets of links, the kind of others."""
    seen = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root, name)
            rel = str(path.relative_to(folder))
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                seen[rel] = "link " + os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                seen[rel] = path.read_bytes().hex()
            else:
                seen[rel] = f"kind {stat.S_IFMT(info.st_mode)}"
    return seen


def only_bad_files(folder: Path) -> dict[str, str]:
    """The bad-image corpus without the files that are fine: {relative path: expected reason}."""
    expected = write_corpus(folder)
    for rel, expect in expected.items():
        path = folder / rel
        if expect.status == "accepted":
            path.unlink()
    shutil.rmtree(folder / "nested")
    (folder / "nested_link").unlink()
    return {rel: e.text for rel, e in expected.items()
            if e.status == "refused" and not rel.startswith("nested")}


def good_folder(tmp_path: Path, name: str) -> Path:
    source = tmp_path / "dropped" / name
    make_photos(source, 3, size=(320, 320), seed=77)
    (source / "lora.toml").write_text("epochs = 1\n")
    return source


def test_a_folder_of_bad_image_files_is_refused_file_by_file_and_the_next_one_is_served(
        tmp_path, config):
    cfg = config(**FAST)
    junk = tmp_path / "dropped" / "Junk Drawer"
    junk.mkdir(parents=True)
    reasons = only_bad_files(junk)
    assert len(reasons) >= 30
    before = contents(junk)
    good = good_folder(tmp_path, "Good One")
    (tmp_path / "inbox").mkdir()
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    try:
        os.rename(junk, tmp_path / "inbox" / junk.name)  # arrives whole
        daemon.wait_for(lambda jobs: jobs and jobs[0]["state"] == "rejected", what="refusal")
        shutil.copytree(good, tmp_path / "inbox" / good.name)
        jobs = daemon.wait_for(all_final(2), what="the good folder after the bad one")
    finally:
        assert daemon.stop() == 0
    assert [(j["name"], j["state"]) for j in jobs] == [("Junk Drawer", "rejected"),
                                                       ("Good One", "done")]
    failed = tmp_path / "state" / "failed" / "Junk Drawer"
    note = (failed / "error.txt").read_text()
    missing = [f"{rel}: {reason}" for rel, reason in reasons.items()
               if not any(rel in line and reason in line for line in note.splitlines())]
    assert not missing, "error.txt lacks:\n" + "\n".join(missing) + "\n\n" + note
    after = contents(failed)
    after.pop("error.txt")
    assert "lorad-report.json, beside this file" in note
    after.pop("lorad-report.json")  # error.txt names it: the check of every file
    assert after == before  # every file as dropped, the broken and the strange included


def test_every_bad_lora_toml_is_refused_naming_the_file_and_the_problem(tmp_path, config):
    cfg = config(**FAST)
    dropped = tmp_path / "dropped"
    expected = {}
    for kind, (data, reason) in BAD_LORA_TOML.items():
        folder = dropped / f"bad {kind}"
        make_photos(folder, 3, size=(300, 300), seed=5)
        (folder / "lora.toml").write_bytes(data)
        expected[folder.name] = reason
    odd = {"symlinked": ("lora.toml", "is a symbolic link"),
           "a folder": ("lora.toml", "is not a plain file"),
           "capitalised": ("Lora.toml", "named exactly lora.toml; rename it"),
           "hidden extension": ("lora.toml.txt", "named exactly lora.toml; rename it")}
    for kind, (name, reason) in odd.items():
        folder = dropped / f"bad {kind}"
        make_photos(folder, 3, size=(300, 300), seed=5)
        if kind == "symlinked":
            (folder / name).symlink_to("/etc/passwd")
        elif kind == "a folder":
            (folder / name).mkdir()
        else:
            (folder / name).write_text("epochs = 2\n")
        expected[folder.name] = reason
    (tmp_path / "inbox").mkdir()
    for folder in dropped.iterdir():
        os.rename(folder, tmp_path / "inbox" / folder.name)
    good = good_folder(tmp_path, "Good Two")
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    try:
        daemon.wait_for(all_final(len(expected)), what="every bad folder refused")
        shutil.copytree(good, tmp_path / "inbox" / good.name)
        jobs = daemon.wait_for(all_final(len(expected) + 1), what="the good folder")
    finally:
        assert daemon.stop() == 0
    states = {j["name"]: j["state"] for j in jobs}
    assert states.pop("Good Two") == "done"
    assert states == dict.fromkeys(expected, "rejected")
    wrong = []
    for name, reason in expected.items():
        note = (tmp_path / "state" / "failed" / name / "error.txt").read_text()
        shown = lorad(cfg, "show", next(str(j["id"]) for j in jobs if j["name"] == name)).stdout
        if f"{name}/" not in note or reason not in note or reason not in shown:
            wrong.append(f"{name}: expected {reason!r} naming the file in {name}; got:\n{note}")
    assert not wrong, "\n".join(wrong)
