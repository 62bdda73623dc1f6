"""The deliver stage: what reaches the outbox and the copy_to folders after a training."""

from __future__ import annotations

from lorad.delivery import stage as deliver
from lorad.system.fsutil import file_hash
from lorad.training import stage as train
from tests.jobs import context, prepared_job


def trained_and_delivered(ctx, epochs: int = 2) -> int:
    job_id = prepared_job(ctx, subject={"epochs": epochs})
    train.run(ctx, ctx.store.get(job_id), 0)
    deliver.run(ctx, ctx.store.get(job_id))
    return job_id


def test_delivery_puts_the_final_lora_into_every_copy_to_folder(config, tmp_path):
    folders = [tmp_path / "ComfyUI" / "models" / "loras", tmp_path / "webui" / "models" / "Lora"]
    ctx = context(config(deliver={"copy_to": [str(folder) for folder in folders]}))
    trained_and_delivered(ctx)
    out = ctx.settings.outbox / "alice"
    final = out / "alice.safetensors"
    assert file_hash(final) == file_hash(out / "alice-000002.safetensors")
    for folder in folders:
        assert file_hash(folder / "alice.safetensors") == file_hash(final)


def test_the_training_log_and_the_command_are_in_the_outbox(config):
    ctx = context(config())
    job_id = trained_and_delivered(ctx)
    job = ctx.store.get(job_id)
    out = ctx.settings.outbox / "alice"
    log = (out / "train.log").read_text()
    assert log == ctx.paths(job).train_log.read_text()
    assert f"=== lorad job {job_id} run 1" in log and "model saved." in log
    command = (out / "command.txt").read_text().splitlines()
    assert command == job.train["runs"][-1]["argv"]
    assert command[command.index("--output_name") + 1] == "alice"
