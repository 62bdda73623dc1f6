"""Hostile folders: nested a thousand deep, too many entries, devices and pipes named like photos.

Each is refused whole with the limit it crossed, never retried forever, and never stops the
daemon; the claims run on one filesystem and, with the inbox on a tmpfs, across two.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from lorad.context import Context
from lorad.daemon.outcome import conclude
from lorad.dataset import stage as prepare
from lorad.dataset.listing import list_source
from lorad.inbox import shape
from lorad.inbox.refuse import ERROR_FILE, REFUSED_PREFIX, recover_rejections
from lorad.settings import Settings
from lorad.store import Store
from lorad.system.fsutil import TEMP_PREFIX, copy_tree_verified, remove_stale_temps
from lorad.system.walk import remove_tree
from tests import test_claiming
from tests.photos import make_photos
from tests.test_claiming import claim_one, make_context

tmpfs_inbox = test_claiming.tmpfs_inbox
_no_lorad_environment = test_claiming._no_lorad_environment


def nest(folder: Path, levels: int) -> Path:
    """folder/d/d/.../d, `levels` deep, with a file at the bottom; the bottom folder."""
    folder.mkdir(parents=True, exist_ok=True)
    deep = folder
    for _ in range(levels):  # os.makedirs and Path.mkdir(parents=True) recurse once per level
        deep = deep / "d"
        deep.mkdir()
    (deep / "bottom.txt").write_text("the bottom")
    return deep


def photos(inbox: Path, name: str) -> Path:
    folder = inbox / name
    make_photos(folder, 3, size=(64, 64), seed=1)
    return folder


def tree(folder: Path) -> dict[str, bytes]:
    """Relative path -> bytes (links as '-> target', others by kind) below folder, walked with
    a stack of its own (Path.rglob recurses once per level)."""
    found, pending = {}, [folder]
    while pending:
        for path in pending.pop().iterdir():
            rel = str(path.relative_to(folder))
            if path.is_symlink():
                found[rel] = b"-> " + os.readlink(path).encode()
            elif path.is_dir():
                pending.append(path)
            else:
                found[rel] = path.read_bytes() if path.is_file() else b"special"
    return found


@pytest.fixture(params=["one filesystem", "two filesystems"])
def ctx(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Context]:
    """The inbox beside state_dir, or on a tmpfs (then failed/ is on the state's filesystem).
    Deep folders are removed afterwards here (shutil.rmtree would recurse)."""
    inbox = (request.getfixturevalue("tmpfs_inbox") if request.param == "two filesystems"
             else tmp_path / "inbox")
    yield make_context(tmp_path / "state", inbox)
    for folder in (inbox.parent, tmp_path):
        for path in folder.iterdir():
            remove_tree(path)


def claimed_then_prepared(ctx: Context, name: str) -> int:
    """Claim the folder and, if it was taken, run its prepare stage as the daemon does."""
    job_id = claim_one(ctx, ctx.settings.inbox / name)
    assert job_id is not None, "a folder that can never be taken must not be tried forever"
    job = ctx.store.get(job_id)
    if job.state == "queued":
        job = ctx.store.get(job_id)
        try:
            prepare.run(ctx, job)
        except Exception as error:  # noqa: BLE001 - conclude() decides, as in the daemon
            conclude(ctx, job, "prepare", error)
        else:
            conclude(ctx, job, "prepare", None)
    return job_id


def refused_folder(ctx: Context, job_id: int) -> Path:
    job = ctx.store.get(job_id)
    assert job.state == "rejected", job.error
    return Path(job.options["failed_path"])


def test_a_folder_nested_a_thousand_deep_is_refused_whole_with_the_limit(ctx):
    folder = photos(ctx.settings.inbox, "alice")
    nest(folder, 1000)
    before = tree(folder)
    job_id = claimed_then_prepared(ctx, "alice")
    error = ctx.store.get(job_id).error or ""
    assert f"nested more than {shape.MAX_DEPTH} deep (d/d/d/.../d)" in error
    assert "put the photos in fewer levels of folders" in error and "Traceback" not in error
    where = refused_folder(ctx, job_id)
    assert {rel: data for rel, data in tree(where).items() if rel != ERROR_FILE} == before
    assert not (ctx.settings.inbox / "alice").exists()
    remove_stale_temps(ctx.settings.work_dir)  # the next start: no RecursionError


def test_a_folder_with_too_many_entries_is_refused(ctx, monkeypatch):
    monkeypatch.setattr(shape, "MAX_ENTRIES", 12)
    folder = photos(ctx.settings.inbox, "crowd")
    for index in range(10):
        (folder / f"note_{index}.md").write_text("x")
    job_id = claimed_then_prepared(ctx, "crowd")
    assert "more than 12 files and folders" in (ctx.store.get(job_id).error or "")
    assert refused_folder(ctx, job_id).is_dir()


@pytest.fixture
def deep_place(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, emptied afterwards without recursion (pytest's own cleanup recurses)."""
    yield tmp_path
    for path in tmp_path.iterdir():
        remove_tree(path)


def test_the_work_area_and_temps_are_walked_at_any_depth(deep_place):
    """remove_stale_temps (every start), listing, copying and removing never recurse."""
    tmp_path = deep_place
    work = tmp_path / "work"
    deep = nest(work / "000001" / "source", 1000)
    (deep / f"{TEMP_PREFIX}{os.getpid()}-x").write_text("half-written")
    assert [path.name for path in remove_stale_temps(work)] == [f"{TEMP_PREFIX}{os.getpid()}-x"]
    with pytest.raises(shape.FolderTooLarge, match="nested more than 32 deep"):
        list_source(work / "000001" / "source")
    copy_tree_verified(work / "000001", tmp_path / "copy")
    assert tree(tmp_path / "copy") == tree(work / "000001")
    remove_tree(work)
    assert not work.exists()


def special_files(folder: Path) -> None:
    try:
        os.mknod(folder / "dev.png", stat.S_IFCHR | 0o644, os.makedev(1, 5))  # /dev/zero
    except PermissionError as error:
        pytest.skip(f"cannot make a character device here: {error}")
    os.mkfifo(folder / "x.jpg")


def test_a_device_or_pipe_named_like_a_photo_is_never_read_by_a_claim(tmp_path, tmpfs_inbox):
    """Across filesystems the folder is refused at once, naming the file; it is never copied
    (failed/ is on another disk than the inbox: it stays there, hidden, and error.txt says so)."""
    ctx = make_context(tmp_path / "state", tmpfs_inbox)
    folder = photos(ctx.settings.inbox, "bob")
    special_files(folder)
    job_id = claim_one(ctx, folder)
    assert job_id is not None
    where = refused_folder(ctx, job_id)
    assert where == ctx.settings.inbox / f"{REFUSED_PREFIX}{job_id}"
    assert (where / "dev.png").is_char_device() and (where / "x.jpg").is_fifo()
    error = ctx.store.get(job_id).error or ""
    assert "dev.png is not a regular file" in error
    note = (ctx.settings.failed_dir / f"bob.{ERROR_FILE}").read_text()
    assert "dev.png is not a regular file" in note and str(where) in note
    assert list(ctx.settings.work_dir.iterdir()) == []
    assert not folder.exists()  # nothing left in the inbox to take again


def test_a_refused_claim_goes_to_failed_by_rename_where_it_can(tmp_path, tmpfs_inbox):
    settings_failed = tmpfs_inbox.parent / "failed"
    settings = Settings(inbox=tmpfs_inbox, outbox=tmp_path / "outbox",
                        state_dir=tmp_path / "state", failed=settings_failed)
    settings.inbox.mkdir(parents=True)
    ctx = Context(settings, Store(settings.db_path))
    folder = photos(ctx.settings.inbox, "carol")
    special_files(folder)
    job_id = claim_one(ctx, folder)
    where = refused_folder(ctx, job_id)
    assert where == settings_failed / "carol" and (where / "x.jpg").is_fifo()
    note = (settings_failed / f"carol.{ERROR_FILE}").read_text()
    assert "dev.png is not a regular file" in note and "beside this file: carol/" in note


def test_a_refusal_a_crash_interrupted_is_finished_at_the_next_start(tmp_path, tmpfs_inbox):
    ctx = make_context(tmp_path / "state", tmpfs_inbox)
    folder = photos(ctx.settings.inbox, "dave")
    nest(folder, 40)
    parked = folder.with_name(".lorad-claim-1")
    job_id = ctx.store.create_job("dave", state="rejected", stage="prepare",
                                  error="dave cannot be taken: deep",
                                  options={"failed_path": str(ctx.settings.failed_dir / "dave"),
                                           "parked": str(parked)})
    os.rename(folder, parked)
    recover_rejections(ctx)
    assert refused_folder(ctx, job_id) == ctx.settings.inbox / f"{REFUSED_PREFIX}{job_id}"
    assert not parked.exists()
