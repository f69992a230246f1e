"""`make demo`: speak digit strings with espeak-ng, train a tiny transducer on them for a few
hundred steps, then decode offline and streaming (greedy and beam), save a self-contained
checkpoint and decode again from the reloaded file.

This is the foundation's smoke run; the LibriSpeech recipe and the server grow it into the real job.
Digit strings rather than a few fixed sentences: every word recurs in many positions, so the model
must ground emissions in the audio instead of recognising a memorised sentence from its first frames.
"""
from __future__ import annotations

import argparse
import logging
import random
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from asr.checkpoint import load_checkpoint, save_checkpoint
from asr.config import DecoderConfig, EncoderConfig, JoinerConfig, LossConfig, ModelConfig, StreamingConfig
from asr.data.datamodule import Batch
from asr.decoding import GreedySearch, ModifiedBeamSearch
from asr.features import compute_fbank
from asr.model.transducer import Transducer
from asr.recognizer import Recognizer
from asr.tokenizer import Tokenizer, train_tokenizer
from recipes.synthetic.espeak import Voice, speak

log = logging.getLogger("asr.demo")

DIGITS = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")


def digit_strings(count: int, length: int = 4, seed: int = 1234) -> list[str]:
    """Random digit strings without immediate repeats (a 2-token stateless decoder cannot count
    a run of identical words once its alignment drifts)."""
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        words = [rng.choice(DIGITS)]
        while len(words) < length:
            word = rng.choice(DIGITS)
            if word != words[-1]:
                words.append(word)
        texts.append(" ".join(words))
    return texts


def tiny_config(vocab_size: int) -> ModelConfig:
    """A ~0.3M-parameter transducer that trains in seconds on a CPU."""
    return ModelConfig(
        vocab_size=vocab_size,
        encoder=EncoderConfig(d_model=96, num_layers=2, num_heads=4, ff_dim=192, conv_kernel=7,
                              subsampling_channels=16, dropout=0.0, train_chunk_sizes=(4, 8), train_left_chunks=(-1, 4)),
        decoder=DecoderConfig(d_model=96),
        joiner=JoinerConfig(d_joiner=96),
        loss=LossConfig(warmup_steps=30, s_range=5),
    )


def make_batch(audios: list[np.ndarray], tokenizer: Tokenizer, texts: list[str]) -> Batch:
    feats = [compute_fbank(a, 16000) for a in audios]
    tokens = [tokenizer.encode(t) for t in texts]
    features = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    targets = torch.nn.utils.rnn.pad_sequence([torch.tensor(t) for t in tokens], batch_first=True)
    return Batch(features, torch.tensor([f.shape[0] for f in feats]), targets, torch.tensor([len(t) for t in tokens]),
                 list(texts), [f"demo-{i}" for i in range(len(texts))], sum(len(a) for a in audios) / 16000)


def train_steps(
    model: Transducer, optimizer: torch.optim.Optimizer, batch: Batch, steps: int, first_step: int = 0,
    progress: bool = True,
) -> list[float]:
    """`steps` optimisation steps on one batch; returns the pruned loss per encoder frame per step."""
    model.train()
    losses = []
    bar = tqdm(range(first_step, first_step + steps), desc="training", disable=not progress)
    for step in bar:
        out = model(batch.features, batch.feature_lens, batch.targets, batch.target_lens, step=step)
        optimizer.zero_grad()
        (out.loss / out.num_frames).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        losses.append(out.pruned.item() / out.num_frames)
        bar.set_postfix(pruned=f"{losses[-1]:.3f}", simple=f"{out.simple.item() / out.num_frames:.3f}")
    model.eval()
    return losses


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=12, help="digit strings to speak and learn")
    parser.add_argument("--steps", type=int, default=400, help="training steps")
    parser.add_argument("--out", type=Path, default=Path("exp/demo"), help="where the checkpoint is written")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.manual_seed(args.seed)
    random.seed(args.seed)

    texts = digit_strings(args.utterances)
    log.info("speaking %d digit strings with espeak-ng", len(texts))
    audios = [speak(t, Voice("en-us", "m3", speed=170)) for t in texts]
    tokenizer = train_tokenizer(texts + list(DIGITS), vocab_size=40, model_prefix=args.out / "bpe")
    batch = make_batch(audios, tokenizer, texts)
    model = Transducer(tiny_config(tokenizer.vocab_size))
    log.info("model: %.2fM parameters, vocab %d", sum(p.numel() for p in model.parameters()) / 1e6, tokenizer.vocab_size)
    start = time.time()
    losses = train_steps(model, torch.optim.AdamW(model.parameters(), lr=3e-3), batch, args.steps)
    log.info("trained %d steps in %.0f s: pruned loss/frame %.3f -> %.4f", args.steps, time.time() - start,
             losses[0], losses[-1])

    save_checkpoint(args.out / "model.pt", model, tokenizer, {"steps": args.steps, "data": "demo digit strings"})
    ckpt = load_checkpoint(args.out / "model.pt")
    log.info("saved %s; decoding with the model rebuilt from that file alone", args.out / "model.pt")
    streaming = StreamingConfig(chunk_size=8, left_context=32)
    greedy = Recognizer(ckpt.model, ckpt.tokenizer, GreedySearch(), streaming)
    beam = Recognizer(ckpt.model, ckpt.tokenizer, ModifiedBeamSearch(beam=4), streaming)
    print(f"\n{'reference':<28} {'greedy, streamed at 320 ms':<28} {'beam 4, offline':<28}")
    exact = 0
    for text, audio in zip(texts, audios):
        stream = greedy.stream()
        for begin in range(0, len(audio), 1600):  # 100 ms pieces, as a microphone would send them
            stream.accept_waveform(audio[begin : begin + 1600], 16000)
        streamed = stream.finish().text
        exact += streamed == text
        print(f"{text:<28} {streamed:<28} {beam.transcribe(audio, 16000).text:<28}")
    first = greedy.transcribe(audios[0], 16000)
    print(f"\ntoken times of '{texts[0]}':", " ".join(f"{t.piece}@{t.start:.2f}s" for t in first.tokens))
    print(f"{exact}/{len(texts)} utterances recognised exactly when streamed in 320 ms chunks")


if __name__ == "__main__":
    main()
