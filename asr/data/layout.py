"""Where a prepared data directory keeps things: the contract between a recipe's prepare step
(which writes it) and the trainer/evaluator (which read it)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataLayout:
    root: Path

    @property
    def manifest_dir(self) -> Path:
        return self.root / "manifests"

    @property
    def fbank_dir(self) -> Path:
        return self.root / "fbank"

    @property
    def lang_dir(self) -> Path:
        return self.root / "lang"

    def cuts(self, part: str) -> Path:
        return self.fbank_dir / f"cuts_{part}.jsonl.gz"

    def bpe_model(self, vocab_size: int) -> Path:
        return self.lang_dir / f"bpe_{vocab_size}.model"
