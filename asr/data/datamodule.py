"""lhotse data pipeline for training and evaluation: filtering, bucketing by duration,
augmentation, and batches of features + token ids."""
from __future__ import annotations

import hashlib
import logging
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from lhotse import CutSet, load_manifest_lazy
from lhotse.dataset import (
    CutMix,
    DynamicBucketingSampler,
    K2SpeechRecognitionDataset,
    OnTheFlyFeatures,
    PerturbSpeed,
    PerturbVolume,
    PrecomputedFeatures,
    SimpleCutSampler,
    SpecAugment,
)
from torch.utils.data import DataLoader

from asr.config import DataConfig
from asr.data.layout import DataLayout
from asr.features import KaldiNativeFbank
from asr.model.conformer import SUBSAMPLING_FACTOR
from asr.tokenizer import Tokenizer

log = logging.getLogger(__name__)
# The trainer filters the training cuts once and keeps them in memory (tens of thousands of small
# records), so it knows their number; lhotse warns that lazy manifests would save memory.
warnings.filterwarnings("ignore", message="You are using DynamicBucketingSampler with an eagerly read CutSet")


@dataclass
class Batch:
    features: torch.Tensor  # (B, T, F)
    feature_lens: torch.Tensor  # (B,) int64
    targets: torch.Tensor  # (B, S) int64, padded with blank
    target_lens: torch.Tensor  # (B,) int64
    texts: list[str]
    cut_ids: list[str]
    seconds: float  # audio in the batch

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.features.to(device), self.feature_lens.to(device), self.targets.to(device),
                     self.target_lens.to(device), self.texts, self.cut_ids, self.seconds)


def load_cuts(config: DataConfig, parts: tuple[str, ...]) -> CutSet:
    layout = DataLayout(Path(config.data_dir))
    paths = [layout.cuts(part) for part in parts]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"prepared cuts not found: {missing}; run the recipe's prepare step first")
    return CutSet.from_files(paths) if len(paths) > 1 else load_manifest_lazy(paths[0])


def keep_trainable(cuts: CutSet, tokenizer: Tokenizer, config: DataConfig, s_range: int) -> CutSet:
    """Drop cuts that would stop training: too short/long, empty transcript, or more tokens than the
    pruned lattice can place in the cut's encoder frames (target_lens <= (s_range-1) * frames)."""

    def ok(cut) -> bool:
        if not config.min_cut_seconds <= cut.duration <= config.max_cut_seconds:
            return False
        text = " ".join(s.text or "" for s in cut.supervisions).strip()
        if not text:
            return False
        frames = int(round(cut.duration * 100)) // SUBSAMPLING_FACTOR
        return 0 < len(tokenizer.encode(text)) <= (s_range - 1) * frames

    return cuts.filter(ok)


class SeededDataset(torch.utils.data.Dataset):
    """Seeds every random number generator from the batch's cut ids before augmenting it, so a
    batch is augmented identically whatever came before: resumed training replays exactly."""

    def __init__(self, inner: K2SpeechRecognitionDataset, tokenizer: Tokenizer, seed: int, epoch: int = 0) -> None:
        self.inner = inner
        self.tokenizer = tokenizer
        self.seed = seed
        self.epoch = epoch  # a cut is augmented differently in every epoch

    def __getitem__(self, cuts: CutSet) -> Batch:
        ids = sorted(c.id for c in cuts)
        digest = hashlib.sha1(f"{self.seed}|{self.epoch}|{'|'.join(ids)}".encode()).digest()
        batch_seed = int.from_bytes(digest[:4], "little")
        random.seed(batch_seed)
        np.random.seed(batch_seed)
        torch.manual_seed(batch_seed)
        raw = self.inner[cuts]
        sup = raw["supervisions"]
        texts = list(sup["text"])
        tokens = [torch.tensor(self.tokenizer.encode(t), dtype=torch.long) for t in texts]
        targets = torch.nn.utils.rnn.pad_sequence(tokens, batch_first=True, padding_value=self.tokenizer.blank_id)
        # K2SpeechRecognitionDataset orders supervisions like the input rows (sequence_idx).
        order = sup["sequence_idx"]
        feature_lens = torch.zeros(raw["inputs"].shape[0], dtype=torch.long)
        feature_lens[order] = sup["num_frames"].long()
        targets_by_row = torch.zeros(raw["inputs"].shape[0], targets.shape[1], dtype=torch.long)
        targets_by_row[order] = targets
        target_lens = torch.zeros(raw["inputs"].shape[0], dtype=torch.long)
        target_lens[order] = torch.tensor([len(t) for t in tokens])
        texts_by_row = [""] * raw["inputs"].shape[0]
        cut_ids = [""] * raw["inputs"].shape[0]
        for i, row in enumerate(order.tolist()):
            texts_by_row[row] = texts[i]
            cut_ids[row] = sup["cut"][i].id
        return Batch(raw["inputs"], feature_lens, targets_by_row, target_lens, texts_by_row, cut_ids,
                     float(sum(c.duration for c in cuts)))


class ResumableSampler:
    """Wraps a lhotse sampler so an epoch can restart after `skip` batches: the sampler's own
    state runs ahead of the consumed batches when loader workers prefetch, so we count instead."""

    def __init__(self, sampler, skip: int = 0) -> None:
        self.sampler = sampler
        self.skip = skip

    def __iter__(self) -> Iterator[CutSet]:
        iterator = iter(self.sampler)
        for _ in range(self.skip):
            next(iterator, None)
        self.skip = 0
        # Not `yield from`: that calls iter() on the lhotse sampler again, which rewinds it.
        while True:
            try:
                yield next(iterator)
            except StopIteration:
                return


def train_dataloader(cuts: CutSet, tokenizer: Tokenizer, config: DataConfig, seed: int, epoch: int,
                     world_size: int = 1, rank: int = 0, skip_batches: int = 0) -> DataLoader:
    """Batches of `epoch`, starting after `skip_batches` (the resume point)."""
    cut_transforms = []
    if config.speed_perturb or config.volume_perturb or config.noise_cuts:
        if not config.on_the_fly_features:
            raise ValueError("speed/volume perturbation and noise mixing need data.on_the_fly_features=true")
    if config.speed_perturb:
        cut_transforms.append(PerturbSpeed(factors=[0.9, 1.1], p=2 / 3))
    if config.volume_perturb:
        cut_transforms.append(PerturbVolume(p=0.5))
    if config.noise_cuts:
        cut_transforms.append(CutMix(load_manifest_lazy(config.noise_cuts), snr=(10, 20), p=0.5))
    input_transforms = [SpecAugment(
        time_warp_factor=config.spec_time_warp, num_feature_masks=config.spec_feature_masks,
        features_mask_size=config.spec_feature_mask_size, num_frame_masks=config.spec_frame_masks,
        frames_mask_size=config.spec_frame_mask_size, max_frames_mask_fraction=config.spec_max_frames_fraction,
    )] if config.spec_augment else []
    dataset = K2SpeechRecognitionDataset(
        cut_transforms=cut_transforms,
        input_transforms=input_transforms,
        input_strategy=_input_strategy(config),
        return_cuts=True,
    )
    sampler = DynamicBucketingSampler(
        cuts, max_duration=config.max_duration, num_buckets=min(config.num_buckets, len(cuts)), shuffle=True,
        drop_last=False,
        world_size=world_size, rank=rank, seed=seed,
    )
    sampler.set_epoch(epoch)
    return DataLoader(SeededDataset(dataset, tokenizer, seed, epoch), sampler=ResumableSampler(sampler, skip_batches),
                      batch_size=None, num_workers=config.num_workers)


def eval_dataloader(cuts: CutSet, tokenizer: Tokenizer, config: DataConfig) -> DataLoader:
    dataset = K2SpeechRecognitionDataset(input_strategy=_input_strategy(config), return_cuts=True)
    sampler = SimpleCutSampler(cuts, max_duration=config.max_duration, shuffle=False)
    return DataLoader(SeededDataset(dataset, tokenizer, 0), sampler=sampler, batch_size=None,
                      num_workers=config.num_workers)


def _input_strategy(config: DataConfig):
    return OnTheFlyFeatures(KaldiNativeFbank()) if config.on_the_fly_features else PrecomputedFeatures()
