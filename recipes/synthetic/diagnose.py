"""What limits a model trained on the synthetic corpus: unseen voices or unseen sentences?

    python -m recipes.synthetic.diagnose --checkpoint exp/synthetic-cpu-small/final.pt \\
        --work-dir data/synthetic

Test-clean differs from training in two ways at once: its speakers are espeak-ng voices never
trained on, and its sentences were never trained on either. This speaks random training and test
transcripts anew, each with training voices and with test voices, decodes all four sets the same
way (greedy, streaming by default) and prints their WER, so the two gaps can be read apart:

    | voices \\ text | training sentences | test sentences |

All four sets are spoken from the plain transcript (no punctuation, so fewer pauses than the
corpus), so compare them with each other rather than with the recipe's test-clean figure.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from lhotse import load_manifest_lazy
from tqdm import tqdm

from asr.checkpoint import load_checkpoint
from asr.evaluate import score
from asr.recognizer import Recognizer
from recipes.synthetic.espeak import Voice
from recipes.synthetic.generate import build_speakers, render


def transcripts(prepared: Path, part: str) -> list[str]:
    path = prepared / "manifests" / f"librispeech_supervisions_{part}.jsonl.gz"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run the recipe's data stage first")
    return [s.text for s in load_manifest_lazy(path)]


def wer_of(recognizer: Recognizer, texts: list[str], voices: list[Voice], streaming: bool, label: str) -> float:
    errors = words = 0
    for i, text in enumerate(tqdm(texts, desc=label, leave=False)):
        audio = render(text.lower(), voices[i % len(voices)])
        hyp = recognizer.transcribe(audio, 16000, full_context=not streaming).text.split()
        subs, dels, ins, _ = score(text.split(), hyp)
        errors += subs + dels + ins
        words += len(text.split())
    return 100.0 * errors / max(1, words)


def main(argv: list[str] | None = None) -> dict[tuple[str, str], float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a final.pt of the recipe")
    parser.add_argument("--work-dir", type=Path, default=Path("data/synthetic"),
                        help="the recipe's --work-dir (corpus/ and prepared/)")
    parser.add_argument("--utterances", type=int, default=80, help="utterances per set")
    parser.add_argument("--offline", action="store_true", help="full-context decoding instead of 320 ms chunks")
    parser.add_argument("--seed", type=int, default=0, help="which transcripts are drawn")
    args = parser.parse_args(argv)

    marker = args.work_dir / "corpus" / ".synthetic.json"
    if not marker.exists():
        raise SystemExit(f"{marker} is missing: --work-dir must be a corpus made by recipes.synthetic")
    corpus_seed = json.loads(marker.read_text())["seed"]
    speakers = build_speakers(corpus_seed)
    voices = {"training": [s.voice for s in speakers["train-clean-100"]],
              "test": [s.voice for s in speakers["test-clean"]]}
    rng = random.Random(args.seed)
    prepared = args.work_dir / "prepared"
    texts = {name: rng.sample(pool, min(args.utterances, len(pool)))
             for name, pool in (("training", transcripts(prepared, "train-clean-100")),
                                ("test", transcripts(prepared, "test-clean")))}
    checkpoint = load_checkpoint(args.checkpoint)
    recognizer = Recognizer(checkpoint.model, checkpoint.tokenizer)  # greedy, 320 ms chunks
    results = {(v, t): wer_of(recognizer, texts[t], voices[v], not args.offline, f"{v} voices, {t} text")
               for v in ("training", "test") for t in ("training", "test")}
    mode = "offline" if args.offline else "streaming 320 ms"
    print(f"WER % ({mode}, greedy, {args.utterances} utterances per cell) of {args.checkpoint}")
    print("| voices \\ text | training sentences | test sentences |\n|---|---|---|")
    for v in ("training", "test"):
        print(f"| {v} voices | {results[(v, 'training')]:.1f} | {results[(v, 'test')]:.1f} |")
    return results


if __name__ == "__main__":
    main()
