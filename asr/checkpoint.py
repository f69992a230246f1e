"""Self-contained checkpoints: resolved config, weights, tokenizer and free-form metadata.

A checkpoint alone rebuilds its model and tokenizer; nothing else (no YAML, no BPE file) is needed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from asr.config import ModelConfig, from_dict, to_dict
from asr.model.transducer import Transducer
from asr.tokenizer import Tokenizer

FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    model: Transducer
    tokenizer: Tokenizer
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. step, measured WER, training data


def save_checkpoint(path: str | Path, model: Transducer, tokenizer: Tokenizer, meta: dict | None = None) -> None:
    """Write atomically (tmp file + rename) so an interrupted save never leaves a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format_version": FORMAT_VERSION,
        "config": to_dict(model.config),
        "model": model.state_dict(),
        "tokenizer": tokenizer.to_bytes(),
        "meta": meta or {},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises several types for a torn or foreign file
        raise ValueError(f"{path} is not a readable checkpoint: {error}") from error
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a checkpoint of this project (format {FORMAT_VERSION})")
    config = from_dict(ModelConfig, payload["config"])
    model = Transducer(config).to(device)
    model.load_state_dict(payload["model"])
    model.eval()
    tokenizer = Tokenizer.from_bytes(payload["tokenizer"])
    if tokenizer.vocab_size != config.vocab_size:
        raise ValueError(f"{path}: tokenizer has {tokenizer.vocab_size} tokens, model expects {config.vocab_size}")
    return Checkpoint(model, tokenizer, payload["meta"])
