"""SentencePiece tokenizer with the transducer blank at id 0.

The serialized model proto (:meth:`Tokenizer.to_bytes`) is small, so checkpoints carry it and a
checkpoint alone can decode. Text is encoded exactly as given; case normalization is a recipe's
business (LibriSpeech transcripts are upper-case).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import sentencepiece as spm

BLANK_PIECE = "<blk>"
BLANK_ID = 0
UNK_ID = 1


class Tokenizer:
    """Text <-> token ids. Id 0 is the blank, id 1 is <unk>; there is no bos/eos/pad."""

    def __init__(self, processor: spm.SentencePieceProcessor) -> None:
        if processor.id_to_piece(BLANK_ID) != BLANK_PIECE:
            raise ValueError(
                f"tokenizer id {BLANK_ID} is {processor.id_to_piece(BLANK_ID)!r}, expected {BLANK_PIECE!r}; "
                "train it with train_tokenizer()"
            )
        self._processor = processor

    @classmethod
    def from_file(cls, path: Union[str, Path]) -> "Tokenizer":
        """Load a sentencepiece ``.model`` file."""
        return cls.from_bytes(Path(path).read_bytes())

    @classmethod
    def from_bytes(cls, model_proto: bytes) -> "Tokenizer":
        """Rebuild from :meth:`to_bytes` output (e.g. stored in a checkpoint)."""
        return cls(spm.SentencePieceProcessor(model_proto=model_proto))

    def to_bytes(self) -> bytes:
        """The serialized sentencepiece model proto."""
        return self._processor.serialized_model_proto()

    @property
    def vocab_size(self) -> int:
        """Number of ids, blank and <unk> included."""
        return self._processor.get_piece_size()

    @property
    def blank_id(self) -> int:
        return BLANK_ID

    def encode(self, text: str) -> list[int]:
        return self._processor.encode(text, out_type=int)

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text; blanks are dropped, so raw per-frame transducer output may be passed."""
        return self._processor.decode([int(i) for i in ids if int(i) != BLANK_ID])

    def id_to_piece(self, token_id: int) -> str:
        return self._processor.id_to_piece(token_id)


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    *,
    model_type: str = "bpe",
    model_prefix: Optional[Union[str, Path]] = None,
) -> Tokenizer:
    """Train a sentencepiece model on `texts` (one sentence each).

    Args:
        vocab_size: target size including blank and <unk>; small corpora may give fewer ids
            (hard_vocab_limit=False) instead of failing.
        model_type: "bpe", "unigram", "char" or "word".
        model_prefix: if given, the model is also written to ``{model_prefix}.model``.
    """
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            # A user-defined symbol takes the first free id, so with unk at 1 the blank lands at 0.
            user_defined_symbols=[BLANK_PIECE],
            unk_id=UNK_ID,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            character_coverage=1.0,  # every character of the transcripts must be spellable
            hard_vocab_limit=False,
            minloglevel=2,  # the trainer logs hundreds of lines to stderr otherwise
        )
    except RuntimeError as error:
        raise ValueError(f"sentencepiece training failed: {error}") from error
    tokenizer = Tokenizer.from_bytes(model.getvalue())
    if model_prefix is not None:
        path = Path(f"{model_prefix}.model")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(model.getvalue())
    return tokenizer
