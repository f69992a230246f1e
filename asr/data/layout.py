"""Where a prepared data directory keeps things: the contract between a recipe's prepare step
(which writes it) and the trainer/evaluator (which read it). Recipes may subclass it to name
their own intermediate files."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataLayout:
    root: Path  # the prepared data directory
    vocab_size: int = 500  # names the BPE model

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
        return self.fbank_dir / cuts_filename(part)

    @property
    def bpe_model(self) -> Path:
        return self.lang_dir / bpe_filename(self.vocab_size)


def cuts_filename(part: str) -> str:
    return f"cuts_{part}.jsonl.gz"


def bpe_filename(vocab_size: int) -> str:
    return f"bpe_{vocab_size}.model"
