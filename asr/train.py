"""The one trainer every recipe uses: `python -m asr.train --config recipes/<name>/conf/<size>.yaml`.

CPU (gloo) or GPU (nccl) through torchrun, bf16 autocast on GPU, dynamic bucketing by duration,
SpecAugment and optional perturbation, Eden-style learning-rate schedule with warm-up, gradient
clipping, checkpoints every N steps with exact resume, model averaging, a CSV log with its picture
(train_log.png, asr.plots) and a progress bar.
"""
from __future__ import annotations

import argparse
import csv
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from tqdm import tqdm

from asr.checkpoint import save_checkpoint
from asr.config import TrainConfig, apply_overrides, dotted_override, from_dict, to_dict
from asr.data.datamodule import Batch, eval_dataloader, keep_trainable, load_cuts, train_dataloader
from asr.data.layout import DataLayout
from asr.model.conformer import grow_encoder
from asr.model.moe import MoEFeedForward, upcycle_from_dense
from asr.model.transducer import Transducer
from asr.plots import plot_training, read_training_log, redraw_quietly
from asr.tokenizer import Tokenizer

log = logging.getLogger("asr.train")


@dataclass
class Progress:
    """Where training stands; saved in every training checkpoint."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # batches of `epoch` already consumed (the resume point)
    audio_seconds: float = 0.0
    skipped_batches: int = 0


class EdenSchedule:
    """Linear warm-up, then lr decays with both steps and epochs (after icefall's Eden):
    lr * ((step/decay_steps)^2 + 1)^-1/4 * ((epoch/decay_epochs)^2 + 1)^-1/4."""

    def __init__(self, config) -> None:
        self.config = config

    def factor(self, step: int, epoch: float, budget_used: float = 0.0) -> float:
        """`budget_used`: the fraction of the run's step or time budget spent (for the cool-down)."""
        c = self.config
        warmup = min(1.0, (step + 1) / max(1, c.warmup_steps))
        by_steps = ((step / c.decay_steps) ** 2 + 1) ** -0.25
        by_epochs = ((epoch / c.decay_epochs) ** 2 + 1) ** -0.25
        cooldown = 1.0
        if c.cooldown > 0:
            left = min(1.0, max(0.0, (1.0 - budget_used) / c.cooldown))
            cooldown = c.cooldown_floor + (1.0 - c.cooldown_floor) * left
        return warmup * by_steps * by_epochs * cooldown


def setup_distributed(config: TrainConfig) -> tuple[int, int, torch.device]:
    """torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; without them this is a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    use_cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return rank, world_size, device


class Trainer:
    def __init__(self, config: TrainConfig) -> None:
        self.rank, self.world_size, self.device = setup_distributed(config)
        layout = DataLayout(Path(config.data.data_dir), config.data.vocab_size)
        self.tokenizer = Tokenizer.from_file(layout.bpe_model)
        # The model's vocabulary is whatever the BPE model has; the config records it.
        config = apply_overrides(config, {"model": {"vocab_size": self.tokenizer.vocab_size,
                                                    "blank_id": self.tokenizer.blank_id}})
        self.config = config
        self.exp_dir = Path(config.exp_dir)
        self.ckpt_dir = self.exp_dir / "checkpoints"
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        self.model = Transducer(config.model).to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay
        )
        self.schedule = EdenSchedule(config.optim)
        self.progress = Progress()
        self.elapsed_minutes = 0.0  # of this process's training, by rank 0's clock (see should_stop)
        self.ddp = (
            # A routed expert that no token of this rank's batch chose has no gradient there.
            torch.nn.parallel.DistributedDataParallel(self.model, find_unused_parameters=config.model.encoder.moe.enabled)
            if self.world_size > 1 else self.model
        )
        self.autocast = self.device.type == "cuda" and config.bf16
        self.curves_drawn = 0.0  # time.time() of the last train_log.png (redrawn at most once a minute)

    # ---- checkpoints -------------------------------------------------------------------------
    def save_training_checkpoint(self) -> Path:
        """Everything needed to continue exactly: weights, optimiser, progress, config."""
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        path = self.ckpt_dir / f"step-{self.progress.step:08d}.pt"
        payload = {
            "config": to_dict(self.config),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "progress": vars(self.progress),
        }
        tmp = path.with_suffix(".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)
        for old in sorted(self.ckpt_dir.glob("step-*.pt"))[: -self.config.keep_checkpoints]:
            old.unlink()
        log.info("saved %s", path)
        return path

    def resume(self) -> bool:
        latest = sorted(self.ckpt_dir.glob("step-*.pt"))
        if not latest:
            return False
        payload = torch.load(latest[-1], map_location=self.device, weights_only=False)
        saved = from_dict(TrainConfig, payload["config"])
        if saved.model != self.config.model:
            raise ValueError(f"{latest[-1]} was trained with a different model config; use a new exp_dir")
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.progress = Progress(**payload["progress"])
        log.info("resumed from %s (step %d, epoch %d, batch %d of the epoch)", latest[-1], self.progress.step,
                 self.progress.epoch, self.progress.batches_in_epoch)
        return True

    def init_weights(self, path: Path) -> None:
        """Start from another model's weights (fine-tuning, e.g. adding token merging to a trained
        model). Layers the source lacks (MoE experts, a CTC head) keep their initialisation, except
        extra encoder blocks on top of the source's, which start as identities (`grow_encoder`)."""
        from asr.checkpoint import load_checkpoint

        source = load_checkpoint(path, self.device)
        if source.tokenizer.to_bytes() != self.tokenizer.to_bytes():
            raise ValueError(f"{path} uses another BPE model than {self.config.data.data_dir}; fine-tune on its data")
        own = self.model.state_dict()
        weights = source.model.state_dict()
        mismatched = [k for k in weights if k in own and own[k].shape != weights[k].shape]
        if mismatched:
            raise ValueError(f"{path} does not fit this model: shapes differ for {mismatched[:4]}")
        result = self.model.load_state_dict(weights, strict=False)
        grown = grow_encoder(self.model.encoder, source.model.encoder)
        upcycled = []
        for name, module in self.model.named_modules():  # MoE layers where the source had a dense one
            dense = {k[len(name) + 1:]: v for k, v in weights.items() if k.startswith(f"{name}.net.")}
            if isinstance(module, MoEFeedForward) and dense and upcycle_from_dense(module, dense):
                upcycled.append(name)
        log.info("initialised from %s: %d tensors loaded, %d new, %d of the source unused; %d MoE layers "
                 "upcycled from dense feed-forwards; %d encoder blocks added as identities", path,
                 len(weights) - len(result.unexpected_keys), len(result.missing_keys), len(result.unexpected_keys),
                 len(upcycled), grown)

    # ---- training ----------------------------------------------------------------------------
    def train_step(self, batch: Batch) -> dict | None:
        """One optimisation step; returns loss figures, or None if the batch was unusable."""
        config, progress = self.config, self.progress
        # Per-step seeds make dropout and the dynamic chunk choice independent of history.
        torch.manual_seed(config.seed * 1_000_003 + progress.step)
        random.seed(config.seed * 1_000_003 + progress.step)
        for group in self.optimizer.param_groups:
            group["lr"] = config.optim.lr * self.schedule.factor(progress.step, progress.epoch, self.budget_used())
        batch = batch.to(self.device)
        self.model.train()
        try:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                out = self.ddp(batch.features, batch.feature_lens, batch.targets, batch.target_lens,
                               step=progress.step)
        except ValueError as error:  # one malformed batch must not end a long run
            return self.skip_batch(batch, str(error))
        loss = out.loss / max(1, out.num_frames)
        if not torch.isfinite(loss):
            return self.skip_batch(batch, "non-finite loss")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.optim.grad_clip)
        if not torch.isfinite(grad_norm):
            # A finite loss can still overflow in backward (bf16). Clipping would turn inf into NaN and
            # Adam would carry it into every weight, so this update is dropped. The gradients are
            # already all-reduced, so under DDP every rank sees the same norm and drops it too.
            self.optimizer.zero_grad(set_to_none=True)
            self.progress.skipped_batches += 1
            log.warning("skipping update for batch %s...: gradient norm is %s", batch.cut_ids[:2], float(grad_norm))
            return None
        self.optimizer.step()
        progress.step += 1
        progress.audio_seconds += batch.seconds * self.world_size
        frames = max(1, out.num_frames)
        figures = {"loss": loss.item(), "simple": out.simple.item() / frames, "pruned": out.pruned.item() / frames}
        if out.ctc is not None:
            figures["ctc"] = out.ctc.item() / frames
        if out.balance is not None:
            figures["balance"] = out.balance.item()
        for name, value in out.by_granularity.items():
            figures[f"pruned_{name}"] = value / frames
        for name, value in out.tokens_kept.items():
            figures[f"kept_{name}"] = value
        return {**figures, "grad_norm": float(grad_norm), "lr": self.optimizer.param_groups[0]["lr"]}

    def skip_batch(self, batch: Batch, reason: str) -> None:
        """Count and log an unusable batch. Under DDP the other ranks are already waiting in the
        gradient all-reduce, so join it with zero gradients instead of leaving them hanging."""
        self.progress.skipped_batches += 1
        log.warning("skipping batch %s...: %s", batch.cut_ids[:2], reason)
        if self.world_size > 1:
            self.optimizer.zero_grad(set_to_none=True)
            zero = sum(p.sum() for p in self.ddp.parameters()) * 0.0
            zero.backward()
            self.optimizer.zero_grad(set_to_none=True)
        return None

    def budget_used(self) -> float:
        """Fraction of the step or time budget spent, the larger of the two (0 without a budget)."""
        c = self.config
        used = self.progress.step / c.max_steps if c.max_steps else 0.0
        return max(used, self.elapsed_minutes / c.max_minutes) if c.max_minutes else used

    def should_stop(self, started: float) -> bool:
        c = self.config
        if c.max_steps and self.progress.step >= c.max_steps:
            return True
        if not c.max_minutes:
            return False
        elapsed = (time.time() - started) / 60
        if self.world_size > 1:  # every rank must stop (and cool down) in step, so rank 0's clock decides
            clock = torch.tensor([elapsed], device=self.device)
            dist.broadcast(clock, src=0)
            elapsed = float(clock.item())
        self.elapsed_minutes = elapsed
        return elapsed >= c.max_minutes

    def train(self) -> Path:
        config = self.config
        if self.rank == 0:
            self.exp_dir.mkdir(parents=True, exist_ok=True)
            (self.exp_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
        self.resume()
        all_cuts = load_cuts(config.data, config.data.train_parts).to_eager()
        cuts = keep_trainable(all_cuts, self.tokenizer, config.data, config.model.loss.s_range).to_eager()
        if len(cuts) < len(all_cuts):
            log.info("dropped %d of %d training cuts (too short/long, empty, or too many tokens for their frames)",
                     len(all_cuts) - len(cuts), len(all_cuts))
        if not len(cuts):
            raise ValueError(f"no trainable cuts in {config.data.train_parts}")
        if self.progress.step == 0 and config.init_from:
            self.init_weights(Path(config.init_from))
        elif self.progress.step == 0:  # a fresh run; a resumed one has the statistics in its checkpoint
            mean, std = feature_stats(cuts)
            self.model.encoder.input_norm.set_stats(mean.to(self.device), std.to(self.device))
            log.info("input normalisation from training features: mean %.2f, std %.2f (averaged over bins)",
                     float(mean.mean()), float(std.mean()))
        params = sum(p.numel() for p in self.model.parameters()) / 1e6
        log.info("training %.1fM parameters on %s, %d process(es), exp %s", params, self.device, self.world_size,
                 self.exp_dir)
        started = time.time()
        self.curves_drawn = started  # the first picture a minute in: a short run draws only at its end
        logger = CsvLog(self.exp_dir / "train_log.csv") if self.rank == 0 else None
        while self.progress.epoch < config.num_epochs and not self.should_stop(started):
            self.run_epoch(cuts, started, logger)
            if self.should_stop(started):
                break
            self.progress.epoch += 1
            self.progress.batches_in_epoch = 0
            if self.rank == 0:
                self.validate()
        if self.rank == 0:
            self.save_training_checkpoint()
            self.draw_curves()
            return self.export()
        return self.exp_dir / "final.pt"

    def run_epoch(self, cuts, started: float, logger: "CsvLog | None") -> None:
        config, progress = self.config, self.progress
        loader = train_dataloader(cuts, self.tokenizer, config.data, config.seed, progress.epoch, self.world_size,
                                  self.rank, skip_batches=progress.batches_in_epoch)
        bar = tqdm(loader, desc=f"epoch {progress.epoch}", disable=self.rank != 0, initial=progress.batches_in_epoch)
        window_audio, window_start = 0.0, time.time()
        for batch in bar:
            progress.batches_in_epoch += 1
            figures = self.train_step(batch)
            if figures is None:
                continue
            window_audio += batch.seconds * self.world_size
            speed = window_audio / max(1e-6, time.time() - window_start)
            bar.set_postfix(loss=f"{figures['loss']:.3f}", lr=f"{figures['lr']:.1e}", audio_per_s=f"{speed:.0f}")
            if logger and progress.step % config.log_every == 0:
                logger.write(step=progress.step, epoch=progress.epoch, **figures, audio_seconds_per_second=speed,
                             elapsed_minutes=(time.time() - started) / 60)
                window_audio, window_start = 0.0, time.time()
            if self.rank == 0 and progress.step % config.checkpoint_every == 0:
                self.save_training_checkpoint()
                if time.time() - self.curves_drawn > 60:  # a minute old at most, not a draw per short checkpoint
                    self.draw_curves()
            if self.should_stop(started):
                break

    @torch.no_grad()
    def validate(self) -> float:
        """Mean pruned loss per frame on the validation parts (full context)."""
        cuts = load_cuts(self.config.data, self.config.data.valid_parts)
        cuts = keep_trainable(cuts, self.tokenizer, self.config.data, self.config.model.loss.s_range)
        self.model.eval()
        total, frames = 0.0, 0
        for batch in eval_dataloader(cuts, self.tokenizer, self.config.data):
            batch = batch.to(self.device)
            out = self.model(batch.features, batch.feature_lens, batch.targets, batch.target_lens, step=10**9)
            total += out.pruned.item()
            frames += out.num_frames
        value = total / max(1, frames)
        log.info("epoch %d validation: pruned loss/frame %.4f", self.progress.epoch, value)
        return value

    def draw_curves(self) -> None:
        """train_log.png beside train_log.csv: loss, per-granularity loss and frames kept, learning rate."""
        log_path, out = self.exp_dir / "train_log.csv", self.exp_dir / "train_log.png"
        if log_path.exists():
            redraw_quietly(out, lambda: plot_training([read_training_log(log_path)], out))
            self.curves_drawn = time.time()

    def export(self) -> Path:
        """The serving checkpoint: the average of the last `average_last` training checkpoints."""
        paths = sorted(self.ckpt_dir.glob("step-*.pt"))[-self.config.average_last :]
        averaged = average_state_dicts([torch.load(p, map_location="cpu", weights_only=False)["model"] for p in paths])
        model = Transducer(self.config.model)
        model.load_state_dict(averaged)
        path = self.exp_dir / "final.pt"
        meta = {"steps": self.progress.step, "epochs": self.progress.epoch,
                "audio_hours_seen": self.progress.audio_seconds / 3600,
                "averaged": [p.name for p in paths], "train_parts": list(self.config.data.train_parts)}
        save_checkpoint(path, model, self.tokenizer, meta)
        log.info("exported %s (average of %d checkpoints)", path, len(paths))
        return path


def feature_stats(cuts, max_cuts: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-bin mean and std of the features of up to `max_cuts` training cuts (on the fly if needed)."""
    from asr.features import KaldiNativeFbank

    total, total_sq, frames = None, None, 0
    extractor = None
    for index, cut in enumerate(cuts):
        if index >= max_cuts:
            break
        if cut.has_features:
            feats = torch.from_numpy(cut.load_features()).double()
        else:
            extractor = extractor or KaldiNativeFbank()
            feats = torch.from_numpy(cut.compute_features(extractor)).double()
        total = feats.sum(0) if total is None else total + feats.sum(0)
        total_sq = (feats**2).sum(0) if total_sq is None else total_sq + (feats**2).sum(0)
        frames += feats.shape[0]
    mean = total / frames
    std = (total_sq / frames - mean**2).clamp(min=1e-6).sqrt()
    return mean.float(), std.float()


def average_state_dicts(states: list[dict]) -> dict:
    """Element-wise mean of floating-point tensors; integer buffers come from the last state."""
    result = {}
    for name, value in states[-1].items():
        if value.is_floating_point():
            result[name] = sum(s[name].double() for s in states).div(len(states)).to(value.dtype)
        else:
            result[name] = value
    return result


class CsvLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, **row) -> None:
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def load_config(paths: str | list[str] | None, overrides: list[str]) -> TrainConfig:
    """Defaults, then each YAML file of overrides in order (a later file wins), then --set items."""
    config = TrainConfig()
    for path in [paths] if isinstance(paths, str) else paths or []:
        config = apply_overrides(config, yaml.safe_load(Path(path).read_text()) or {})
    for item in overrides:
        config = apply_overrides(config, dotted_override(item))
    return config


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        description=__doc__ + "\nEvery setting is a field of asr.config.TrainConfig; a YAML file holds overrides "
        "and --set changes single fields. --print-config shows the resolved configuration.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", action="append", default=[],
                        help="YAML file of overrides, e.g. recipes/librispeech/conf/cpu-small.yaml; repeatable, "
                             "a later file overriding an earlier one (a base model plus a merging variant)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one field, e.g. --set optim.lr=1e-3 (repeatable)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(args.config, args.set)
    if args.print_config:
        print(yaml.safe_dump(to_dict(config), sort_keys=False))
        return Path(config.exp_dir)
    return Trainer(config).train()


if __name__ == "__main__":
    main()
