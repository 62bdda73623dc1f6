"""The outbox folder of a token belongs to one lineage of jobs; another never overwrites it."""

from __future__ import annotations

from lorad.delivery import manifest
from lorad.delivery.outbox import take_folder
from tests.jobs import context, prepared_job


def test_a_new_lineage_moves_the_old_results_aside_and_the_store_follows(config):
    ctx = context(config())
    old = prepared_job(ctx, "alice")
    folder = ctx.settings.outbox / "alice"
    (folder / "alice.safetensors").write_bytes(b"the first LoRA")
    new = ctx.store.create_job("alice", state="preparing", stage="prepare")
    taken, aside = take_folder(ctx.settings.outbox, "alice", new, new)
    assert taken == folder and aside == ctx.settings.outbox / f"alice.job-{old}"
    assert ctx.store.move_outbox(str(folder), str(aside)) == [old]
    assert (aside / "alice.safetensors").read_bytes() == b"the first LoRA"
    assert ctx.store.get(old).outbox_dir == str(aside)
    assert manifest.read(taken).root_job == new


def test_the_same_lineage_keeps_its_folder(config):
    ctx = context(config())
    job = prepared_job(ctx, "bob")
    (ctx.settings.outbox / "bob" / "keep.txt").write_text("x")
    taken, aside = take_folder(ctx.settings.outbox, "bob", job, job)
    assert aside is None and (taken / "keep.txt").exists()
