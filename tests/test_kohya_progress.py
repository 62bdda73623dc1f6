"""Kohya's console output as progress: line splitting on \\r and \\n, epochs, the tqdm bar."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorad.training.kohya.progress import LineSplitter, Progress, ProgressTracker, format_duration

DATA = Path(__file__).parent / "data" / "kohya"


def lines_of(name: str, chunk_size: int = 7) -> list[str]:
    """A recorded stream fed in small byte chunks (splitting UTF-8 characters and \\r\\n)."""
    raw = (DATA / name).read_bytes()
    splitter = LineSplitter()
    lines = []
    for start in range(0, len(raw), chunk_size):
        lines += splitter.feed(raw[start:start + chunk_size])
    return lines + splitter.flush()


def snapshot_at(lines: list[str], snapshots: list[Progress], text: str) -> Progress:
    """The snapshot taken right after the first line containing text."""
    return snapshots[next(i for i, line in enumerate(lines) if text in line)]


def track(lines: list[str]) -> tuple[ProgressTracker, list[Progress]]:
    tracker = ProgressTracker()
    snapshots = []
    for line in lines:
        tracker.feed(line)
        snapshots.append(tracker.snapshot())
    return tracker, snapshots


def test_splitter_splits_on_cr_lf_and_crlf_and_keeps_partial_lines() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"one\r\ntwo\rthr") == ["one", "two"]
    assert splitter.feed(b"ee\r") == ["three"]
    assert splitter.feed(b"\nfour\n\n\rfive") == ["four"]
    assert splitter.flush() == ["five"]
    assert splitter.flush() == []


def test_splitter_joins_utf8_characters_split_across_chunks() -> None:
    encoded = "steps: |█▌| 1/2\n".encode()
    splitter = LineSplitter()
    lines = [line for byte in encoded for line in splitter.feed(bytes([byte]))]
    assert lines == ["steps: |█▌| 1/2"]


def test_splitter_accepts_text_and_cuts_endless_lines() -> None:
    splitter = LineSplitter(max_line=10)
    assert splitter.feed("a" * 25) == ["a" * 10, "a" * 10]
    assert splitter.flush() == ["a" * 5]


def test_recorded_run_is_split_into_its_bar_redraws() -> None:
    lines = lines_of("normal_run.log")
    bars = [line for line in lines if line.startswith("steps:")]
    assert len(bars) == 22  # 0/20, then one redraw per step, and the closing redraw
    assert "epoch 2/2" in lines and "model saved." in lines
    assert all("\r" not in line and "\n" not in line for line in lines)


def test_normal_run_progress_follows_epochs_bar_and_saved_checkpoints() -> None:
    lines = lines_of("normal_run.log")
    tracker, snapshots = track(lines)
    mid = snapshot_at(lines, snapshots, " 13/20 ")
    assert (mid.epoch, mid.epochs, mid.step, mid.total_steps) == (2, 2, 13, 20)
    assert mid.fraction == pytest.approx(0.65)
    assert mid.loss == pytest.approx(0.106)
    assert mid.speed_it_s == pytest.approx(1 / 6.40)
    assert mid.eta_seconds == 45  # 7 steps at 6.40 s each
    assert mid.epoch_fraction == pytest.approx(0.3)
    end = tracker.snapshot()
    assert (end.step, end.fraction, end.eta_seconds) == (20, 1.0, 0)
    assert tracker.checkpoints == 2
    assert tracker.saved_files == ["/var/lib/lorad/work/000007/runs/01/s1lv10-000001.safetensors",
                                   "/var/lib/lorad/work/000007/runs/01/s1lv10.safetensors"]
    assert tracker.model_saved
    assert all(b.step >= a.step for a, b in zip(snapshots, snapshots[1:], strict=False))


def test_resumed_run_counts_from_its_epoch_although_the_bar_restarts_at_zero() -> None:
    lines = lines_of("resumed_run.log")
    tracker, snapshots = track(lines)
    at_five = snapshot_at(lines, snapshots, " 5/20 ")
    assert (at_five.epoch, at_five.step, at_five.total_steps) == (2, 15, 20)
    assert at_five.fraction == pytest.approx(0.75)
    assert at_five.eta_seconds == round(5 * 0.52)
    end = tracker.snapshot()
    assert (end.epoch, end.step, end.fraction) == (2, 20, 1.0)


def test_bar_before_any_loss_or_speed_is_read() -> None:
    tracker = ProgressTracker()
    tracker.feed("  num epochs / epoch数: 3")
    tracker.feed("  total optimization steps / 学習ステップ数: 30")
    assert tracker.feed("steps:   0%|          | 0/30 [00:00<?, ?it/s]") is True
    progress = tracker.snapshot()
    assert (progress.step, progress.total_steps, progress.loss, progress.speed_it_s,
            progress.eta_seconds) == (0, 30, None, None, None)
    assert progress.describe() == "step 0/30"


def test_feed_tells_bar_redraws_from_other_lines() -> None:
    tracker = ProgressTracker()
    assert tracker.feed("caching latents: 100%|██████████| 20/20 [00:03<00:00,  6.1it/s]") is True
    assert tracker.feed("epoch 1/2") is False
    assert tracker.feed("validation steps:  50%|█████     | 2/4 [00:01<00:01,  2.00it/s]") is True
    assert tracker.snapshot().step == 0  # neither bar is the training bar


def test_fast_runs_report_iterations_per_second_and_other_postfix_keys() -> None:
    tracker = ProgressTracker()
    for line in ("  num epochs / epoch数: 6", "  total optimization steps / 学習ステップ数: 600",
                 "steps:   0%|          | 0/600 [00:00<?, ?it/s]", "epoch 1/6", "epoch 2/6",
                 "steps:  22%|██▏       | 130/600 "
                 "[01:07<04:05,  1.92it/s, Keys Scaled=0, Average key norm=0.01, avr_loss=0.112]"):
        tracker.feed(line)
    progress = tracker.snapshot()
    assert progress.describe() == "epoch 2/6 · step 130/600 · loss 0.112 · 1.92 it/s · ETA 4m05s"


def test_bar_lines_arriving_after_the_epoch_line_do_not_shift_the_count() -> None:
    # stdout and stderr read apart: the epoch-2 line comes before the bar's last epoch-1 redraw
    tracker = ProgressTracker()
    for line in ("  num epochs / epoch数: 2", "  total optimization steps / 学習ステップ数: 20",
                 "epoch 1/2", "steps:  45%|████▌     | 9/20 [00:09<00:11,  1.00it/s]",
                 "epoch 2/2", "steps:  50%|█████     | 10/20 [00:10<00:10,  1.00it/s]",
                 "steps:  55%|█████▌    | 11/20 [00:11<00:09,  1.00it/s]"):
        tracker.feed(line)
    progress = tracker.snapshot()
    assert (progress.epoch, progress.step) == (2, 11)


def test_progress_in_real_epochs_after_network_weights() -> None:
    # a follow-up run of 2 epochs on top of 6 finished ones: Kohya says "epoch 1/2"
    tracker = ProgressTracker()
    for line in ("  num epochs / epoch数: 2", "  total optimization steps / 学習ステップ数: 200",
                 "epoch 1/2",
                 "steps:  25%|██▌       | 50/200 [00:25<01:15,  2.00it/s, avr_loss=0.09]"):
        tracker.feed(line)
    real = tracker.snapshot().shifted(6, 8)
    assert (real.epoch, real.epochs, real.step, real.total_steps) == (7, 8, 650, 800)
    assert real.eta_seconds == 75
    assert tracker.snapshot().describe(epoch_offset=6, epochs_total=8).startswith(
        "epoch 7/8 · step 650/800")


def test_seconds_to_epoch_end_and_as_dict() -> None:
    progress = Progress(epoch=2, epochs=4, step=150, total_steps=400, fraction=0.375, loss=0.1,
                        speed_it_s=2.0, eta_seconds=125)
    assert progress.seconds_to_epoch_end() == 25.0
    assert progress.epoch_fraction == 0.5
    assert progress.as_dict()["step"] == 150
    assert Progress(None, None, 0, None, 0.0, None, None, None).describe() == "starting"


@pytest.mark.parametrize(("seconds", "text"), [(45, "45s"), (245, "4m05s"), (3725, "1h02m")])
def test_durations_read_well_on_a_phone(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text
