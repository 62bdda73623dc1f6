"""`lorad web` in a real browser (headless Chromium from Debian's packages, driven by Selenium)
beside a real daemon training with the stand-in trainer: progress and epochs arrive without a
reload, a pick, a resume, a folder dropped through the page. Saves a screenshot of the job page
to bench/out/web-job.png for a person to look at."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_process import DaemonProcess
from tests.photos import make_photos
from tests.webprocess import WebProcess

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(__file__).parent.parent / "bench" / "out"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--window-size=1280,1600")

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(f"no browser: {CHROMIUM} and {CHROMEDRIVER} are needed (Debian: apt-get install "
                "chromium chromium-driver)", allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(str(CHROMEDRIVER)))
    yield driver
    driver.quit()


def until(driver: Any, check: Callable[[Any], Any], what: str, timeout: float = 60) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        check, message=f"waiting for {what}")


def text_of(driver: Any, selector: str) -> str:
    """The element's text, read in one step (the page replaces its live parts meanwhile)."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", selector)


def not_reloaded(driver: Any) -> bool:
    """The marker put on the page's window is still there: no reload happened since."""
    return driver.execute_script("return window.loradMarker === 1;")


def watch_the_training(browser: Any, web: WebProcess) -> None:
    """The jobs page shows the training's progress change, and the job's page each epoch's
    samples as it is delivered, without a reload."""
    browser.get(web.url + "/")
    browser.execute_script("window.loradMarker = 1;")
    until(browser, lambda d: "training" in text_of(d, "#job-1 .state"), "job 1 training")
    first = text_of(browser, "#job-1 .progress-text")
    until(browser, lambda d: text_of(d, "#job-1 .progress-text") not in ("", first),
          "the progress to change")
    assert not_reloaded(browser)
    browser.get(web.url + "/jobs/1")
    browser.execute_script("window.loradMarker = 1;")
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#epoch-2 img"),
          "epoch 2's samples on the page")
    assert text_of(browser, "#state") == "training" and not_reloaded(browser)
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#epoch-3.final"),
          "epoch 3, the newest, marked as the LoRA", timeout=90)
    until(browser, lambda d: text_of(d, "#state") == "done", "job 1 done")


def drop_a_folder(browser: Any, web: WebProcess, folder: Path) -> None:
    browser.get(web.url + "/drop")
    browser.find_element(By.ID, "folder").send_keys(str(folder))
    until(browser, lambda d: "4 files" in text_of(d, "#chosen"), "the folder chosen")
    browser.find_element(By.ID, "epochs").send_keys("2")
    browser.find_element(By.ID, "send").click()
    until(browser, lambda d: "is in the inbox" in text_of(d, "#drop-result"),
          "the folder sent: " + text_of(browser, "#drop-result"))


def test_watch_pick_resume_and_drop_in_a_browser(tmp_path, config, fake_trainer, browser):
    fake_trainer(epoch_seconds=3.0)
    cfg = config(watch={"settle_seconds": 0.3, "rescan_seconds": 1.0})
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    web = WebProcess(cfg, tmp_path / "web.log").start()
    try:
        photos = tmp_path / "photos" / "Alice"
        make_photos(photos, 4)
        (photos / "lora.toml").write_text("epochs = 3\n")
        shutil.copytree(photos, tmp_path / "inbox" / "Alice")
        watch_the_training(browser, web)

        # Use epoch 2: <token>.safetensors becomes epoch 2, and the page says so.
        browser.find_element(By.ID, "pick-2").click()
        until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#epoch-2.final"),
              "epoch 2 marked")
        outbox = tmp_path / "outbox" / "alice"
        assert (outbox / "alice.safetensors").read_bytes() == (
            outbox / "alice-000002.safetensors").read_bytes()
        assert "picked" in text_of(browser, "#final-mark")
        assert "epoch 2 is now alice.safetensors" in text_of(browser, "#said")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SCREENSHOTS / "web-job.png"))

        # Train 2 more from epoch 2 (the LoRA): a follow-up job, in the list.
        fake_trainer(epoch_seconds=0.2)
        epochs = browser.find_element(By.CSS_SELECTOR, "#resume-form input[name=epochs]")
        epochs.clear()
        epochs.send_keys("2")
        browser.find_element(By.ID, "resume").click()
        until(browser, lambda d: "job 2 queued: epochs 3 to 4" in text_of(d, "#said"),
              "the follow-up queued")
        browser.get(web.url + "/")
        until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#job-2"), "job 2 listed")
        assert "resume of 1" in text_of(browser, "#job-2")

        # A folder dropped through the page becomes a job that finishes.
        make_photos(tmp_path / "photos" / "Bob Jones", 4, seed=7)
        drop_a_folder(browser, web, tmp_path / "photos" / "Bob Jones")
        browser.get(web.url + "/?state=done")
        until(browser, lambda d: "bob_jones" in text_of(d, "#jobs"), "bob_jones done",
              timeout=120)
        assert sorted(p.name for p in (tmp_path / "outbox" / "bob_jones").glob("*.safetensors")
                      ) == ["bob_jones-000001.safetensors", "bob_jones-000002.safetensors",
                            "bob_jones.safetensors"]
    finally:
        web.stop()
        daemon.stop()


def test_a_progress_change_shows_within_two_seconds(tmp_path, config, browser):
    from lorad.settings import load_settings
    from lorad.store import Store

    cfg = config()
    (tmp_path / "inbox").mkdir()
    store = Store(load_settings(cfg).db_path)
    job = store.create_job("dana", state="training", stage="train", token="dana")
    web = WebProcess(cfg, tmp_path / "web.log").start()
    try:
        browser.get(f"{web.url}/jobs/{job}")
        for n in range(1, 4):
            store.set_progress(job, n / 10, f"epoch 1/3 · step {n}/10")
            changed = time.monotonic()
            until(browser, lambda d, n=n: f"step {n}/10" in text_of(d, "#progress-text"),
                  f"step {n}", timeout=10)
            assert time.monotonic() - changed < 2.0
    finally:
        web.stop()
