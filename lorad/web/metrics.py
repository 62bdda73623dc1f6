"""`/metrics`: the store as Prometheus reads it, collected at scrape time (nothing is counted in
the web process itself, so a restart of it loses nothing).

An alert for a stuck trainer: `time() - lorad_training_last_update_timestamp_seconds > 600`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lorad.delivery import manifest
from lorad.settings import Settings
from lorad.store import ACTIVE, FINAL, RUNNING, Store

STATES = ("claiming", *ACTIVE, *FINAL)
GPU_STATES = ("training", "captioning")


class StoreCollector(Collector):
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store

    def collect(self) -> Iterator[Metric]:
        conn = self.store.conn
        with self.store.snapshot():
            by_state = dict(conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"))
            queued = dict(conn.execute(
                "SELECT stage, COUNT(*) FROM jobs WHERE state = 'queued' GROUP BY stage"))
            training = conn.execute(
                "SELECT id, token, name, progress, updated_at FROM jobs WHERE state = 'training' "
                "ORDER BY id").fetchall()
            outboxes = [r[0] for r in conn.execute(
                "SELECT DISTINCT outbox_dir FROM jobs WHERE outbox_dir IS NOT NULL")]
            notes = dict(conn.execute(
                "SELECT state, COUNT(*) FROM notifications GROUP BY state"))
        jobs = GaugeMetricFamily("lorad_jobs", "Jobs by state", labels=["state"])
        for state in (*STATES, *sorted(set(by_state) - set(STATES))):
            jobs.add_metric([state], by_state.get(state, 0))
        yield jobs
        queue = GaugeMetricFamily("lorad_queue_length", "Jobs queued for each stage",
                                  labels=["stage"])
        for stage in RUNNING:
            queue.add_metric([stage], queued.get(stage, 0))
        yield queue
        yield GaugeMetricFamily("lorad_gpu_slots_busy", "Jobs training or captioning",
                                value=sum(by_state.get(s, 0) for s in GPU_STATES))
        yield GaugeMetricFamily("lorad_gpu_slots", "GPUs lorad trains on (gpus)",
                                value=len(self.settings.gpus))
        yield from self.trainings(training)
        yield GaugeMetricFamily("lorad_epochs_delivered",
                                "Epoch files listed in the outbox folders' manifests",
                                value=sum(len(manifest.read(Path(f)).epochs) for f in outboxes))
        sent = GaugeMetricFamily("lorad_notifications", "Notifications by state",
                                 labels=["state"])
        for state in ("pending", "sent", "gave_up"):
            sent.add_metric([state], notes.get(state, 0))
        yield sent
        yield GaugeMetricFamily("lorad_notifications_failed",
                                "Notifications given up after every retry",
                                value=notes.get("gave_up", 0))

    @staticmethod
    def trainings(rows: list) -> Iterator[Metric]:
        progress = GaugeMetricFamily("lorad_training_progress_ratio",
                                     "Each running training's progress, 0 to 1",
                                     labels=["job", "token"])
        updated = GaugeMetricFamily("lorad_training_last_update_timestamp_seconds",
                                    "When each running training last reported progress",
                                    labels=["job", "token"])
        for job_id, token, name, fraction, at in rows:
            labels = [str(job_id), token or name]
            progress.add_metric(labels, fraction)
            updated.add_metric(labels, at)
        yield progress
        yield updated
