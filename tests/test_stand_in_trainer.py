"""The stand-in sd-scripts folder (tests/sd_scripts) behaves like Kohya's trainer from the outside.

Every test runs the stand-in as lorad would: a subprocess with cwd = the sd_scripts folder,
either `python train_network.py ARGS` or `python -m accelerate.commands.launch ... SCRIPT ARGS`.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from safetensors import SafetensorError, safe_open

SD_SCRIPTS = Path(__file__).parent / "sd_scripts"
LAUNCH_OPTIONS = [
    "--num_cpu_threads_per_process", "2", "--num_processes", "1", "--num_machines", "1",
    "--mixed_precision", "fp16", "--dynamo_backend", "no",
]
STEPS_PER_EPOCH = 6  # 3 images x 4 repeats / batch size 2


@dataclass
class Workspace:
    root: Path
    model: Path
    data: Path
    output: Path
    control: Path


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def make_workspace(root: Path) -> Workspace:
    model = root / "base.safetensors"
    model.write_bytes(b"\0" * 16)
    subject = root / "data" / "4_s1lv10"
    subject.mkdir(parents=True)
    for i, colour in enumerate(["red", "green", "blue"]):
        Image.new("RGB", (16, 16), colour).save(subject / f"img{i}.png")
    (subject / "img0.txt").write_text("s1lv10, a woman, Smiling\nignored second line\n", "utf-8")
    (root / "data" / "notes").mkdir()  # no repeat count: ignored with a warning
    (root / "data" / "0_nothing").mkdir()  # zero repeats: ignored silently
    return Workspace(root, model, root / "data", root / "out", root / "control.json")


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


def trainer_args(ws: Workspace, *extra: str, epochs: int = 2) -> list[str]:
    return [
        "--pretrained_model_name_or_path", str(ws.model), "--train_data_dir", str(ws.data),
        "--output_dir", str(ws.output), "--output_name", "s1lv10", "--network_module",
        "networks.lora", "--network_dim", "8", "--network_alpha", "4", "--resolution", "512",
        "--train_batch_size", "2", "--max_train_epochs", str(epochs), "--caption_extension",
        ".txt", "--learning_rate", "1e-4", "--mixed_precision", "fp16", "--console_log_simple",
        "--seed", "7", *extra,
    ]


def command(script: str, args: list[str], launch: list[str] | None) -> list[str]:
    """`python SCRIPT ARGS`, or through accelerate with lorad's launch options plus `launch`."""
    if launch is None:
        return [sys.executable, script, *args]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", *LAUNCH_OPTIONS, *launch]
    return [*launcher, script, *args]


def environment(ws: Workspace | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FAKE_SD_SCRIPTS"}
    if ws is not None:
        env["FAKE_SD_SCRIPTS"] = str(ws.control)
    return env | extra


def train(
    args: list[str],
    ws: Workspace | None = None,
    script: str = "train_network.py",
    launch: list[str] | None = None,
    **env: str,
) -> Run:
    done = subprocess.run(
        command(script, args, launch), cwd=SD_SCRIPTS, env=environment(ws, **env),
        capture_output=True, timeout=30,
    )
    # bytes, not text=True: universal newlines would turn the bar's "\r" into "\n"
    return Run(done.returncode, done.stdout.decode(), done.stderr.decode())


def start(args: list[str], ws: Workspace, launch: list[str] | None = None) -> subprocess.Popen:
    """A run in its own process group, its streams in files (read them while it runs)."""
    return subprocess.Popen(
        command("train_network.py", args, launch), cwd=SD_SCRIPTS, env=environment(ws),
        stdout=open(ws.root / "stdout", "w"), stderr=open(ws.root / "stderr", "w"),  # noqa: SIM115
        start_new_session=True,
    )


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def set_control(ws: Workspace, *faults: dict, step_seconds: float = 0.0) -> None:
    ws.control.write_text(json.dumps({"step_seconds": step_seconds, "faults": list(faults)}))


def metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="np") as f:
        return f.metadata()


def runs(ws: Workspace) -> list[dict]:
    lines = Path(f"{ws.control}.runs.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def bar_frames(stderr: str) -> list[str]:
    return [frame for frame in stderr.replace("\n", "\r").split("\r") if frame.startswith("steps:")]


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# --- the command line ------------------------------------------------------------------------


def test_unknown_argument_is_refused_like_argparse(ws: Workspace) -> None:
    run = train(trainer_args(ws, "--text_encoder_lr1", "1e-5"))
    assert run.returncode == 2
    assert "error: unrecognized arguments: --text_encoder_lr1 1e-5" in run.stderr
    assert not ws.output.exists()


def test_bad_choice_is_refused_like_argparse(ws: Workspace) -> None:
    run = train(trainer_args(ws, "--mixed_precision", "fp32"))
    assert run.returncode == 2
    assert "argument --mixed_precision: invalid choice: 'fp32'" in run.stderr


def test_sdxl_options_exist_only_in_the_sdxl_script(ws: Workspace) -> None:
    sdxl_help = train(["--help"], script="sdxl_train_network.py")
    assert sdxl_help.returncode == 0
    assert "--cache_text_encoder_outputs_to_disk" in sdxl_help.stdout
    assert train(trainer_args(ws, "--cache_text_encoder_outputs")).returncode == 2


def test_config_file_supplies_arguments_and_the_command_line_wins(ws: Workspace) -> None:
    config = ws.root / "config.toml"
    config.write_text(
        '[training]\nmax_train_epochs = 3\noutput_name = "from_toml"\n'
        "[saving]\nsave_every_n_epochs = 1\n"
    )
    run = train([*trainer_args(ws), "--config_file", str(config.with_suffix(""))])
    assert run.returncode == 0, run.stderr
    assert "  num epochs / epoch数: 2" in run.stdout
    assert names(ws.output) == {"s1lv10-000001.safetensors", "s1lv10.safetensors"}


def test_log_messages_go_to_stderr_without_console_log_simple(ws: Workspace) -> None:
    args = [a for a in trainer_args(ws) if a != "--console_log_simple"]
    run = train(args)
    assert run.returncode == 0, run.stderr
    assert "INFO     Using DreamBooth method." in run.stderr
    assert "Using DreamBooth method." not in run.stdout
    assert "running training / 学習開始" in run.stdout


# --- a good run ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Run]:
    ws = make_workspace(tmp_path_factory.mktemp("good"))
    prompts = ws.root / "prompts.txt"
    prompts.write_text(
        "a photo of s1lv10 --n blurry --w 512 --h 768 --d 42 --s 28 --l 7 --ss euler_a\n"
        "# a comment line\n"
        "s1lv10 smiling --d 43\n"
    )
    run = train(trainer_args(
        ws, "--save_every_n_epochs", "1", "--save_state", "--sample_prompts", str(prompts),
        "--sample_every_n_epochs", "1", epochs=3,
    ))
    assert run.returncode == 0, run.stderr
    return ws, run


def test_good_run_writes_numbered_epochs_then_the_final_model(good_run) -> None:
    ws, run = good_run
    models = {n for n in names(ws.output) if n.endswith(".safetensors")}
    assert models == {
        "s1lv10-000001.safetensors", "s1lv10-000002.safetensors", "s1lv10.safetensors"
    }
    assert f"saving checkpoint: {ws.output / 's1lv10-000001.safetensors'}" in run.stdout
    assert run.stdout.rstrip().endswith("model saved.")


def test_good_run_prints_kohyas_plan_and_epoch_lines(good_run) -> None:
    _, run = good_run
    lines = run.stdout.splitlines()
    assert "running training / 学習開始" in lines
    assert "  num train images * repeats / 学習画像の数×繰り返し回数: 12" in lines
    assert "  num epochs / epoch数: 3" in lines
    assert "  batch size per device / バッチサイズ: 2" in lines
    assert "  total optimization steps / 学習ステップ数: 18" in lines
    ignored = "ignore directory without repeats / 繰り返し回数のないディレクトリを無視します: notes"
    assert ignored in lines
    for epoch in (1, 2, 3):
        index = lines.index(f"epoch {epoch}/3")
        assert lines[index - 1] == ""


def test_saved_models_are_valid_safetensors_with_training_metadata(good_run) -> None:
    ws, _ = good_run
    epoch_one = metadata(ws.output / "s1lv10-000001.safetensors")
    final = metadata(ws.output / "s1lv10.safetensors")
    assert (epoch_one["ss_epoch"], epoch_one["ss_steps"]) == ("1", str(STEPS_PER_EPOCH))
    assert (final["ss_epoch"], final["ss_steps"]) == ("3", str(3 * STEPS_PER_EPOCH))
    assert final["ss_output_name"] == "s1lv10"
    assert (final["ss_network_dim"], final["ss_network_alpha"]) == ("8", "4.0")
    assert final["ss_network_module"] == "networks.lora"
    assert final["ss_base_model_version"] == "sd_v1"
    assert (final["ss_num_train_images"], final["ss_num_epochs"]) == ("12", "3")
    assert (final["ss_learning_rate"], final["ss_mixed_precision"]) == ("0.0001", "fp16")
    assert json.loads(final["ss_tag_frequency"]) == {
        "4_s1lv10": {"s1lv10": 3, "a woman": 1, "smiling": 1}
    }
    assert float(final["ss_training_started_at"]) <= float(final["ss_training_finished_at"])
    with safe_open(str(ws.output / "s1lv10.safetensors"), framework="np") as f:
        keys = list(f.keys())
        alpha = f.get_tensor("lora_unet_down_blocks_0_attentions_0_proj_in.alpha")
    assert any(k.startswith("lora_te_") for k in keys)
    assert float(alpha) == 4.0


def test_save_state_writes_a_state_folder_per_saved_epoch_and_at_the_end(good_run) -> None:
    ws, _ = good_run
    states = {n for n in names(ws.output) if n.endswith("-state")}
    assert states == {"s1lv10-000001-state", "s1lv10-000002-state", "s1lv10-state"}
    for state in states:
        assert names(ws.output / state) == {
            "model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl",
            "train_state.json",
        }
    train_state = json.loads((ws.output / "s1lv10-000002-state" / "train_state.json").read_text())
    assert train_state == {"current_epoch": 2, "current_step": 2 * STEPS_PER_EPOCH}


def test_samples_are_named_by_epoch_prompt_time_and_seed(good_run) -> None:
    ws, _ = good_run
    samples = sorted(names(ws.output / "sample"))
    assert len(samples) == 6
    for epoch in (1, 2, 3):
        for index, seed in ((0, 42), (1, 43)):
            prefix = f"s1lv10_e{epoch:06d}_{index:02d}_"
            [name] = [s for s in samples if s.startswith(prefix)]
            stamp = name.removeprefix(prefix).removesuffix(f"_{seed}.png")
            assert len(stamp) == 14 and stamp.isdigit()


def test_sample_images_are_pngs_whose_colour_tells_epoch_and_prompt_apart(good_run) -> None:
    ws, _ = good_run
    colours = {}
    for path in (ws.output / "sample").iterdir():
        with Image.open(path) as image:
            image.load()
            colours[path.name[:17]] = (image.size, image.getpixel((0, 0)))
    assert colours["s1lv10_e000001_00"][0] == (512, 768)
    assert colours["s1lv10_e000001_01"][0] == (512, 512)
    assert len({colour for _, colour in colours.values()}) == 6


def test_progress_bar_is_redrawn_in_place_and_ends_with_a_newline(good_run) -> None:
    _, run = good_run
    assert run.stderr.startswith("\rsteps:   0%|          | 0/18 [00:00<?, ?it/s]")
    assert run.stderr.endswith("\n") and run.stderr.count("\n") == 1
    frames = bar_frames(run.stderr)
    assert frames[-1].startswith("steps: 100%|██████████| 18/18 [")
    assert "it/s, avr_loss=" in frames[-1]


def test_step_saves_and_step_samples_are_named_by_step(ws: Workspace) -> None:
    prompts = ws.root / "prompts.txt"
    prompts.write_text("a photo of s1lv10\n")
    run = train(trainer_args(
        ws, "--save_every_n_steps", "4", "--sample_every_n_steps", "4", "--sample_prompts",
        str(prompts),
    ))
    assert run.returncode == 0, run.stderr
    assert {"s1lv10-step00000004.safetensors", "s1lv10-step00000008.safetensors"} <= names(
        ws.output
    )
    assert metadata(ws.output / "s1lv10-step00000008.safetensors")["ss_steps"] == "8"
    samples = sorted(names(ws.output / "sample"))
    assert [s[:16] for s in samples] == ["s1lv10_000004_00", "s1lv10_000008_00", "s1lv10_000012_00"]
    assert all(s.count("_") == 3 for s in samples)  # no --d: no seed in the name


def test_no_data_found_exits_0_without_a_model(ws: Workspace) -> None:
    empty = ws.root / "empty"
    (empty / "not_numbered").mkdir(parents=True)
    run = train([*trainer_args(ws), "--train_data_dir", str(empty)])
    assert run.returncode == 0
    assert "No data found. Please verify arguments (train_data_dir must be the parent of folders" \
        " with images)" in run.stdout
    assert not ws.output.exists()


def test_missing_model_path_exits_1_with_the_value_error(ws: Workspace) -> None:
    run = train([*trainer_args(ws), "--pretrained_model_name_or_path", "/nowhere/model"])
    assert run.returncode == 1
    assert run.stderr.rstrip().endswith(
        'ValueError: The provided pretrained_model_name_or_path "/nowhere/model" is neither a'
        " valid local path nor a valid repo id."
    )


def test_empty_caption_file_is_an_assertion_error(ws: Workspace) -> None:
    (ws.data / "4_s1lv10" / "img1.txt").write_text("")
    run = train(trainer_args(ws))
    assert run.returncode == 1
    assert "AssertionError: caption file is empty" in run.stderr


# --- resuming --------------------------------------------------------------------------------


def test_resume_continues_the_epoch_numbering_and_restarts_the_bar(ws: Workspace) -> None:
    set_control(ws, {"kind": "crash", "at_step": 2 * STEPS_PER_EPOCH + 2, "times": 1})
    args = trainer_args(ws, "--save_every_n_epochs", "1", "--save_state", epochs=4)
    assert train(args, ws).returncode == 1
    state = ws.output / "s1lv10-000002-state"
    assert names(ws.output) >= {"s1lv10-000002.safetensors", state.name}

    run = train([*args, "--resume", str(state)], ws)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert "epoch 1/4" not in lines and "epoch 2/4" not in lines
    assert "epoch 3/4" in lines and "epoch 4/4" in lines
    assert "s1lv10-000003.safetensors" in names(ws.output)
    frames = bar_frames(run.stderr)
    assert frames[0].startswith("steps:   0%|          | 0/24 ")
    assert " 12/24 [" in frames[-1]
    final = metadata(ws.output / "s1lv10.safetensors")
    assert (final["ss_epoch"], final["ss_steps"]) == ("4", str(2 * STEPS_PER_EPOCH))


def test_resume_from_a_missing_state_folder_fails(ws: Workspace) -> None:
    run = train(trainer_args(ws, "--resume", str(ws.root / "no-state")))
    assert run.returncode == 1
    assert "ValueError: Tried to find" in run.stderr


def test_network_weights_are_loaded_and_epochs_count_from_one(ws: Workspace) -> None:
    assert train(trainer_args(ws, epochs=1)).returncode == 0
    weights = ws.root / "previous.safetensors"
    (ws.output / "s1lv10.safetensors").rename(weights)
    run = train(trainer_args(ws, "--network_weights", str(weights)))
    assert run.returncode == 0, run.stderr
    assert f"load network weights from {weights}: <All keys matched successfully>" in run.stdout
    assert "epoch 1/2" in run.stdout.splitlines()


def test_missing_network_weights_fail(ws: Workspace) -> None:
    run = train(trainer_args(ws, "--network_weights", str(ws.root / "none.safetensors")))
    assert run.returncode == 1
    assert "FileNotFoundError" in run.stderr


def test_damaged_network_weights_fail_like_safetensors(ws: Workspace) -> None:
    damaged = ws.root / "damaged.safetensors"
    damaged.write_bytes(b"\xff" * 64)
    run = train(trainer_args(ws, "--network_weights", str(damaged)))
    assert run.returncode == 1
    assert "SafetensorError: Error while deserializing header" in run.stderr


# --- SDXL ------------------------------------------------------------------------------------


def test_sdxl_run_writes_an_sdxl_lora(ws: Workspace) -> None:
    run = train(trainer_args(ws, "--network_train_unet_only"), script="sdxl_train_network.py")
    assert run.returncode == 0, run.stderr
    assert metadata(ws.output / "s1lv10.safetensors")["ss_base_model_version"] == "sdxl_base_v1-0"
    with safe_open(str(ws.output / "s1lv10.safetensors"), framework="np") as f:
        assert not any(k.startswith("lora_te") for k in f.keys())  # noqa: SIM118 - not a dict


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--cache_text_encoder_outputs"], "network for Text Encoder cannot be trained"),
        (
            ["--cache_text_encoder_outputs", "--network_train_unet_only", "--shuffle_caption"],
            "when caching Text Encoder output, either caption_dropout_rate, shuffle_caption",
        ),
        (
            ["--enable_bucket", "--bucket_reso_steps", "48"],
            "bucket_reso_steps is 48. it must be divisible by 32.",
        ),
    ],
)
def test_sdxl_refuses_what_kohya_asserts_against(
    ws: Workspace, extra: list[str], message: str
) -> None:
    run = train(trainer_args(ws, *extra), script="sdxl_train_network.py")
    assert run.returncode == 1
    assert f"AssertionError: {message}" in run.stderr
    assert not ws.output.exists()


@pytest.mark.parametrize(
    ("script", "extra", "message"),
    [
        ("train_network.py", ["--resolution", "1088"],
         "max_bucket_reso must be equal or greater than resolution"
         " / max_bucket_resoは最大解像度より小さくできません。"
         "解像度を小さくするかmin_bucket_resoを大きくしてください"),
        ("sdxl_train_network.py",
         ["--resolution", "256", "--min_bucket_reso", "512", "--max_bucket_reso", "2048"],
         "min_bucket_reso must be equal or less than resolution"
         " / min_bucket_resoは最小解像度より大きくできません。"
         "解像度を大きくするかmin_bucket_resoを小さくしてください"),
    ],
)
def test_a_resolution_outside_the_bucket_limits_fails_kohyas_assertion(
    ws: Workspace, script: str, extra: list[str], message: str
) -> None:
    run = train(trainer_args(ws, "--enable_bucket", *extra), script=script)
    assert run.returncode == 1
    assert f"AssertionError: {message}" in run.stderr
    assert "running training" not in run.stdout and not ws.output.exists()


def test_bucket_limits_are_rounded_to_the_steps_before_kohya_checks_them(ws: Workspace) -> None:
    # 1000 is rounded up to 1024, which holds 1024: Kohya warns and trains
    run = train(trainer_args(ws, "--enable_bucket", "--resolution", "1024", "--max_bucket_reso",
                             "1000", epochs=1))
    assert run.returncode == 0, run.stderr
    assert "max_bucket_reso is adjusted to be multiple of bucket_reso_steps" in run.stdout
    assert train(trainer_args(ws, "--resolution", "1088", epochs=1)).returncode == 0  # no buckets


# --- accelerate launch -----------------------------------------------------------------------


def test_accelerate_turns_an_argparse_error_into_exit_1(ws: Workspace) -> None:
    run = train(trainer_args(ws, "--no_such_option"), launch=[])
    assert run.returncode == 1
    assert "error: unrecognized arguments: --no_such_option" in run.stderr
    assert run.stderr.rstrip().endswith("returned non-zero exit status 2.")
    assert "subprocess.CalledProcessError: Command '[" in run.stderr


def test_accelerate_runs_the_script_with_the_launch_environment(ws: Workspace) -> None:
    run = train(
        trainer_args(ws), ws, launch=["--gpu_ids", "1"], NOTIFY_SOCKET="@lorad-test",
        CUDA_VISIBLE_DEVICES="0,1",
    )
    assert run.returncode == 0, run.stderr
    assert (ws.output / "s1lv10.safetensors").is_file()
    env = runs(ws)[0]["env"]
    assert env["CUDA_VISIBLE_DEVICES"] == "1"
    assert env["ACCELERATE_MIXED_PRECISION"] == "fp16"
    assert env["OMP_NUM_THREADS"] == "2"
    assert env["NOTIFY_SOCKET"] == "@lorad-test"


def test_accelerate_refuses_launch_options_it_does_not_know(ws: Workspace) -> None:
    run = train(trainer_args(ws), launch=["--multi_gpu"])
    assert run.returncode == 2
    assert "error: unrecognized arguments: --multi_gpu" in run.stderr
    assert not ws.output.exists()


# --- fault injection -------------------------------------------------------------------------


def exits(ws: Workspace) -> list[dict]:
    path = Path(f"{ws.control}.exits.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_every_invocation_is_recorded_with_argv_cwd_and_environment(ws: Workspace) -> None:
    args = trainer_args(ws, "--bogus")
    before = time.time()
    train(args, ws, CUDA_VISIBLE_DEVICES="0", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    after = time.time()
    [record] = runs(ws)
    assert record["argv"] == args
    assert record["script"] == "train_network.py"
    assert record["cwd"] == str(SD_SCRIPTS)
    assert record["env"]["CUDA_VISIBLE_DEVICES"] == "0"
    assert record["env"]["PYTHONUNBUFFERED"] == "1"
    assert record["env"]["HF_HUB_OFFLINE"] == "1"
    assert record["env"]["NOTIFY_SOCKET"] is None
    assert isinstance(record["pid"], int)
    assert before - 0.02 <= record["started"] <= after  # the process's start, to 10 ms
    [ended] = exits(ws)
    assert (ended["pid"], ended["status"]) == (record["pid"], 2)  # argparse's error status
    assert record["started"] <= ended["exited"] <= after


def test_an_exit_is_recorded_with_its_status_and_a_kill_is_not(ws: Workspace) -> None:
    assert train(trainer_args(ws), ws).returncode == 0
    set_control(ws, {"kind": "crash", "at_step": 2})
    assert train(trainer_args(ws), ws).returncode == 1
    set_control(ws, {"kind": "hang", "at_step": 2})
    process = start(trainer_args(ws), ws)
    wait_for(lambda: " 1/12 [" in (ws.root / "stderr").read_text())
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=5)
    assert [e["status"] for e in exits(ws)] == [0, 1]
    assert [e["pid"] for e in exits(ws)] == [r["pid"] for r in runs(ws)][:2]


def test_crash_fault_raises_at_its_step(ws: Workspace) -> None:
    set_control(ws, {"kind": "crash", "at_step": 3})
    run = train(trainer_args(ws), ws)
    assert run.returncode == 1
    assert run.stderr.rstrip().endswith("RuntimeError: simulated crash at step 3")
    assert " 2/12 [" in bar_frames(run.stderr)[-1]
    assert not (ws.output / "s1lv10.safetensors").exists()


def test_oom_fault_prints_torchs_out_of_memory_error(ws: Workspace) -> None:
    set_control(ws, {"kind": "oom"})
    run = train(trainer_args(ws), ws, launch=[])
    assert run.returncode == 1
    assert "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a" \
        " total capacity of 7.79 GiB of which 12.19 MiB is free." in run.stderr
    assert "subprocess.CalledProcessError" in run.stderr


def test_fault_fires_in_at_most_times_runs(ws: Workspace) -> None:
    set_control(ws, {"kind": "crash", "times": 1})
    assert train(trainer_args(ws), ws).returncode == 1
    assert train(trainer_args(ws), ws).returncode == 0
    assert json.loads(Path(f"{ws.control}.count.json").read_text()) == {"0": 1}


def test_unless_spares_runs_that_meet_every_condition(ws: Workspace) -> None:
    unless = {"max_batch_size": 1, "gradient_checkpointing": True}
    set_control(ws, {"kind": "oom", "unless": unless})
    assert train(trainer_args(ws, "--gradient_checkpointing"), ws).returncode == 1
    spared = trainer_args(ws, "--gradient_checkpointing", "--train_batch_size", "1")
    assert train(spared, ws).returncode == 0


def test_nomodel_fault_finishes_without_model_files(ws: Workspace) -> None:
    set_control(ws, {"kind": "nomodel"})
    run = train(trainer_args(ws, "--save_every_n_epochs", "1"), ws)
    assert run.returncode == 0
    assert "model saved." in run.stdout
    assert not ws.output.exists() or not any(ws.output.glob("*.safetensors"))


def test_corrupt_fault_truncates_the_final_model(ws: Workspace) -> None:
    set_control(ws, {"kind": "corrupt"})
    assert train(trainer_args(ws, "--save_every_n_epochs", "1"), ws).returncode == 0
    assert metadata(ws.output / "s1lv10-000001.safetensors")["ss_epoch"] == "1"
    with pytest.raises(SafetensorError):
        metadata(ws.output / "s1lv10.safetensors")


def test_hang_fault_stops_output_until_the_process_group_is_killed(ws: Workspace) -> None:
    set_control(ws, {"kind": "hang", "at_step": 4})
    process = start(trainer_args(ws), ws, launch=[])
    stderr = ws.root / "stderr"
    wait_for(lambda: " 3/12 [" in stderr.read_text())
    size = stderr.stat().st_size
    time.sleep(0.5)
    assert process.poll() is None
    assert stderr.stat().st_size == size
    os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(timeout=5) == -signal.SIGTERM
    trainer_pid = runs(ws)[0]["pid"]
    wait_for(lambda: not Path(f"/proc/{trainer_pid}").exists()
             or "State:\tZ" in Path(f"/proc/{trainer_pid}/status").read_text(), timeout=5)


def test_silent_fault_keeps_training_without_a_word(ws: Workspace) -> None:
    set_control(ws, {"kind": "silent", "at_step": 2}, step_seconds=0.05)
    process = start(trainer_args(ws, "--save_every_n_epochs", "1", epochs=50), ws)
    wait_for(lambda: (ws.output / "s1lv10-000002.safetensors").exists())
    quiet = (ws.root / "stdout").stat().st_size, (ws.root / "stderr").stat().st_size
    wait_for(lambda: (ws.output / "s1lv10-000003.safetensors").exists())
    assert process.poll() is None
    assert ((ws.root / "stdout").stat().st_size, (ws.root / "stderr").stat().st_size) == quiet
    assert "saving checkpoint" not in (ws.root / "stdout").read_text()
    os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(timeout=5) == -signal.SIGTERM


def test_ignore_sigterm_fault_leaves_only_sigkill_to_stop_it(ws: Workspace) -> None:
    set_control(ws, {"kind": "ignore_sigterm", "at_step": 2}, step_seconds=0.05)
    process = start(trainer_args(ws, epochs=50), ws)
    stderr = ws.root / "stderr"
    wait_for(lambda: " 3/300 [" in stderr.read_text())
    os.killpg(process.pid, signal.SIGTERM)
    wait_for(lambda: "SIGTERM received and ignored" in (ws.root / "stdout").read_text())
    time.sleep(0.3)
    assert process.poll() is None  # still training
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait(timeout=5) == -signal.SIGKILL
    assert exits(ws) == []


def test_step_seconds_make_a_run_take_real_time(ws: Workspace) -> None:
    ws.control.write_text(json.dumps({"step_seconds": 0.02, "epoch_seconds": 0.12}))
    began = time.monotonic()
    assert train(trainer_args(ws), ws).returncode == 0
    assert time.monotonic() - began >= 12 * 0.02 + 2 * 0.12
