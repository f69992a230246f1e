"""`make demo`: speak a few sentences with espeak-ng, train a tiny transducer on them for a minute,
then decode offline and streaming (greedy and beam), save a self-contained checkpoint and reload it.

This is the foundation's smoke run; the LibriSpeech recipe and the server grow it into the real job.
"""
from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from asr.checkpoint import load_checkpoint, save_checkpoint
from asr.config import DecoderConfig, EncoderConfig, JoinerConfig, LossConfig, ModelConfig, StreamingConfig
from asr.decoding import GreedySearch, ModifiedBeamSearch
from asr.features import compute_fbank
from asr.model.transducer import Transducer
from asr.recognizer import Recognizer
from asr.tokenizer import Tokenizer, train_tokenizer
from recipes.synthetic.espeak import Voice, speak

log = logging.getLogger("asr.demo")

SENTENCES = (
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "SHE SELLS SEA SHELLS BY THE SEA SHORE",
    "A JOURNEY OF A THOUSAND MILES BEGINS WITH A SINGLE STEP",
    "ALL THAT GLITTERS IS NOT GOLD",
)


def tiny_config(vocab_size: int) -> ModelConfig:
    """A ~0.3M-parameter transducer that trains in seconds on a CPU."""
    return ModelConfig(
        vocab_size=vocab_size,
        encoder=EncoderConfig(d_model=96, num_layers=2, num_heads=4, ff_dim=192, conv_kernel=7,
                              subsampling_channels=16, dropout=0.0, train_chunk_sizes=(4, 8), train_left_chunks=(-1, 4)),
        decoder=DecoderConfig(d_model=96),
        joiner=JoinerConfig(d_joiner=96),
        loss=LossConfig(warmup_steps=30, s_range=4),
    )


@dataclass
class Batch:
    features: torch.Tensor  # (B, T, F)
    feature_lens: torch.Tensor  # (B,)
    targets: torch.Tensor  # (B, S)
    target_lens: torch.Tensor  # (B,)


def make_batch(audios: list, tokenizer: Tokenizer, texts: list[str]) -> Batch:
    feats = [compute_fbank(a, 16000) for a in audios]
    tokens = [tokenizer.encode(t) for t in texts]
    features = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    targets = torch.nn.utils.rnn.pad_sequence([torch.tensor(t) for t in tokens], batch_first=True)
    return Batch(features, torch.tensor([f.shape[0] for f in feats]), targets, torch.tensor([len(t) for t in tokens]))


def overfit(model: Transducer, batch: Batch, steps: int, lr: float = 3e-3, progress: bool = True) -> list[float]:
    """Train on one batch; returns the loss per step (per encoder frame)."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    bar = tqdm(range(steps), desc="training", disable=not progress)
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
    parser.add_argument("--steps", type=int, default=250, help="training steps on the demo sentences")
    parser.add_argument("--out", type=Path, default=Path("exp/demo"), help="where the checkpoint is written")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    log.info("speaking %d sentences with espeak-ng", len(SENTENCES))
    audios = [speak(s, Voice("en-us", "m3", speed=170)) for s in SENTENCES]
    tokenizer = train_tokenizer(SENTENCES, vocab_size=48, model_prefix=args.out / "bpe")
    batch = make_batch(audios, tokenizer, list(SENTENCES))
    model = Transducer(tiny_config(tokenizer.vocab_size))
    log.info("model: %.2fM parameters, vocab %d", sum(p.numel() for p in model.parameters()) / 1e6, tokenizer.vocab_size)
    start = time.time()
    losses = overfit(model, batch, args.steps)
    log.info("trained %d steps in %.0f s: pruned loss/frame %.3f -> %.3f", args.steps, time.time() - start, losses[0], losses[-1])

    save_checkpoint(args.out / "model.pt", model, tokenizer, {"steps": args.steps, "data": "demo sentences"})
    ckpt = load_checkpoint(args.out / "model.pt")
    log.info("saved and reloaded %s", args.out / "model.pt")
    streaming = StreamingConfig(chunk_size=8, left_context=32)
    greedy = Recognizer(ckpt.model, ckpt.tokenizer, GreedySearch(), streaming)
    beam = Recognizer(ckpt.model, ckpt.tokenizer, ModifiedBeamSearch(beam=4), streaming)
    correct = 0
    for text, audio in zip(SENTENCES, audios):
        stream = greedy.stream()
        for start_sample in range(0, len(audio), 1600):  # 100 ms pieces, as a microphone would send
            stream.accept_waveform(audio[start_sample : start_sample + 1600], 16000)
        streamed = stream.finish()
        offline = greedy.transcribe(audio, 16000, full_context=False)
        print(f"REF            {text}")
        print(f"greedy offline {offline.text}")
        print(f"greedy stream  {streamed.text}")
        print(f"beam offline   {beam.transcribe(audio, 16000).text}")
        correct += streamed.text == text
    first = greedy.transcribe(audios[0], 16000)
    print("token times (s) of the first sentence:",
          " ".join(f"{t.piece}@{t.start:.2f}" for t in first.tokens))
    print(f"{correct}/{len(SENTENCES)} sentences recognised exactly when streamed at 320 ms chunks")


if __name__ == "__main__":
    main()
