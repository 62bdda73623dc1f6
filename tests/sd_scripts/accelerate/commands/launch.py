"""Stand-in for `accelerate launch` with its simple (one process) launcher.

    python -m accelerate.commands.launch [launch options] SCRIPT [script arguments]

It runs `sys.executable SCRIPT ARGS` as a child sharing stdout and stderr, with the environment
accelerate sets (CUDA_VISIBLE_DEVICES from --gpu_ids, ACCELERATE_MIXED_PRECISION, OMP_NUM_THREADS,
...). A child that exits non-zero makes it raise subprocess.CalledProcessError, so every failure,
an argparse error included, ends as exit status 1 with that traceback. Signals get no special
handling: a SIGTERM to the process group ends both processes.
"""

import argparse
import os
import subprocess
import sys

DYNAMO_BACKENDS = (
    "no", "eager", "aot_eager", "inductor", "aot_ts_nvfuser", "nvprims_nvfuser", "cudagraphs",
    "ofi", "fx2trt", "onnxrt", "tensorrt", "aot_torchxla_trace_once", "torchxla_trace_once",
    "ipex", "tvm", "hpu_backend",
)
DEFAULTS = {
    "num_processes": 1,
    "num_machines": 1,
    "mixed_precision": "no",
    "dynamo_backend": "no",
}


def launch_command_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        "Accelerate launch command", usage="accelerate <command> [<args>] launch [<args>]"
    )
    parser.add_argument("--num_cpu_threads_per_process", type=int, default=None)
    parser.add_argument("--num_processes", type=int, default=None)
    parser.add_argument("--num_machines", type=int, default=None)
    parser.add_argument("--mixed_precision", type=str, default=None, choices=["no", "fp16", "bf16"])
    parser.add_argument("--dynamo_backend", type=str, default=None, choices=DYNAMO_BACKENDS)
    parser.add_argument("--gpu_ids", type=str, default=None)
    parser.add_argument("training_script", type=str)
    parser.add_argument("training_script_args", nargs=argparse.REMAINDER)
    return parser


def _fill_defaults(args: argparse.Namespace) -> None:
    """Like accelerate without a config file: defaults, and a warning that names them."""
    defaulted = []
    for name, value in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
            defaulted.append(f"\t`--{name}` was set to a value of `{value!r}`")
    if args.num_cpu_threads_per_process is None:
        args.num_cpu_threads_per_process = int(os.environ.get("OMP_NUM_THREADS", "1"))
    if defaulted:
        sys.stderr.write(
            "The following values were not passed to `accelerate launch` and had defaults used"
            " instead:\n" + "\n".join(defaulted) + "\nTo avoid this warning pass in values for"
            " each of the problematic parameters or run `accelerate config`.\n"
        )


def simple_launcher(args: argparse.Namespace) -> None:
    if args.num_processes > 1 or args.num_machines > 1:
        raise NotImplementedError("the stand-in accelerate launches a single process only")
    cmd = [sys.executable, args.training_script, *args.training_script_args]
    env = os.environ.copy()
    env["ACCELERATE_USE_CPU"] = "False"
    if args.gpu_ids is not None and args.gpu_ids != "all":
        env["CUDA_VISIBLE_DEVICES"] = args.gpu_ids
    env["ACCELERATE_MIXED_PRECISION"] = args.mixed_precision
    env["ACCELERATE_DYNAMO_BACKEND"] = args.dynamo_backend.upper()
    env["OMP_NUM_THREADS"] = str(args.num_cpu_threads_per_process)
    process = subprocess.Popen(cmd, env=env)
    process.wait()
    if process.returncode != 0:
        raise subprocess.CalledProcessError(returncode=process.returncode, cmd=cmd)


def main() -> None:
    args = launch_command_parser().parse_args()
    _fill_defaults(args)
    simple_launcher(args)


if __name__ == "__main__":
    main()
