"""Failure reasons read from Kohya's output, not from the exit status accelerate flattens to 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorad.training.kohya.failures import classify

DATA = Path(__file__).parent / "data" / "kohya"


def recorded(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def test_a_run_that_exits_0_with_a_model_is_no_failure() -> None:
    assert classify(recorded("normal_run.log"), 0, wrote_model=True) is None


def test_cuda_out_of_memory_is_recognised_from_the_traceback() -> None:
    failure = classify(recorded("oom.log"), 1, wrote_model=False)
    assert failure is not None and failure.kind == "oom"
    assert failure.message == "The GPU ran out of memory (it tried to allocate 20.00 MiB more)"


@pytest.mark.parametrize(
    "line",
    ["torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
     "RuntimeError: CUDA out of memory. Tried to allocate 512.00 MiB (GPU 0; 8.00 GiB total)",
     "RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
     "torch.OutOfMemoryError: HIP out of memory. Tried to allocate 1.00 GiB"],
)
def test_every_known_out_of_memory_text_is_oom(line: str) -> None:
    failure = classify(f"Traceback (most recent call last):\n{line}\n", 1, wrote_model=False)
    assert failure is not None and failure.kind == "oom"


def test_exit_status_1_alone_is_not_oom() -> None:
    failure = classify("Traceback (most recent call last):\nKeyError: 'ss_epoch'\n", 1, False)
    assert failure is not None and failure.kind == "crash"


def test_missing_model_names_the_path_and_the_models_setting() -> None:
    failure = classify(recorded("missing_model.log"), 1, wrote_model=False)
    assert failure is not None and failure.kind == "missing_model"
    assert "/srv/models/v1-5-pruned-emaonly.safetensors" in failure.message
    assert "[models]" in failure.message


def test_no_data_found_is_a_failure_although_kohya_exits_0() -> None:
    failure = classify(recorded("no_data.log"), 0, wrote_model=False)
    assert failure is not None and failure.kind == "no_data"


def test_argparse_errors_are_bad_args_directly_or_through_accelerate() -> None:
    tail = ("usage: train_network.py [-h] [--console_log_level {DEBUG,INFO,WARNING,ERROR,"
            "CRITICAL}]\n                        [--v2] [--v_parameterization]\n"
            "train_network.py: error: unrecognized arguments: --text_encoder_lr1 5e-05\n")
    for exit_code in (2, 1):
        failure = classify(tail, exit_code, wrote_model=False)
        assert failure is not None and failure.kind == "bad_args"
        assert failure.message == ("Kohya rejected its arguments: unrecognized arguments: "
                                   "--text_encoder_lr1 5e-05")


CHECK = "AssertionError: when caching latents, either color_aug or random_crop cannot be used"


def through_accelerate(line: str) -> str:
    """The recorded missing-model run (through accelerate) with the trainer's error swapped."""
    return recorded("missing_model.log").replace(
        'ValueError: The provided pretrained_model_name_or_path "/srv/models/'
        'v1-5-pruned-emaonly.safetensors" is neither a valid local path nor a valid repo id. '
        "Please check the parameter.", line)


def test_a_crash_reports_the_trainers_exception_not_accelerates() -> None:
    line = "RuntimeError: expected m1 and m2 to have the same dtype, but got: c10::Half != float"
    failure = classify(through_accelerate(line), 1, wrote_model=False)
    assert failure is not None and failure.kind == "crash"
    assert failure.message == f"Training crashed: {line}"


@pytest.mark.parametrize("line", [
    CHECK,
    "ValueError: scheduler cosine_with_restarts needs lr_scheduler_num_cycles",
    "ModuleNotFoundError: No module named 'lycoris'",
])
def test_kohyas_checks_before_training_are_refusals_with_its_own_message(line: str) -> None:
    for tail, started in ((through_accelerate(line), None), (f"Traceback\n{line}\n", False)):
        failure = classify(tail, 1, wrote_model=False, training_started=started)
        assert failure is not None and failure.kind == "refused"
        assert failure.message == f"Kohya refused the settings: {line}"


def test_the_same_error_once_training_runs_is_a_crash() -> None:
    failure = classify(f"epoch 1/2\n{CHECK}\n", 1, wrote_model=False, training_started=True)
    assert failure is not None and failure.kind == "crash"
    tail = "running training / 学習開始\nepoch 1/2\nValueError: NaN in the loss\n"
    assert classify(tail, 1, wrote_model=False).kind == "crash"


def test_a_missing_training_script_names_the_setting() -> None:
    tail = ("/opt/kohya/venv/bin/python: can't open file '/opt/sd-scripts/train_network.py': "
            "[Errno 2] No such file or directory\n")
    failure = classify(tail, 2, wrote_model=False)
    assert failure is not None and failure.kind == "missing_script"
    assert failure.message == ("Kohya's training script '/opt/sd-scripts/train_network.py' was "
                               "not found; check [kohya] sd_scripts in lorad.toml")


def test_a_crash_without_a_traceback_reports_its_last_line() -> None:
    failure = classify("loading model\nSegmentation fault (core dumped)\n", 139, False)
    assert failure is not None and failure.kind == "crash"
    assert failure.message == "Training crashed: Segmentation fault (core dumped)"


def test_a_killed_trainer_is_reported_with_its_signal() -> None:
    failure = classify("steps:  5%|▌         | 1/20 [00:06<02:01,  6.40s/it]", -9, False)
    assert failure is not None and failure.kind == "crash"
    assert "SIGKILL" in failure.message and "memory (RAM)" in failure.message
    through_accelerate = ("subprocess.CalledProcessError: Command '['python', 'train_network.py']'"
                          " died with <Signals.SIGKILL: 9>.\n")
    failure = classify(through_accelerate, 1, False)
    assert failure is not None and "SIGKILL" in failure.message


def test_exit_0_without_a_model_is_no_model() -> None:
    failure = classify(recorded("normal_run.log"), 0, wrote_model=False)
    assert failure is not None and failure.kind == "no_model"


def test_messages_are_one_short_line() -> None:
    long_error = "RuntimeError: " + "x" * 1000
    failure = classify(long_error, 1, False)
    assert failure is not None
    assert len(failure.message) <= 240 and "\n" not in failure.message
