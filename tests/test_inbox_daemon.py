"""The hot folder's promises through a real `lorad run` (settle 0.5 s, captions off).

How a folder arrives (moved in, copied file by file, slowly, while the daemon is down), what is
refused (duplicates, links out of the inbox), one daemon per state folder, and rejected versus
failed jobs. Most tests stop once the jobs are claimed or past preparation: what happens next is
other tests' business, and waiting for it would only make these slow.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from lorad.store import Event, Store
from lorad.views import job_summary
from tests.daemon_process import DaemonProcess, lorad
from tests.photos import make_photos

NO_CAPTIONS = {"caption": {"enabled": False}}
Predicate = Callable[[list[dict]], bool]


class Daemon(DaemonProcess):
    """`lorad run`, watched through its database (no `lorad status` process per look: those
    would compete with the daemon for the CPU)."""

    poll_seconds = 0.1

    def __init__(self, config: Path, root: Path, log: str = "daemon.log") -> None:
        super().__init__(config, root / log)
        self.db = root / "state" / "lorad.db"

    def jobs(self) -> list[dict]:
        if not self.db.exists():
            return []
        store = Store(self.db, migrate=False)
        try:
            return [job_summary(j) for j in store.jobs()]
        except sqlite3.OperationalError:  # not migrated yet
            return []
        finally:
            store.close()

    def events(self, job_id: int) -> list[Event]:
        store = Store(self.db, migrate=False)
        try:
            return store.events(job_id)
        finally:
            store.close()


def running(cfg: Path, root: Path, log: str = "daemon.log") -> Daemon:
    """A `lorad run` past its start-up: the inbox exists and is watched."""
    daemon = Daemon(cfg, root, log)
    daemon.start()
    try:
        daemon.wait_for(lambda jobs: "lorad is watching" in daemon.output(), timeout=30,
                        what="the daemon to start")
    except BaseException:
        daemon.stop()
        raise
    return daemon


def photos(folder: Path, count: int = 4, seed: int = 0) -> list[Path]:
    return make_photos(folder, count, size=(256, 256), seed=seed)


def claimed(*names: str) -> Predicate:
    """Every named folder is a job that is past claiming."""
    def check(jobs: list[dict]) -> bool:
        states = {j["name"]: j["state"] for j in jobs}
        return all(states.get(name, "claiming") != "claiming" for name in names)
    return check


def decided(*names: str) -> Predicate:
    """Every named job is past its preparation: refused, failed, or accepted."""
    def check(jobs: list[dict]) -> bool:
        by_name = {j["name"]: j for j in jobs}
        return all(name in by_name and (by_name[name]["stage"] != "prepare" or by_name[name][
            "state"] in ("rejected", "failed", "done")) for name in names)
    return check


def job_named(jobs: list[dict], name: str) -> dict:
    [job] = [j for j in jobs if j["name"] == name]
    return job


def all_final(count: int) -> Predicate:
    final = ("done", "failed", "rejected", "cancelled")
    return lambda jobs: len(jobs) >= count and all(j["state"] in final for j in jobs)


def source_of(tmp_path: Path, job_id: int) -> Path:
    return tmp_path / "state" / "work" / f"{job_id:06d}" / "source"


def files_below(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def test_half_copied_folder_is_not_taken(tmp_path, config):
    """A folder moved in with mv, and one copied file by file by a slow writer whose last file
    grows for about 2.5 s with pauses (0.3 s) shorter than the settle time (1.5 s here, for a
    margin on a busy machine): each becomes one job, with every byte, claimed only after the
    last byte was written."""
    cfg = config(**NO_CAPTIONS, watch={"settle_seconds": 1.5})
    staged, inbox = tmp_path / "staged", tmp_path / "inbox"
    photos(staged / "moved", seed=1)
    (staged / "moved" / ".DS_Store").write_bytes(b"finder litter")
    (staged / "moved" / "__MACOSX").mkdir()
    (staged / "moved" / "__MACOSX" / "._photo_001.jpg").write_bytes(b"resource fork")
    moved_files = files_below(staged / "moved")
    photos(staged / "copied", count=3, seed=2)
    data = (staged / "copied" / "photo_001.jpg").read_bytes()
    chunk = len(data) // 8 + 1
    daemon = running(cfg, tmp_path)
    try:
        os.rename(staged / "moved", inbox / "moved")
        (inbox / "copied").mkdir()
        for photo in sorted((staged / "copied").iterdir()):
            shutil.copyfile(photo, inbox / "copied" / photo.name)
            time.sleep(0.3)
        with open(inbox / "copied" / "slow.jpg", "wb") as handle:
            for start in range(0, len(data), chunk):
                handle.write(data[start:start + chunk])
                handle.flush()
                time.sleep(0.3)
        last_byte = time.time()
        jobs = daemon.wait_for(claimed("moved", "copied"), timeout=30, what="both claims")
    finally:
        assert daemon.stop() == 0
    assert sorted(j["name"] for j in jobs) == ["copied", "moved"]
    copied = job_named(jobs, "copied")
    claim = daemon.events(copied["id"])[0]
    assert claim.message.startswith("claimed from the inbox")
    assert claim.at > last_byte, "the folder was claimed before its last byte was written"
    expected = {**files_below(staged / "copied"), "slow.jpg": data}
    assert files_below(source_of(tmp_path, copied["id"])) == expected
    assert files_below(source_of(tmp_path, job_named(jobs, "moved")["id"])) == moved_files
    assert list(inbox.iterdir()) == []


def test_a_folder_dropped_while_the_daemon_was_down_becomes_a_job_at_start(tmp_path, config):
    cfg = config(**NO_CAPTIONS)
    photos(tmp_path / "inbox" / "Alice Smith")
    daemon = running(cfg, tmp_path)
    try:
        jobs = daemon.wait_for(claimed("Alice Smith"), timeout=30, what="the claim")
    finally:
        assert daemon.stop() == 0
    assert [j["name"] for j in jobs] == ["Alice Smith"]
    assert not (tmp_path / "inbox" / "Alice Smith").exists()


def test_a_burst_of_folders_becomes_one_job_each(tmp_path, config):
    """20 folders renamed into the inbox at once: 20 jobs, each folder in exactly one."""
    cfg = config(**NO_CAPTIONS)
    staged = tmp_path / "staged"
    names = [f"subject_{n:02d}" for n in range(20)]
    for name in names:
        (staged / name).mkdir(parents=True)
        for index in range(3):
            (staged / name / f"{index}.jpg").write_bytes(f"{name} {index}".encode())
    daemon = running(cfg, tmp_path)
    try:
        for name in names:
            os.rename(staged / name, tmp_path / "inbox" / name)
        daemon.wait_for(claimed(*names), timeout=30, what="20 jobs")
        time.sleep(1.0)  # twice the settle time: nothing else turns up
        jobs = daemon.jobs()
    finally:
        assert daemon.stop() == 0
    assert sorted(j["name"] for j in jobs) == names
    assert len({j["id"] for j in jobs}) == 20
    assert list((tmp_path / "inbox").iterdir()) == []


def test_the_same_photos_dropped_again_are_refused_as_a_duplicate(tmp_path, config):
    """Two copies dropped together: one trains, the other is refused naming it. The same photos
    dropped later under other names: refused, unless lora.toml allows the duplicate."""
    cfg = config(**NO_CAPTIONS)
    staged, inbox = tmp_path / "staged", tmp_path / "inbox"
    photos(staged / "alice")
    daemon = running(cfg, tmp_path)
    try:
        shutil.copytree(staged / "alice", inbox / "alice")
        (staged / "alice" / "lora.toml").write_text('token = "alice"\n')
        shutil.copytree(staged / "alice", inbox / "alice copy")
        (staged / "alice" / "lora.toml").unlink()
        jobs = daemon.wait_for(decided("alice", "alice copy"), what="the two copies")
        [kept] = [j for j in jobs if j["state"] not in ("rejected", "failed")]
        [twin] = [j for j in jobs if j["state"] == "rejected"]
        # Other folder and file names, another order: still the same photos.
        (inbox / "alice again").mkdir()
        for index, photo in enumerate(sorted((staged / "alice").iterdir(), reverse=True)):
            shutil.copyfile(photo, inbox / "alice again" / f"IMG_{index}.JPG")
        (inbox / "alice again" / "lora.toml").write_text('token = "alice"\n')
        shutil.copytree(staged / "alice", inbox / "alice on purpose")
        (inbox / "alice on purpose" / "lora.toml").write_text(
            'token = "alice"\nallow_duplicate = true\n')
        jobs = daemon.wait_for(decided("alice again", "alice on purpose"), what="the others")
    finally:
        assert daemon.stop() == 0
    assert f"already dropped as job {kept['id']}" in twin["error"]
    again = job_named(jobs, "alice again")
    assert again["state"] == "rejected"
    assert f"already dropped as job {kept['id']}" in again["error"]
    assert "allow_duplicate = true" in again["error"]
    assert job_named(jobs, "alice on purpose")["state"] not in ("rejected", "failed")
    failed = tmp_path / "state" / "failed" / "alice again"
    note = (failed / "error.txt").read_text()
    assert f"job {kept['id']}" in note and "allow_duplicate" in note
    assert sorted(p.name for p in failed.iterdir()) == [
        "IMG_0.JPG", "IMG_1.JPG", "IMG_2.JPG", "IMG_3.JPG", "error.txt", "lora.toml",
        "lorad-report.json"]


def test_the_same_photos_under_another_folder_name_are_refused_as_a_duplicate(
        tmp_path, config, fake_trainer):
    """No lora.toml: the token made from the new folder name differs, yet it is the same set;
    the earlier job failed, so the refusal says how to retry it. A lora.toml that asks for
    another token trains them."""
    cfg = config(**NO_CAPTIONS, kohya={"max_attempts": 1})
    fake_trainer(faults=[{"kind": "crash", "at_step": 1, "times": 1}])
    staged, inbox = tmp_path / "staged", tmp_path / "inbox"
    photos(staged / "alice")
    daemon = running(cfg, tmp_path)
    try:
        shutil.copytree(staged / "alice", inbox / "alice")
        [first] = daemon.wait_for(all_final(1), what="the first drop to fail in training")
        assert first["state"] == "failed"
        shutil.copytree(staged / "alice", inbox / "Alice (2)")
        shutil.copytree(staged / "alice", inbox / "ally")
        (inbox / "ally" / "lora.toml").write_text('token = "ally"\n')
        jobs = daemon.wait_for(decided("Alice (2)", "ally"), what="the two later drops")
    finally:
        assert daemon.stop() == 0
    renamed = job_named(jobs, "Alice (2)")
    assert renamed["state"] == "rejected" and renamed["token"] == "alice_2"
    assert f"already dropped as job {first['id']}" in renamed["error"]
    assert f"lorad retry {first['id']}" in renamed["error"]
    assert "allow_duplicate = true" in renamed["error"]
    note = (tmp_path / "state" / "failed" / "Alice (2)" / "error.txt").read_text()
    assert f"lorad retry {first['id']}" in note
    assert job_named(jobs, "ally")["state"] not in ("rejected", "failed")


def test_a_folder_without_photos_and_an_unknown_model_are_rejected_and_the_next_is_served(
        tmp_path, config):
    """Bad input ends in failed/<name>/ with error.txt, each with its own reason; a good folder
    dropped after them is still taken and prepared."""
    cfg = config(**NO_CAPTIONS)
    inbox = tmp_path / "inbox"
    daemon = running(cfg, tmp_path)
    try:
        (inbox / "papers").mkdir()
        (inbox / "papers" / "notes.pdf").write_bytes(b"%PDF-1.4 not a photo")
        photos(inbox / "flux", seed=5)
        (inbox / "flux" / "lora.toml").write_text('model = "flux"\n')
        daemon.wait_for(all_final(2), what="both refusals")
        photos(inbox / "good", seed=6)
        jobs = daemon.wait_for(decided("good"), what="the good folder")
    finally:
        assert daemon.stop() == 0
    failed = tmp_path / "state" / "failed"
    papers, flux = job_named(jobs, "papers"), job_named(jobs, "flux")
    assert papers["state"] == "rejected"
    assert papers["error"].startswith("The dataset cannot be used: no usable photos")
    assert "notes.pdf is not a photo: lorad reads JPEG, PNG" in papers["error"]
    assert (failed / "papers" / "notes.pdf").read_bytes() == b"%PDF-1.4 not a photo"
    assert papers["error"].splitlines()[0] in (failed / "papers" / "error.txt").read_text()
    assert flux["state"] == "rejected"
    assert "model 'flux' is not a base model of this daemon (known: sd15, sdxl)" in flux["error"]
    assert "model 'flux'" in (failed / "flux" / "error.txt").read_text()
    assert sorted(p.name for p in (failed / "flux").iterdir()) == [
        "error.txt", "lora.toml", "photo_001.jpg", "photo_002.jpg", "photo_003.jpg",
        "photo_004.jpg"]
    assert job_named(jobs, "good")["state"] not in ("rejected", "failed")
    assert list(inbox.iterdir()) == []


def test_a_symlink_to_etc_is_never_followed(tmp_path, config):
    """A subject folder that is a link to /etc is refused (the link goes to failed/); links to
    /etc inside a subject folder are moved as links and never read."""
    cfg = config(**NO_CAPTIONS)
    inbox, staged = tmp_path / "inbox", tmp_path / "staged" / "alice"
    photos(staged)
    (staged / "etc").symlink_to("/etc")
    (staged / "passwd.jpg").symlink_to("/etc/passwd")
    daemon = running(cfg, tmp_path)
    try:
        (inbox / "etc").symlink_to("/etc")
        os.rename(staged, inbox / "alice")
        jobs = daemon.wait_for(decided("etc", "alice"), what="both jobs")
    finally:
        assert daemon.stop() == 0
    assert Path("/etc/passwd").is_file()
    link_job = job_named(jobs, "etc")
    assert link_job["state"] == "rejected"
    assert "symbolic link to /etc, outside the inbox" in link_job["error"]
    failed = tmp_path / "state" / "failed"
    assert os.readlink(failed / "etc") == "/etc"
    assert "outside the inbox" in (failed / "etc.error.txt").read_text()
    alice = job_named(jobs, "alice")
    assert alice["state"] not in ("rejected", "failed")
    source = source_of(tmp_path, alice["id"])
    assert os.readlink(source / "etc") == "/etc"
    assert os.readlink(source / "passwd.jpg") == "/etc/passwd"
    dataset = source.parent / "dataset"
    assert len(list(dataset.glob("training_images/*/*.png"))) == 4
    assert not any(b"root:" in p.read_bytes() for p in dataset.rglob("*") if p.is_file())
    assert any("passwd.jpg is a link to a place outside the subject folder" in e.message
               for e in daemon.events(alice["id"]))
    assert list(inbox.iterdir()) == []


def test_a_second_daemon_on_the_same_state_folder_refuses_to_start(tmp_path, config):
    cfg = config(**NO_CAPTIONS)
    first = running(cfg, tmp_path, "first.log")
    try:
        second = lorad(cfg, "run", check=False, timeout=30)
        assert first.proc.poll() is None
    finally:
        assert first.stop() == 0
    assert second.returncode == 1
    message = " ".join(second.stderr.split())  # the console wraps long lines
    assert f"already running on {tmp_path / 'state'} (pid {first.proc.pid})" in message
    again = running(cfg, tmp_path, "again.log")  # the lock went with the first one
    assert again.stop() == 0


def test_rejected_and_failed_differ_and_retry_reruns_a_failed_job_from_its_stage(
        tmp_path, config, fake_trainer):
    cfg = config(**NO_CAPTIONS, kohya={"max_attempts": 1})
    fake_trainer(faults=[{"kind": "crash", "at_step": 1, "times": 1}])
    inbox, staged = tmp_path / "inbox", tmp_path / "staged"
    photos(staged / "bob", seed=3)
    (staged / "bob" / "lora.toml").write_text('token = "b o b"\n')  # bad input
    photos(staged / "carol", seed=4)
    daemon = running(cfg, tmp_path)
    try:
        os.rename(staged / "bob", inbox / "bob")
        os.rename(staged / "carol", inbox / "carol")
        jobs = daemon.wait_for(all_final(2), what="bob refused, carol failed")
        bob, carol = job_named(jobs, "bob"), job_named(jobs, "carol")
        assert (bob["state"], carol["state"]) == ("rejected", "failed")
        assert "is not a usable token" in bob["error"]
        assert carol["stage"] == "train" and "crash" in carol["error"]
        refused = lorad(cfg, "retry", str(bob["id"]), check=False)
        assert refused.returncode != 0 and "refused for its input" in refused.stderr
        lorad(cfg, "retry", str(carol["id"]))  # the fault fired once: this run trains
        # Bob fixed and dropped again under the same name: a new job.
        fixed = tmp_path / "state" / "failed" / "bob"
        assert "is not a usable token" in (fixed / "error.txt").read_text()
        (fixed / "error.txt").unlink()
        (fixed / "lora.toml").write_text('token = "bob"\n')
        os.rename(fixed, inbox / "bob")
        jobs = daemon.wait_for(lambda js: len(js) == 3 and decided("bob")(js[-1:]) and any(
            j["name"] == "carol" and j["state"] == "done" for j in js),
            what="carol's retry done and the new bob accepted")
    finally:
        assert daemon.stop() == 0
    new_bob = jobs[-1]
    assert new_bob["name"] == "bob" and new_bob["id"] > max(bob["id"], carol["id"])
    assert new_bob["state"] not in ("rejected", "failed")
    assert job_named(jobs[:-1], "bob")["state"] == "rejected"
    carol_events = [e.message for e in daemon.events(carol["id"])]
    assert sum("images ready" in line for line in carol_events) == 1, carol_events
    assert any("retry requested: continues at the train stage" in line for line in carol_events)


def register(store: Store, job_id: int, token: str = "alice", model: str = "sd15", *,
             allow: bool = False, token_asked: bool = False, model_asked: bool = False):
    return store.register_content(job_id, "same photos", token, model, allow_duplicate=allow,
                                  token_asked=token_asked, model_asked=model_asked)


def test_two_copies_of_one_set_prepared_at_the_same_time_train_once(tmp_path):
    """Two preparations finish in either order: whichever registers second is the duplicate."""
    store = Store(tmp_path / "lorad.db")
    first = store.create_job("alice", state="preparing", stage="prepare")
    second = store.create_job("alice copy", state="preparing", stage="prepare")
    assert register(store, second) is None
    earlier = register(store, first)
    assert earlier is not None and earlier.id == second
    third = store.create_job("alice again", state="preparing", stage="prepare")
    assert register(store, third, allow=True) is None
    other = store.create_job("alice as ally", state="preparing", stage="prepare")
    assert register(store, other, "ally", token_asked=True) is None


def test_a_set_whose_lora_toml_asks_for_no_token_or_model_matches_on_its_photos_alone(tmp_path):
    """A token made from another folder name, or another default model, is no new request."""
    store = Store(tmp_path / "lorad.db")
    first = store.create_job("alice", state="preparing", stage="prepare")
    assert register(store, first) is None

    def refused(name: str, *args, **asked) -> int | None:
        job_id = store.create_job(name, state="preparing", stage="prepare")
        earlier = register(store, job_id, *args, **asked)
        store.end(job_id, "rejected", "a duplicate")  # what the prepare stage does
        return earlier.id if earlier else None

    assert refused("Alice (2)", "alice_2") == first
    assert refused("alice", model="sdxl") == first
    assert refused("alice 3", "alice", token_asked=True) == first
    assert refused("alice xl", "alice_xl", "sdxl", model_asked=True) is None
    assert refused("ally", "ally", token_asked=True) is None


def test_a_failed_earlier_job_still_blocks_a_duplicate_and_rejected_or_cancelled_do_not(
        tmp_path):
    store = Store(tmp_path / "lorad.db")
    first = store.create_job("alice", state="preparing", stage="prepare")
    assert register(store, first) is None
    store.end(first, "failed", "the trainer crashed")
    again = store.create_job("alice again", state="preparing", stage="prepare")
    assert register(store, again).id == first
    for state in ("rejected", "cancelled"):
        store.end(first, state, "gone")
        store.end(again, state, "gone")
        later = store.create_job(f"alice after {state}", state="preparing", stage="prepare")
        assert register(store, later) is None
        store.end(later, state, "gone")


def test_the_duplicate_refusal_names_the_earlier_job_and_what_to_do(tmp_path):
    from lorad.dataset.stage import duplicate_message

    store = Store(tmp_path / "lorad.db")
    job_id = store.create_job("alice", state="failed", stage="train", token="alice",
                              model="sd15")
    message = duplicate_message(store.get(job_id))
    assert f"already dropped as job {job_id} (alice, token alice, model sd15, now failed)" \
        in message
    assert f"lorad retry {job_id}" in message and "allow_duplicate = true" in message
    store.update(job_id, state="training")
    message = duplicate_message(store.get(job_id))
    assert f"lorad show {job_id}" in message and "retry" not in message


def test_the_status_line_counts_the_queue_and_names_the_running_jobs(tmp_path, monkeypatch):
    """What systemd shows; built at every turn of the loop, so the queue is counted, not read."""
    from lorad.context import Context
    from lorad.daemon.loop import Daemon as LoradDaemon
    from lorad.settings import Settings

    for name in list(os.environ):
        if name.startswith("LORAD_"):
            monkeypatch.delenv(name)
    settings = Settings(inbox=tmp_path / "inbox", outbox=tmp_path / "outbox",
                        state_dir=tmp_path / "state")
    daemon = LoradDaemon(settings)
    store = Store(settings.db_path)
    daemon.ctx = Context(settings, store)
    for n in range(3):
        store.create_job(f"q{n}", state="queued", stage="train")
    store.create_job("alice", state="training", stage="train", token="alice", progress=0.5)
    store.create_job("bob", state="preparing", stage="prepare")
    store.create_job("carol", state="done", stage="done", finished_at=time.time())
    assert daemon.status_line() == "3 queued, training alice 50%, preparing bob, 1 done today"
    store.close()
