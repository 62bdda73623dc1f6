"""Benchmark: `lorad web` with --jobs jobs in its store (default 300).

1. the jobs page (`GET /`) and its live part (`GET /live/jobs`, what the page polls each
   second): median and 95th percentile of --requests requests, against the CLI's
   `lorad status --json` (a process started per look, as `lorad status --watch` users and scripts
   do);
2. the web process's memory after them (VmRSS, and the peak VmHWM, /proc/PID/status);
3. with Debian's chromium and chromedriver: how long a progress change in the store takes to show
   in the browser on the job's page (--changes changes).

    python bench/web.py
    python bench/web.py --jobs 1000 --requests 50
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT))

from lorad.settings import load_settings  # noqa: E402
from lorad.store import Store  # noqa: E402
from tests.webprocess import WebProcess  # noqa: E402

STATES = ("done",) * 8 + ("failed", "training", "queued", "rejected")


def fill(store: Store, count: int) -> int:
    """`count` jobs in a mix of states, the training ones with progress. A training job's id."""
    training = 0
    for n in range(count):
        state = STATES[n % len(STATES)]
        job = store.create_job(f"Subject {n}", state=state, stage="train", token=f"subject_{n}",
                               model="sd15", train={"target": 6, "runs": [{"offset": 0}],
                               "progress": {"epoch": 2, "epochs": 6, "step": 130,
                                            "total_steps": 600, "loss": 0.112,
                                            "speed_it_s": 1.92, "eta_seconds": 245}})
        if state == "training":
            store.set_progress(job, 0.2, "epoch 2/6 · step 130/600 · loss 0.112 · ETA 4m05s")
            training = job
        elif state == "failed":
            store.end(job, "failed", "Training crashed: RuntimeError (gave up after 3 attempts)")
        for i in range(5):
            store.event(job, f"event {i} of job {job}")
    return training


def timed_get(port: int, path: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    start = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    elapsed = time.perf_counter() - start
    conn.close()
    assert response.status == 200, (path, response.status)
    return elapsed


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"median {statistics.median(times) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms"


def memory(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) // 1024
    return fields


def browser_latency(url: str, store: Store, job: int, changes: int) -> list[float] | None:
    if not (Path("/usr/bin/chromium").exists() and Path("/usr/bin/chromedriver").exists()):
        return None
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    profile = tempfile.mkdtemp(prefix="lorad-bench-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService("/usr/bin/chromedriver"))
    read = "const e = document.getElementById('progress-text'); return e ? e.innerText : '';"
    latencies = []
    try:
        driver.get(f"{url}/jobs/{job}")
        for n in range(changes):
            text = f"epoch 3/6 · step {200 + n}/600"
            store.set_progress(job, 0.3, text)
            changed = time.monotonic()
            while text not in driver.execute_script(read):
                time.sleep(0.01)
            latencies.append(time.monotonic() - changed)
            time.sleep(0.37)  # changes land at different moments of the page's polling cycle
    finally:
        driver.quit()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--changes", type=int, default=10)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="lorad-bench-web-"))
    (folder / "inbox").mkdir()
    config = folder / "lorad.toml"
    config.write_text(f'inbox = "{folder}/inbox"\noutbox = "{folder}/outbox"\n'
                      f'state_dir = "{folder}/state"\n[models.sd15]\npath = "x"\n'
                      'family = "sd15"\n')
    store = Store(load_settings(config).db_path)
    training = fill(store, args.jobs)
    web = WebProcess(config, folder / "web.log").start()
    try:
        assert web.proc is not None
        for _ in range(3):
            timed_get(web.port, "/")
        page = [timed_get(web.port, "/") for _ in range(args.requests)]
        live = [timed_get(web.port, "/live/jobs") for _ in range(args.requests)]
        job_page = [timed_get(web.port, f"/jobs/{training}") for _ in range(args.requests)]
        cli = []
        for _ in range(5):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "lorad", "--config", str(config), "status",
                            "--json"], check=True, capture_output=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
            cli.append(time.perf_counter() - start)
        print(f"{args.jobs} jobs in the store")
        print(f"GET / (the jobs page):          {summary(page)} (target < 300 ms)")
        print(f"GET /live/jobs (each second):   {summary(live)}")
        print(f"GET /jobs/{training} (a job's page):   {summary(job_page)}")
        print(f"lorad status --json (the CLI):  {summary(cli)} per look, a process each")
        mem = memory(web.proc.pid)
        print(f"lorad web memory: {mem['VmRSS']} MB resident, {mem['VmHWM']} MB peak "
              "(target < 100 MB)")
        latencies = browser_latency(web.url, store, training, args.changes)
        if latencies is None:
            print("progress change to the browser: skipped (no /usr/bin/chromium and "
                  "chromedriver)")
        else:
            print(f"progress change to the browser: median {statistics.median(latencies):.2f} s, "
                  f"max {max(latencies):.2f} s over {len(latencies)} changes (target < 2 s)")
    finally:
        web.stop()


if __name__ == "__main__":
    main()
