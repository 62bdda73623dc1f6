"""`lorad web` without a browser: who may use it, which files it serves, dropped folders, the loss
history and the metrics. The browser tests are in test_web_browser.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from lorad.delivery import manifest
from lorad.settings import load_settings
from lorad.store import Store
from lorad.training.losslog import LossLog, read_points
from lorad.web.app import create_app
from lorad.web.lossplot import loss_svg
from tests.test_systemd import unit_settings
from tests.webprocess import WebProcess, request

SECRET = "s3cret-token-for-tests"


def non_loopback_address() -> str | None:
    """This machine's address on its default route, if it has one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("192.0.2.123", 9))  # no packet is sent: only the route is chosen
            address = sock.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


@pytest.fixture
def web_settings(config, tmp_path):
    (tmp_path / "inbox").mkdir()

    def make(**web):
        return load_settings(config(web=web) if web else config())
    return make


def client_for(settings, host: str = "127.0.0.1:8765") -> TestClient:
    return TestClient(create_app(settings), base_url=f"http://{host}",
                      client=("127.0.0.1", 50000))


def outbox_job(settings, store: Store) -> tuple[int, Path]:
    """A finished job whose outbox folder holds epochs 1 and 2 with a sample each."""
    folder = settings.outbox / "alice"
    (folder / "samples").mkdir(parents=True)
    m = manifest.Manifest(token="alice", prompts=["photo of alice"])
    for epoch in (1, 2):
        name = f"alice-{epoch:06d}.safetensors"
        (folder / name).write_bytes(b"epoch %d" % epoch)
        sample = f"samples/alice_e{epoch:06d}_00.png"
        (folder / sample).write_bytes(b"png %d" % epoch)
        m.epochs[epoch] = manifest.EpochEntry(file=name, job=1, samples=[sample])
    manifest.write(folder, m)
    job = store.create_job("alice", state="done", stage="done", token="alice",
                           outbox_dir=str(folder))
    return job, folder


# ---- who may use it ---------------------------------------------------------------------------
def test_listening_beyond_this_machine_without_a_secret_refuses_to_start(config, tmp_path):
    (tmp_path / "inbox").mkdir()
    done = subprocess.run([sys.executable, "-m", "lorad", "--config", str(config()), "web",
                           "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "without a secret: set [web] token or password" in done.stderr


def test_a_request_from_another_address_without_the_token_is_refused(config, tmp_path):
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to send a request from")
    (tmp_path / "inbox").mkdir()
    web = WebProcess(config(web={"token": SECRET}), tmp_path / "web.log", host="0.0.0.0")
    web.start(address)
    try:
        status, headers, _ = request(address, web.port, "GET", "/api/jobs")
        assert status == 401 and headers["www-authenticate"] == "Bearer"
        status, headers, _ = request(address, web.port, "GET", "/", {"Accept": "text/html"})
        assert status == 303 and headers["location"].startswith("/login?next=")
        status, _, body = request(address, web.port, "GET", "/api/jobs",
                                  {"Authorization": f"Bearer {SECRET}"})
        assert status == 200 and json.loads(body) == {"active": [], "finished": []}
        status, _, _ = request(address, web.port, "GET", "/metrics",
                               {"Authorization": "Bearer wrong"})
        assert status == 401
    finally:
        web.stop()


def test_the_login_form_sets_a_cookie_only_for_the_right_secret(web_settings):
    client = client_for(web_settings(password="hunter22"))
    csrf = client.app.state.web.guard.csrf
    wrong = client.post("/login", data={"secret": "nope", "csrf": csrf, "next": "/drop"},
                        follow_redirects=False)
    assert wrong.status_code == 303 and "wrong+token+or+password" in wrong.headers["location"]
    assert client.get("/api/jobs").status_code == 401
    right = client.post("/login", data={"secret": "hunter22", "csrf": csrf, "next": "//evil"},
                        follow_redirects=False)
    assert right.status_code == 303 and right.headers["location"] == "/"  # no open redirect
    assert client.get("/api/jobs").status_code == 200


def test_without_a_secret_only_this_machine_by_a_loopback_name_is_answered(web_settings):
    settings = web_settings()
    assert client_for(settings).get("/api/jobs").status_code == 200
    rebound = client_for(settings, host="attacker.example:8765")  # DNS rebinding
    assert rebound.get("/api/jobs").status_code == 403
    elsewhere = TestClient(create_app(settings), base_url="http://127.0.0.1:8765",
                           client=("192.0.2.50", 4000))
    assert elsewhere.get("/").status_code == 403


def test_a_cross_site_post_is_refused(web_settings):
    settings = web_settings()
    store = Store(settings.db_path)
    job, folder = outbox_job(settings, store)
    client = client_for(settings)
    csrf = client.app.state.web.guard.csrf
    other_site = client.post(f"/jobs/{job}/pick", data={"epoch": "1", "csrf": csrf},
                             headers={"Origin": "http://attacker.example"})
    assert other_site.status_code == 403
    no_token = client.post(f"/jobs/{job}/pick", data={"epoch": "1"},
                           headers={"Origin": "http://127.0.0.1:8765"})
    assert no_token.status_code == 403
    assert not (folder / "alice.safetensors").exists()
    same_site = client.post(f"/jobs/{job}/pick", data={"epoch": "1", "csrf": csrf},
                            headers={"Origin": "http://127.0.0.1:8765"}, follow_redirects=False)
    assert same_site.status_code == 303 and "said=" in same_site.headers["location"]
    assert (folder / "alice.safetensors").read_bytes() == b"epoch 1"


# ---- files ------------------------------------------------------------------------------------
def test_dot_dot_and_symbolic_link_tricks_in_file_requests_are_refused(config, tmp_path):
    (tmp_path / "inbox").mkdir()
    settings = load_settings(config())
    store = Store(settings.db_path)
    job, folder = outbox_job(settings, store)
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve me")
    (folder / "dataset.png").symlink_to(secret)  # a known name, but a link
    (folder / "train.log").symlink_to(secret)
    m = manifest.read(folder)
    m.epochs[2].samples.append("../../secret.txt")  # a manifest edited by hand
    manifest.write(folder, m)
    os.symlink(secret, folder / "samples" / "alice_e000001_01.png")
    m.epochs[1].samples.append("samples/alice_e000001_01.png")
    manifest.write(folder, m)
    web = WebProcess(config(), tmp_path / "web.log").start()
    try:
        ok, _, body = request("127.0.0.1", web.port, "GET",
                              f"/jobs/{job}/files/samples/alice_e000002_00.png")
        assert (ok, body) == (200, b"png 2")
        for target in (f"/jobs/{job}/files/../../secret.txt",
                       f"/jobs/{job}/files/%2e%2e/%2e%2e/secret.txt",
                       f"/jobs/{job}/files/..%2f..%2fsecret.txt",
                       f"/jobs/{job}/files/samples/../../secret.txt",
                       f"/jobs/{job}/files/{secret}",
                       f"/jobs/{job}/files/dataset.png",
                       f"/jobs/{job}/files/train.log",
                       f"/jobs/{job}/files/samples/alice_e000001_01.png",
                       f"/jobs/{job}/files/lorad.toml"):
            status, _, body = request("127.0.0.1", web.port, "GET", target)
            assert status in (400, 404) and b"do not serve me" not in body, (target, status)
    finally:
        web.stop()


# ---- a folder dropped through the page --------------------------------------------------------
def announce(client: TestClient, name: str, files: dict[str, bytes], **form: str):
    return client.post("/drop/start", headers={"X-CSRF-Token": client.app.state.web.guard.csrf},
                       json={"name": name, **form, "files": [
                           {"path": path, "size": len(data)} for path, data in files.items()]})


def test_a_dropped_folder_reaches_the_inbox_whole_or_not_at_all(web_settings, tmp_path):
    client = client_for(web_settings())
    csrf = {"X-CSRF-Token": client.app.state.web.guard.csrf}
    files = {"a.jpg": b"1" * 1000, "sub/b.png": b"2" * 10, "a.txt": b"alice, smiling",
             "Thumbs.db": b"x", "notes.pdf": b"%PDF"}
    started = announce(client, "Alice Smith", files, token="alice_s", epochs="3").json()
    assert started["send"] == ["a.jpg", "a.txt", "sub/b.png"]
    assert len(started["skipped"]) == 2
    inbox = tmp_path / "inbox"
    for path in started["send"]:
        assert [p.name for p in inbox.iterdir()] == [f".lorad-upload-{started['id']}"]
        sent = client.put(f"/drop/{started['id']}/file", params={"path": path},
                          content=files[path], headers=csrf)
        assert sent.status_code == 200, sent.text
    early = client.put(f"/drop/{started['id']}/file", params={"path": "a.jpg"}, content=b"1",
                       headers=csrf)
    assert early.status_code == 400  # each file once
    done = client.post(f"/drop/{started['id']}/finish", headers=csrf)
    assert done.json() == {"folder": "Alice Smith"}
    folder = inbox / "Alice Smith"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        ".lorad-ready", "a.jpg", "a.txt", "lora.toml", "sub/b.png"]
    assert (folder / "lora.toml").read_text() == 'token = "alice_s"\nepochs = 3\n'
    assert (folder / "a.jpg").read_bytes() == files["a.jpg"]


@pytest.mark.parametrize(("name", "files", "form", "says"), [
    (".hidden", {"a.jpg": b"1"}, {}, "cannot be a subject folder's name"),
    ("a/b", {"a.jpg": b"1"}, {}, "cannot be a subject folder's name"),
    ("x!", {"a.jpg": b"1"}, {}, "no token can be made"),
    ("Bob", {"../a.jpg": b"1"}, {}, "not a usable file name"),
    ("Bob", {"a.jpg": b"1" * 2048}, {}, "larger than 0.001 MB"),
    ("Bob", {f"{i}.jpg": b"1" for i in range(4)}, {}, "at most 3 ([web] max_files)"),
    ("Bob", {"a.jpg": b"1"}, {"model": "nope"}, "no model 'nope'"),
    ("Bob", {"a.jpg": b"1"}, {"epochs": "0"}, "epochs must be 1 to"),
    ("Bob", {"a.jpg": b"1", "lora.toml": b""}, {"epochs": "2"}, "has its own lora.toml"),
    ("Taken", {"a.jpg": b"1"}, {}, "already holds"),
    ("Bob", {"notes.pdf": b"1"}, {}, "holds no photo"),
])
def test_a_dropped_folder_is_checked_before_any_byte_arrives(web_settings, tmp_path, name,
                                                               files, form, says):
    client = client_for(web_settings(max_files=3, max_file_mb=0.001))
    (tmp_path / "inbox" / "Taken").mkdir()
    refused = announce(client, name, files, **form)
    assert refused.status_code == 400 and says in refused.json()["error"]
    assert sorted(p.name for p in (tmp_path / "inbox").iterdir()) == ["Taken"]


def test_a_file_longer_than_announced_is_refused_and_nothing_reaches_the_inbox(web_settings,
                                                                               tmp_path):
    client = client_for(web_settings())
    csrf = {"X-CSRF-Token": client.app.state.web.guard.csrf}
    started = announce(client, "Carol", {"a.jpg": b"12345"}).json()
    sent = client.put(f"/drop/{started['id']}/file", params={"path": "a.jpg"},
                      content=b"1234567890", headers=csrf)
    assert sent.status_code == 400 and "larger than announced" in sent.json()["error"]
    finish = client.post(f"/drop/{started['id']}/finish", headers=csrf)
    assert finish.status_code == 409 and "have not arrived" in finish.json()["error"]
    client.post(f"/drop/{started['id']}/abandon", headers=csrf)
    assert list((tmp_path / "inbox").iterdir()) == []


# ---- loss history and metrics -------------------------------------------------------------------
def test_the_loss_history_keeps_at_most_a_point_a_second(tmp_path):
    now = [0.0]
    log = LossLog(tmp_path / "loss.jsonl", clock=lambda: now[0])
    written = []
    for step in range(1, 101):  # 100 steps in 10 seconds
        now[0] = step * 0.1
        written.append(log.record(step, 1, 0.5 - step / 1000))
    assert sum(written) == 10
    assert not log.record(100, 1, 0.1)  # the same step again
    points = read_points(tmp_path / "loss.jsonl")
    assert [p["step"] for p in points][:3] == [1, 11, 21]
    (tmp_path / "loss.jsonl").open("a").write('{"t": 1, "step": ')  # a torn last line
    assert len(read_points(tmp_path / "loss.jsonl")) == 10
    svg = loss_svg(points)
    assert svg.startswith("<svg") and "<polyline" in svg


def test_metrics_read_the_store_at_scrape_time(web_settings):
    settings = web_settings()
    store = Store(settings.db_path)
    outbox_job(settings, store)
    training = store.create_job("bob", state="training", stage="train", token="bob")
    store.set_progress(training, 0.25, "epoch 1/4")
    store.create_job("carol", state="queued", stage="caption")
    note = store.add_notification(training, "failed", "t", "b", None, [])
    store.update_notification(note, state="gave_up")
    text = client_for(settings).get("/metrics").text
    assert 'lorad_jobs{state="done"} 1.0' in text
    assert 'lorad_queue_length{stage="caption"} 1.0' in text
    assert "lorad_gpu_slots_busy 1.0" in text
    assert 'lorad_training_progress_ratio{job="2",token="bob"} 0.25' in text
    assert 'lorad_training_last_update_timestamp_seconds{job="2",token="bob"}' in text
    assert "lorad_epochs_delivered 2.0" in text
    assert "lorad_notifications_failed 1.0" in text


def test_the_web_unit_runs_lorad_web_with_the_daemons_folders_and_sandbox():
    units = Path(__file__).parent.parent / "systemd"
    web, daemon = (unit_settings(units / name) for name in ("lorad-web.service",
                                                            "lorad.service"))
    assert web["ExecStart"][0].endswith("lorad --config /etc/lorad/lorad.toml web")
    for key in ("User", "ReadWritePaths", "RequiresMountsFor", "ProtectSystem", "ProtectHome",
                "PrivateTmp", "NoNewPrivileges", "CapabilityBoundingSet"):
        assert web[key] == daemon[key], key
    assert "DeviceAllow" not in web and web["PrivateDevices"] == ["yes"]  # no GPU needed
