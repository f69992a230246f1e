"""The shared trainer: exact resume, bad batches skipped, schedule shape, averaging, export."""
import dataclasses
from pathlib import Path

import pytest
import torch

from asr.checkpoint import load_checkpoint
from asr.config import TrainConfig, apply_overrides
from asr.data.datamodule import Batch, load_cuts, train_dataloader
from asr.train import EdenSchedule, Trainer, average_state_dicts
from recipes.synthetic.espeak import espeak_available
from tests.prepared_data import make_prepared_dir

pytestmark = pytest.mark.skipif(not espeak_available(), reason="espeak-ng not installed (make test installs it)")

TINY = {
    "model": {
        "encoder": {"d_model": 64, "num_layers": 2, "num_heads": 4, "ff_dim": 128, "conv_kernel": 7,
                    "subsampling_channels": 16, "dropout": 0.1, "train_chunk_sizes": [4, 8],
                    "train_left_chunks": [-1, 4]},
        "decoder": {"d_model": 64}, "joiner": {"d_joiner": 64}, "loss": {"warmup_steps": 5, "s_range": 5},
    },
    "data": {"train_parts": ["train"], "valid_parts": ["dev"], "test_parts": ["dev"], "vocab_size": 40,
             "max_duration": 6.0, "num_workers": 0, "spec_augment": True},
    "optim": {"warmup_steps": 5},
    "num_epochs": 50,
    "checkpoint_every": 4,
    "average_last": 2,
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prepared")
    make_prepared_dir(root, {"train": 8, "dev": 2})
    return root


def _config(data_dir: Path, exp_dir: Path, **top) -> TrainConfig:
    config = apply_overrides(TrainConfig(), TINY)
    return apply_overrides(config, {"exp_dir": str(exp_dir), "data": {"data_dir": str(data_dir)}, **top})


def test_stopped_and_resumed_training_reaches_the_same_weights(data_dir, tmp_path):
    straight = Trainer(_config(data_dir, tmp_path / "straight", max_steps=14))
    straight.train()
    interrupted = Trainer(_config(data_dir, tmp_path / "resumed", max_steps=9))
    interrupted.train()
    assert interrupted.progress.step == 9 and interrupted.progress.batches_in_epoch > 0  # stopped mid-epoch
    resumed = Trainer(_config(data_dir, tmp_path / "resumed", max_steps=14))
    resumed.train()
    assert resumed.progress.step == straight.progress.step == 14
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    # Same batches, augmentation, dropout and optimiser state; only multi-threaded CPU kernels may
    # round differently (seen: 0 or ~3e-8), far below what a wrong batch or seed changes.
    max_diff = lambda x, y: max((x[n].float() - y[n].float()).abs().max().item() for n in x)
    assert max_diff(a, b) <= 1e-5, "resumed weights differ from uninterrupted ones"
    other = Trainer(_config(data_dir, tmp_path / "other", max_steps=14, seed=7))
    other.train()
    assert max_diff(a, other.model.state_dict()) > 1e-3  # the comparison can fail


def test_training_writes_log_checkpoints_and_a_self_contained_final_model(data_dir, tmp_path):
    trainer = Trainer(_config(data_dir, tmp_path, max_steps=8, log_every=2, keep_checkpoints=2))
    final = trainer.train()
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt")) == ["step-00000004.pt", "step-00000008.pt"]
    rows = (tmp_path / "train_log.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,loss") and len(rows) == 5
    assert (tmp_path / "train_log.png").read_bytes().startswith(b"\x89PNG")  # the log's picture, drawn at the end
    ckpt = load_checkpoint(final)
    assert ckpt.meta["steps"] == 8 and ckpt.meta["averaged"] == ["step-00000004.pt", "step-00000008.pt"]
    norm = ckpt.model.encoder.input_norm  # global CMVN from the training features travels in the checkpoint
    assert float(norm.mean.mean()) < -1.0 and 0.05 < float(norm.inv_std.mean()) < 1.0
    assert ckpt.tokenizer.vocab_size == ckpt.model.config.vocab_size
    assert (tmp_path / "config.yaml").exists()


def test_a_malformed_batch_is_skipped_and_counted_not_fatal(data_dir, tmp_path):
    trainer = Trainer(_config(data_dir, tmp_path))
    bad = Batch(torch.randn(1, 100, 80), torch.tensor([100]), torch.tensor([[0, 0]]), torch.tensor([2]),
                ["?"], ["bad-cut"], 1.0)  # blank ids inside the target
    assert trainer.train_step(bad) is None
    assert trainer.progress.skipped_batches == 1 and trainer.progress.step == 0


def test_an_overflowing_gradient_is_dropped_before_it_reaches_the_weights(data_dir, tmp_path):
    trainer = Trainer(_config(data_dir, tmp_path))
    config = trainer.config
    batch = next(iter(train_dataloader(load_cuts(config.data, config.data.train_parts), trainer.tokenizer,
                                       config.data, config.seed, 0)))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    first = next(trainer.model.parameters())
    hook = first.register_hook(lambda grad: torch.full_like(grad, float("inf")))  # as bf16 overflow would
    assert trainer.train_step(batch) is None
    hook.remove()
    assert trainer.progress.skipped_batches == 1 and trainer.progress.step == 0
    assert all(torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())
    assert trainer.train_step(batch) is not None  # the next batch trains normally
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_eden_schedule_warms_up_then_decays():
    schedule = EdenSchedule(dataclasses.replace(TrainConfig().optim, warmup_steps=100, decay_steps=1000))
    values = [schedule.factor(step, 0) for step in (0, 50, 99, 1000, 5000)]
    assert values[0] < values[1] < values[2] <= 1.0
    assert values[2] > values[3] > values[4]
    assert schedule.factor(1000, 12) < schedule.factor(1000, 0)


def test_cooldown_ends_the_budget_on_a_low_learning_rate(data_dir, tmp_path):
    flat = dataclasses.replace(TrainConfig().optim, warmup_steps=1, decay_steps=1e12, decay_epochs=1e12)
    plain, cool = EdenSchedule(flat), EdenSchedule(dataclasses.replace(flat, cooldown=0.2, cooldown_floor=0.05))
    assert cool.factor(10, 1, 0.5) == pytest.approx(plain.factor(10, 1, 0.5)) == pytest.approx(1.0)
    assert cool.factor(10, 1, 0.9) == pytest.approx(0.05 + 0.95 * 0.5)
    assert cool.factor(10, 1, 1.0) == cool.factor(10, 1, 1.3) == pytest.approx(0.05)
    # In training, the step budget drives it: the last of 10 steps runs at 9/10 of the budget.
    trainer = Trainer(_config(data_dir, tmp_path, max_steps=10, log_every=1,
                              optim={"warmup_steps": 1, "cooldown": 0.5, "cooldown_floor": 0.1}))
    trainer.train()
    import csv

    rows = {int(r["step"]): r for r in csv.DictReader((tmp_path / "train_log.csv").open())}
    last = rows[10]
    expected = trainer.config.optim.lr * trainer.schedule.factor(9, int(last["epoch"]), 0.9)
    assert float(last["lr"]) == pytest.approx(expected, rel=1e-6)
    assert float(last["lr"]) < 0.5 * float(rows[4]["lr"])


def test_averaging_is_elementwise_mean():
    a, b = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(2)}, {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(4)}
    avg = average_state_dicts([a, b])
    assert torch.equal(avg["w"], torch.tensor([2.0, 4.0])) and avg["n"] == 4


def test_torchrun_ddp_on_cpu_with_gloo_trains_in_lockstep(data_dir, tmp_path):
    """Two ranks, each with its own share of the batches, stop together and export one model."""
    import subprocess
    import sys

    import yaml

    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(TINY))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               "-m", "asr.train", "--config", str(config_file), "--set", f"data.data_dir={data_dir}",
               "--set", f"exp_dir={tmp_path / 'exp'}", "--set", "max_steps=6", "--set", "device=cpu"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240,
                            env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stderr
    ckpt = load_checkpoint(tmp_path / "exp" / "final.pt")
    assert ckpt.meta["steps"] == 6


def test_on_the_fly_features_with_speed_and_volume_perturbation_give_batches(data_dir):
    from asr.data.datamodule import load_cuts, train_dataloader
    from asr.tokenizer import Tokenizer

    config = _config(data_dir, Path("unused"))
    data = dataclasses.replace(config.data, on_the_fly_features=True, speed_perturb=True, volume_perturb=True)
    tokenizer = Tokenizer.from_file(data_dir / "lang" / "bpe_40.model")
    cuts = load_cuts(data, ("train",)).to_eager()
    batches = list(train_dataloader(cuts, tokenizer, data, seed=1, epoch=0))
    assert sum(len(b.cut_ids) for b in batches) == len(cuts)
    for batch in batches:
        assert batch.features.shape[0] == len(batch.cut_ids) and batch.features.shape[2] == 80
        assert int(batch.feature_lens.max()) == batch.features.shape[1]
        assert all(0 < n for n in batch.target_lens.tolist())
    with pytest.raises(ValueError, match="on_the_fly_features"):
        train_dataloader(cuts, tokenizer, dataclasses.replace(data, on_the_fly_features=False), seed=1, epoch=0)


def test_a_merging_model_fine_tunes_from_a_trained_one_and_logs_every_granularity(data_dir, tmp_path):
    base = Trainer(_config(data_dir, tmp_path / "base", max_steps=4)).train()
    merge = {"layers": [1], "mode": "ratio", "granularities": ["full", "coarse"], "values": [0.0, 0.4],
             "loss_weights": [1.0, 1.0]}
    config = _config(data_dir, tmp_path / "merged", max_steps=2, log_every=1, init_from=str(base))
    config = apply_overrides(config, {"model": {"encoder": {"merge": merge}}})
    trainer = Trainer(config)
    trainer.init_weights(base)
    source = load_checkpoint(base).model.state_dict()
    assert all(torch.equal(v, source[k]) for k, v in trainer.model.state_dict().items())  # merging adds no weights
    final = trainer.train()
    header = (tmp_path / "merged" / "train_log.csv").read_text().splitlines()[0].split(",")
    assert {"pruned_full", "pruned_coarse", "kept_full", "kept_coarse"} <= set(header)
    assert load_checkpoint(final).model.encoder.granularities == ("full", "coarse")
    other_bpe = _config(data_dir, tmp_path / "bad", init_from=str(tmp_path / "missing.pt"))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer(other_bpe).init_weights(Path(other_bpe.init_from))


def test_a_deeper_model_grows_from_a_trained_one_and_starts_where_it_left_off(data_dir, tmp_path):
    """Extra encoder blocks start as identities: the grown model's output is the trained one's,
    up to the re-normalisation of the new block's final norm."""
    base = Trainer(_config(data_dir, tmp_path / "base", max_steps=4)).train()
    source = load_checkpoint(base).model.eval()
    depth = source.config.encoder.num_layers
    config = _config(data_dir, tmp_path / "grown", max_steps=2, init_from=str(base))
    config = apply_overrides(config, {"model": {"encoder": {"num_layers": depth + 1}}})
    trainer = Trainer(config)
    trainer.init_weights(base)
    grown = trainer.model.eval()
    x, lens = torch.randn(2, 120, 80), torch.tensor([120, 90])
    with torch.no_grad():
        before = source.encoder(x, lens).out
        after = grown.encoder(x, lens).out
        new_block = grown.encoder.layers[depth]
        assert not new_block.ff1.net[4].weight.any() and not new_block.attn.out.weight.any()
    # LayerNorm of an already normalised output is close to it, not equal: correlation, not equality
    assert torch.nn.functional.cosine_similarity(before.flatten(), after.flatten(), dim=0) > 0.99  # a random new block: about 0.89
    trainer.train()  # and it trains from there
