"""The simulated LoRA training run behind train_network.py and sdxl_train_network.py.

It follows Kohya's NetworkTrainer.train from the outside: the same checks in the same order, the
same console lines, the same files with the same names, and the same quirks on resume (the
progress bar restarts at 0 with the full total; the step counter and `ss_steps` count only the
resumed part). No GPU work: a step takes no time unless the $FAKE_SD_SCRIPTS control file asks.
"""

import argparse
import ast
import math
import os
import random
import signal
import sys
import time
from collections import deque

from library import checks, faults, metadata, network, samples, state
from library import dataset as datasets
from library.args import apply_config_file, build_parser
from library.console import Console
from library.errors import cuda_out_of_memory
from library.progress import ProgressBar
from library.safetensors_file import Tensor, encode, read_header
from library.safetensors_file import write as write_safetensors

OPTIMIZERS = {
    "adamw": "torch.optim.adamw.AdamW",
    "adamw8bit": "bitsandbytes.optim.adamw.AdamW8bit",
    "lion": "lion_pytorch.lion_pytorch.Lion",
    "adafactor": "transformers.optimization.Adafactor",
    "prodigy": "prodigyopt.prodigy.Prodigy",
    "sgdnesterov": "torch.optim.sgd.SGD",
}


def main(sdxl: bool) -> None:
    control = faults.Control.from_env()
    control.record_run(os.path.basename(sys.argv[0]), sys.argv[1:])
    with control.recording_exit():
        console = Console()
        parser = build_parser(sdxl)
        args = apply_config_file(parser.parse_args(), parser, console)
        Trainer(args, sdxl, console, control).train()


def _ignore_sigterm(signum: int, frame: object) -> None:
    # stdout: on stderr the line would run into the progress bar's redraws
    print("stand-in trainer: SIGTERM received and ignored", flush=True)


def optimizer_description(args: argparse.Namespace) -> str:
    kind = args.optimizer_type or (
        "AdamW8bit" if args.use_8bit_adam else "Lion" if args.use_lion_optimizer else "AdamW"
    )
    name = OPTIMIZERS.get(kind.lower(), kind)
    options = {}
    for option in args.optimizer_args or []:
        key, value = option.split("=")
        options[key] = ast.literal_eval(value)
    listed = ",".join(f"{key}={value}" for key, value in options.items())
    return name + (f"({listed})" if listed else "")


class Trainer:
    def __init__(
        self, args: argparse.Namespace, sdxl: bool, console: Console, control: faults.Control
    ) -> None:
        self.args = args
        self.sdxl = sdxl
        self.family = "sdxl" if sdxl else "sd15"
        self.console = console
        self.control = control
        self.metadata: dict[str, str] = {}
        self.tensors: dict[str, Tensor] = {}
        self.current_epoch = 0

    def train(self) -> None:
        args, console = self.args, self.console
        session_id = random.randint(0, 2**32)
        started_at = time.time()
        checks.prepare(args)
        console.configure(args.console_log_simple, args.console_log_level, args.console_log_file)
        if args.seed is None:
            args.seed = random.randint(0, 2**32)

        checks.adjust_min_max_bucket_reso_by_steps(args, console)
        dataset = datasets.load(
            args.train_data_dir, args.reg_data_dir, args.caption_extension, console
        )
        batches = dataset.num_batches(args.train_batch_size)
        if batches == 0:
            console.log(
                "ERROR",
                "No data found. Please verify arguments (train_data_dir must be the parent of"
                " folders with images) / 画像がありません。引数指定を確認してください"
                "（train_data_dirには画像があるフォルダではなく、"
                "画像があるフォルダの親フォルダを指定する必要があります）",
            )
            return
        checks.verify_dataset_options(args, self.sdxl)
        console.log("INFO", "preparing accelerator")
        self._load_model()
        network_args = self._create_network()
        console.print("prepare optimizer, data loader etc.")
        optimizer = optimizer_description(args)
        console.log("INFO", f"use {optimizer} optimizer")

        steps_per_epoch = math.ceil(batches / args.gradient_accumulation_steps)
        if args.max_train_epochs is not None:
            args.max_train_steps = args.max_train_epochs * steps_per_epoch
            console.print(
                f"override steps. steps for {args.max_train_epochs} epochs is"
                f" / 指定エポックまでのステップ数: {args.max_train_steps}"
            )
        checks.verify_precision(args)
        steps_from_state = self._resume()
        num_epochs = math.ceil(args.max_train_steps / steps_per_epoch)
        if args.save_n_epoch_ratio:
            args.save_every_n_epochs = math.floor(num_epochs / args.save_n_epoch_ratio) or 1

        self._print_plan(dataset, batches, num_epochs)
        self.metadata = metadata.training_metadata(
            args, self.sdxl, dataset, session_id=session_id, started_at=started_at,
            optimizer=optimizer, num_batches=batches, num_epochs=num_epochs,
            network_args=network_args,
        )
        first_epoch = self._first_epoch(steps_from_state, steps_per_epoch)
        self._run(first_epoch, num_epochs, steps_per_epoch)

    def _load_model(self) -> None:
        path = self.args.pretrained_model_name_or_path
        checks.verify_model_path(path)
        if os.path.isfile(path):
            self.console.log("INFO", f"load StableDiffusion checkpoint: {path}")
        else:
            self.console.log("INFO", f"load Diffusers pretrained models: {path}")

    def _create_network(self) -> dict[str, str]:
        args, console = self.args, self.console
        console.print(f"import network module: {args.network_module}")
        checks.verify_network_module(args.network_module)
        network_args = {}
        for option in args.network_args or []:
            key, value = option.split("=", 1)
            network_args[key] = value
        dim = args.network_dim or network.DEFAULT_DIM
        counts = network.MODULE_COUNTS[self.family]
        console.log(
            "INFO", f"create LoRA network. base dim (rank): {dim}, alpha: {args.network_alpha}"
        )
        console.log(
            "INFO",
            f"neuron dropout: p={args.network_dropout}, rank dropout: p=None,"
            " module dropout: p=None",
        )
        console.log("INFO", f"create LoRA for Text Encoder: {counts['te']} modules.")
        console.log("INFO", f"create LoRA for U-Net: {counts['unet']} modules.")
        train_unet = not args.network_train_text_encoder_only
        train_text_encoder = not args.network_train_unet_only
        if train_text_encoder:
            console.log("INFO", f"enable LoRA for text encoder: {counts['te']} modules")
        if train_unet:
            console.log("INFO", f"enable LoRA for U-Net: {counts['unet']} modules")
        self.tensors = network.lora_tensors(
            self.family, dim, args.network_alpha,
            network.save_dtype(args.save_precision, args.full_fp16, args.full_bf16),
            train_unet, train_text_encoder,
        )
        if args.network_weights is not None:
            self._load_network_weights(args.network_weights)
        return network_args

    def _load_network_weights(self, path: str) -> None:
        if not os.path.exists(path):
            raise FileNotFoundError(f"No such file or directory: {path}")
        if path.endswith(".safetensors"):
            read_header(path)
        self.console.print(f"load network weights from {path}: <All keys matched successfully>")

    def _resume(self) -> int | None:
        if not self.args.resume:
            return None
        self.console.log("INFO", f"resume training from local state: {self.args.resume}")
        train_state = state.load(self.args.resume)
        if train_state is None:
            return None
        path = os.path.join(self.args.resume, "train_state.json")
        self.console.log("INFO", f"load train state from {path}: {train_state}")
        return train_state["current_step"]

    def _print_plan(self, dataset: datasets.Dataset, batches: int, num_epochs: int) -> None:
        args, out = self.args, self.console.print
        out("running training / 学習開始")
        out(f"  num train images * repeats / 学習画像の数×繰り返し回数: {dataset.num_train_images}")
        out("  num validation images * repeats / 学習画像の数×繰り返し回数: 0")
        out(f"  num reg images / 正則化画像の数: {dataset.num_reg_images}")
        out(f"  num batches per epoch / 1epochのバッチ数: {batches}")
        out(f"  num epochs / epoch数: {num_epochs}")
        out(f"  batch size per device / バッチサイズ: {args.train_batch_size}")
        accumulation = args.gradient_accumulation_steps
        out(f"  gradient accumulation steps / 勾配を合計するステップ数 = {accumulation}")
        out(f"  total optimization steps / 学習ステップ数: {args.max_train_steps}")

    def _first_epoch(self, steps_from_state: int | None, steps_per_epoch: int) -> int:
        """Epochs already done: from --initial_epoch/--initial_step, else from the resumed state."""
        args = self.args
        if args.initial_epoch is not None or args.initial_step is not None:
            if steps_from_state is not None:
                self.console.log(
                    "WARNING",
                    "steps from the state is ignored because initial_step is specified"
                    " / initial_stepが指定されているため、stateからのステップ数は無視されます",
                )
            initial_step = (
                args.initial_step if args.initial_step is not None
                else (args.initial_epoch - 1) * steps_per_epoch
            )
        else:
            initial_step = steps_from_state or 0
        if initial_step > 0 and args.max_train_steps <= initial_step:
            raise AssertionError(
                "max_train_steps should be greater than initial step"
                " / max_train_stepsは初期ステップより大きい必要があります:"
                f" {args.max_train_steps} vs {initial_step}"
            )
        return max(initial_step, 0) // steps_per_epoch

    def _run(self, first_epoch: int, num_epochs: int, steps_per_epoch: int) -> None:
        args, console = self.args, self.console
        global_step = 0
        samples.generate(args, 0, global_step, console, self.control.sample_seconds)
        bar = ProgressBar(args.max_train_steps, console)
        losses: deque[float] = deque(maxlen=steps_per_epoch)
        loss_source = random.Random(args.seed)
        step_seconds = self.control.seconds_per_step(steps_per_epoch)
        for epoch in range(first_epoch, num_epochs):
            console.print(f"\nepoch {epoch + 1}/{num_epochs}\n")
            self.current_epoch = epoch + 1
            for _ in range(steps_per_epoch):
                self._inject_fault(global_step + 1)
                if step_seconds:
                    time.sleep(step_seconds)
                global_step += 1
                losses.append(0.06 + 0.1 * loss_source.random() / (1 + global_step / 50))
                bar.step(sum(losses) / len(losses))
                samples.generate(args, None, global_step, console,
                                 self.control.sample_seconds)
                if args.save_every_n_steps and global_step % args.save_every_n_steps == 0:
                    self._save_step(global_step, epoch)
                if global_step >= args.max_train_steps:
                    break
            every = args.save_every_n_epochs
            if every is not None and (epoch + 1) % every == 0 and epoch + 1 < num_epochs:
                self._save_epoch(global_step, epoch + 1)
            samples.generate(args, epoch + 1, global_step, console, self.control.sample_seconds,
                             self.control.samples_from)

        if args.save_state or args.save_state_on_train_end:
            console.log("INFO", "saving last state.")
            self._save_state(f"{args.output_name or 'last'}-state", global_step)
        self._save_model(self._name("last"), global_step, num_epochs, final=True)
        console.log("INFO", "model saved.")
        bar.close()

    def _inject_fault(self, step: int) -> None:
        fault = self.control.step_fault(self.args, step)
        if fault is None:
            return
        if fault.kind == "crash":
            raise RuntimeError(f"simulated crash at step {step}")
        if fault.kind == "oom":
            raise cuda_out_of_memory()
        if fault.kind == "silent":
            self.console.muted = True
            return
        if fault.kind == "ignore_sigterm":
            signal.signal(signal.SIGTERM, _ignore_sigterm)
            return
        while True:  # "hang": alive, silent, until someone kills the process
            time.sleep(3600)

    def _name(self, default: str, suffix: str = "") -> str:
        return f"{self.args.output_name or default}{suffix}.{self.args.save_model_as}"

    def _save_step(self, global_step: int, epoch_index: int) -> None:
        self._save_model(self._name("at", f"-step{global_step:08d}"), global_step, epoch_index)
        if self.args.save_state:
            self.console.log("INFO", f"saving state at step {global_step}")
            self._save_state(f"{self.args.output_name or 'at'}-step{global_step:08d}-state",
                             global_step)

    def _save_epoch(self, global_step: int, epoch_no: int) -> None:
        self._save_model(self._name("epoch", f"-{epoch_no:06d}"), global_step, epoch_no)
        if self.args.save_state:
            self.console.log("INFO", f"saving state at epoch {epoch_no}")
            self._save_state(f"{self.args.output_name or 'epoch'}-{epoch_no:06d}-state",
                             global_step)

    def _save_state(self, folder_name: str, global_step: int) -> None:
        folder = os.path.join(self.args.output_dir, folder_name)
        path = os.path.join(folder, "train_state.json")
        self.console.log(
            "INFO", f"save train state to {path} at epoch {self.current_epoch} step {global_step}"
        )
        state.save(folder, encode(self.tensors, {"format": "pt"}), self.current_epoch, global_step)

    def _save_model(self, name: str, steps: int, epoch: int, final: bool = False) -> None:
        args = self.args
        os.makedirs(args.output_dir, exist_ok=True)
        path = os.path.join(args.output_dir, name)
        self.console.print(f"\nsaving checkpoint: {path}")
        self.metadata["ss_training_finished_at"] = str(time.time())
        self.metadata["ss_steps"] = str(steps)
        self.metadata["ss_epoch"] = str(epoch)
        saved = metadata.minimum(self.metadata) if args.no_metadata else dict(self.metadata)
        saved.update(metadata.model_spec(args, self.sdxl))
        saved.update(metadata.hashes(b"".join(t.data for t in self.tensors.values())))
        if self.control.fires("nomodel", args):
            return
        corrupt = final and self.control.fires("corrupt", args)
        tensors = self.tensors
        if self.control.model_bytes:  # a model of a real size (benchmarks of copying it)
            count = self.control.model_bytes // 4
            tensors = {**tensors, "padding": Tensor("F32", [count], bytes(count * 4))}
        write_safetensors(path, tensors, saved, truncate=corrupt)
