"""Synthesise an English speech corpus in LibriSpeech's exact layout, plus long-form test recordings.

    <out>/LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt:04d>.flac   16 kHz mono PCM_16
    <out>/LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt
    <out>/LibriSpeech/SPEAKERS.TXT
    <out>/long-form/longform-<k:03d>.flac | .txt | .segments.tsv

so that `lhotse.recipes.prepare_librispeech(<out>/LibriSpeech)` runs on it unchanged. A speaker is a
fixed espeak-ng (voice, variant, speed, pitch, amplitude); dev and test speakers use (voice, variant)
pairs never heard in training, and train/dev/test sentences are disjoint (see text.py).

Every choice for utterance i of a split is drawn from a generator seeded by (seed, split, i), so the
corpus is the same whatever the worker count, and growing a split keeps its first utterances.

    python -m recipes.synthetic.generate --out data/synthetic --train-hours 2 --long-form 2
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import shutil
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from multiprocessing import Pool
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import soundfile as sf
from tqdm import tqdm

from recipes.synthetic.espeak import Voice, installed_variants, limit_peak, speak, trim_silence
from recipes.synthetic.text import Sentence, load_sentences, split_sentences, to_phrases

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
# Human-sounding variants only: no robots, whispers, croaks or joke voices.
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5", "Alicia", "Andrea", "Annie", "anika", "aunty", "belinda",
                   "grandma", "linda", "steph")
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "klatt", "klatt2", "klatt3", "klatt4", "Alex",
                 "Andy", "adam", "benjamin", "caleb", "david", "edward", "grandpa", "john", "Lee", "max",
                 "Michael", "Mike", "norbert", "paul", "quincy", "rob", "robert", "shelby", "travis", "victor", "zac")
VARIANTS = FEMALE_VARIANTS + MALE_VARIANTS
SPLITS = ("train-clean-100", "train-clean-360", "dev-clean", "test-clean")
VOICE_GROUP = {"train-clean-100": "train", "train-clean-360": "train", "dev-clean": "dev", "test-clean": "test"}
NUM_SPEAKERS = {"train-clean-100": 251, "train-clean-360": 921, "dev-clean": 40, "test-clean": 40}  # as LibriSpeech
HELD_OUT_PAIR_FRACTION = 0.1  # of each voice's variants, for dev and again for test
UTTERANCES_PER_CHAPTER = 50
MAX_JOINED_SENTENCES = 3
SPEED_RANGE, PITCH_RANGE, AMPLITUDE_RANGE = (130, 190), (25, 75), (50, 90)
PAUSE_RANGE = (0.3, 1.5)  # seconds of silence between long-form utterances
FORMAT_VERSION = 1


@dataclass(frozen=True)
class CorpusConfig:
    seed: int = 0  # every text, voice and pause follows from it
    text_sources: tuple[str, ...] = ("austen",)  # text.SOURCES keys: austen, devil, gcide
    train_hours: float = 2.0  # train-clean-100
    train_utterances: int | None = None  # train-clean-100 by count; overrides train_hours
    train_360_hours: float = 0.0  # train-clean-360; 0 skips it
    train_360_utterances: int | None = None
    dev_minutes: float = 10.0  # dev-clean
    dev_utterances: int | None = None
    test_minutes: float = 10.0  # test-clean
    test_utterances: int | None = None
    long_form: int = 2  # number of long-form recordings
    long_form_minutes: tuple[float, float] = (5.0, 5.0)  # each long-form recording's length: min, max
    max_words: int = 0  # cut longer sentences at clause punctuation into phrases (0: whole sentences)
    utterance_seconds: tuple[float, float] = (2.0, 20.0)  # each utterance's target length: short texts get followers

    def split_budgets(self) -> dict[str, tuple[float, int | None]]:
        """split -> (target seconds, utterance count or None); splits with neither are left out."""
        budgets = {
            "train-clean-100": (self.train_hours * 3600, self.train_utterances),
            "train-clean-360": (self.train_360_hours * 3600, self.train_360_utterances),
            "dev-clean": (self.dev_minutes * 60, self.dev_utterances),
            "test-clean": (self.test_minutes * 60, self.test_utterances),
        }
        return {split: (seconds, count) for split, (seconds, count) in budgets.items()
                if (count if count is not None else seconds) > 0}


@dataclass(frozen=True)
class Speaker:
    speaker_id: int
    voice: Voice
    split: str

    @property
    def sex(self) -> str:
        return "F" if self.voice.variant in FEMALE_VARIANTS else "M"


@dataclass(frozen=True)
class Utterance:
    utterance_id: str  # "<speaker>-<chapter>-<utt:04d>"
    speaker: Speaker
    chapter_id: int
    text: str  # transcript
    spoken: str  # what espeak-ng reads
    estimated_seconds: float

    @property
    def relative_path(self) -> Path:
        return Path(str(self.speaker.speaker_id), str(self.chapter_id), f"{self.utterance_id}.flac")


@dataclass(frozen=True)
class SplitReport:
    split: str
    num_utterances: int
    num_speakers: int
    seconds: float


@dataclass(frozen=True)
class LongFormReport:
    recording_id: str
    speaker_id: int
    num_segments: int
    seconds: float


@dataclass(frozen=True)
class CorpusReport:
    splits: tuple[SplitReport, ...]
    long_form: tuple[LongFormReport, ...]


# ---------------------------------------------------------------- speakers and text plan

def voice_pairs(seed: int) -> dict[str, list[tuple[str, str]]]:
    """"train"/"dev"/"test" -> (voice, variant) pairs. Each voice lends a few variants to dev and a few
    to test, so every accent is tested but no tested (voice, variant) pair is ever trained on."""
    groups: dict[str, list[tuple[str, str]]] = {"train": [], "dev": [], "test": []}
    held_out = max(1, round(len(VARIANTS) * HELD_OUT_PAIR_FRACTION))
    for voice in VOICES:
        variants = list(VARIANTS)
        random.Random(f"pairs-{seed}-{voice}").shuffle(variants)
        groups["test"] += [(voice, v) for v in variants[:held_out]]
        groups["dev"] += [(voice, v) for v in variants[held_out:2 * held_out]]
        groups["train"] += [(voice, v) for v in variants[2 * held_out:]]
    for name, pairs in groups.items():
        random.Random(f"pair-order-{seed}-{name}").shuffle(pairs)
    return groups


@lru_cache(maxsize=8)
def build_speakers(seed: int) -> dict[str, tuple[Speaker, ...]]:
    """The fixed speaker pool of every split, with distinct LibriSpeech-like ids (10..9999)."""
    pairs = voice_pairs(seed)
    ids = iter(random.Random(f"speaker-ids-{seed}").sample(range(10, 10000), sum(NUM_SPEAKERS.values())))
    speakers = {}
    for split in SPLITS:
        group, offset = pairs[VOICE_GROUP[split]], SPLITS.index(split) * 97  # 360 starts on other pairs
        pool = []
        for j in range(NUM_SPEAKERS[split]):
            rng = random.Random(f"speaker-{seed}-{split}-{j}")
            name, variant = group[(j + offset) % len(group)]
            voice = Voice(name, variant, speed=rng.randint(*SPEED_RANGE), pitch=rng.randint(*PITCH_RANGE),
                          amplitude=rng.randint(*AMPLITUDE_RANGE))
            pool.append(Speaker(next(ids), voice, split))
        speakers[split] = tuple(pool)
    return speakers


def estimate_seconds(sentences: Sequence[Sentence], speed: int) -> float:
    """Duration of espeak-ng reading `sentences` in one go, silence trimmed: letters per minute plus
    a pause between sentences, fitted on ~1,000 utterances of random voices (mean error ~7%)."""
    letters = sum(len(sentence.text) - sentence.text.count(" ") for sentence in sentences)
    return 0.18 * letters * 60 / speed + 0.5 + 0.55 * (len(sentences) - 1)


@lru_cache(maxsize=64)
def _sentence_order(seed: int, split: str, epoch: int, num_sentences: int) -> tuple[int, ...]:
    order = list(range(num_sentences))
    random.Random(f"order-{seed}-{split}-{epoch}").shuffle(order)
    return tuple(order)


def plan_utterance(split: str, index: int, sentences: Sequence[Sentence], seed: int,
                   spread: tuple[float, float] = (2.0, 20.0), walk: tuple[str, int] | None = None) -> Utterance:
    """Utterance `index` of `split`: speakers take turns; each speaker's utterances fill chapters of
    UTTERANCES_PER_CHAPTER. The first sentence walks a seeded shuffle of the split's sentences (so all
    are used before any repeats); short ones get up to two random followers towards a target length
    drawn from `spread` (seconds), never past its upper end. `walk` = (split, start): walk that split's
    shuffle from position `start` instead, so two splits drawing on one sentence pool share one walk."""
    speakers = build_speakers(seed)[split]
    speaker = speakers[index % len(speakers)]
    turn = index // len(speakers)
    chapter_id = speaker.speaker_id * 100 + turn // UTTERANCES_PER_CHAPTER
    rng = random.Random(f"utterance-{seed}-{split}-{index}")
    walk_split, start = walk or (split, 0)
    epoch, position = divmod(start + index, len(sentences))
    chosen = [sentences[_sentence_order(seed, walk_split, epoch, len(sentences))[position]]]
    target = rng.uniform(*spread)

    speed = speaker.voice.speed
    while len(chosen) < MAX_JOINED_SENTENCES and estimate_seconds(chosen, speed) < target:
        follower = sentences[rng.randrange(len(sentences))]
        if estimate_seconds(chosen + [follower], speed) > spread[1]:
            break
        chosen.append(follower)
    return Utterance(
        utterance_id=f"{speaker.speaker_id}-{chapter_id}-{turn % UTTERANCES_PER_CHAPTER:04d}",
        speaker=speaker, chapter_id=chapter_id,
        text=" ".join(s.text for s in chosen), spoken=" ".join(s.spoken for s in chosen),
        estimated_seconds=estimate_seconds(chosen, speed),
    )


def plan_split(split: str, seconds: float, count: int | None, sentences: Sequence[Sentence],
               seed: int, spread: tuple[float, float] = (2.0, 20.0),
               walk: tuple[str, int] | None = None) -> list[Utterance]:
    """`count` utterances, or as many as it takes for their estimated durations to reach `seconds`."""
    plan: list[Utterance] = []
    total = 0.0
    while (len(plan) < count) if count is not None else (total < seconds):
        plan.append(plan_utterance(split, len(plan), sentences, seed, spread, walk))
        total += plan[-1].estimated_seconds
    return plan


# ---------------------------------------------------------------- audio

def render(spoken: str, voice: Voice) -> np.ndarray:
    """(N,) float32 16 kHz speech with ~0.15 s of silence each side and peak <= 0.95."""
    return limit_peak(trim_silence(speak(spoken, voice, SAMPLE_RATE), SAMPLE_RATE)).astype(np.float32)


def write_flac(path: Path, audio: np.ndarray) -> None:
    """Write to a hidden temporary name, then rename, so a file that exists is a complete one."""
    temporary = path.with_name(f".{path.name}.tmp")
    sf.write(temporary, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    os.replace(temporary, path)


def _existing_frames(path: Path) -> int | None:
    try:
        info = sf.info(path)
    except (RuntimeError, sf.LibsndfileError):
        return None
    return info.frames if info.samplerate == SAMPLE_RATE and info.channels == 1 and info.frames > 0 else None


def _write_utterance(job: tuple[str, Voice, str]) -> int:
    """Worker: synthesise one utterance unless its flac already exists; return its sample count."""
    spoken, voice, path = job
    frames = _existing_frames(Path(path)) if os.path.exists(path) else None
    if frames is None:
        audio = render(spoken, voice)
        write_flac(Path(path), audio)
        frames = len(audio)
    return frames


def _render_job(job: tuple[str, Voice]) -> np.ndarray:
    return render(*job)


Mapper = Callable[[Callable, list, str], list]


def _mapper(pool: Pool | None) -> Mapper:
    """map(function, jobs, description) in job order, over `pool` when there is one, with a progress bar."""
    def run(function: Callable, jobs: list, description: str) -> list:
        results = pool.imap(function, jobs, chunksize=4) if pool is not None else map(function, jobs)
        return list(tqdm(results, total=len(jobs), desc=description, unit="utt", leave=False))
    return run


# ---------------------------------------------------------------- LibriSpeech splits

def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _write_text(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _prune(split_dir: Path, keep: set[Path]) -> None:
    """Remove flac and trans.txt files a previous, larger run left that this plan does not name."""
    for path in list(split_dir.rglob("*.flac")) + list(split_dir.rglob("*.trans.txt")):
        if path not in keep:
            path.unlink()
    for directory in sorted((d for d in split_dir.rglob("*") if d.is_dir()), reverse=True):
        if not any(directory.iterdir()):
            directory.rmdir()


MIN_HELD_OUT_SENTENCES = 20  # toy corpora: below this many in-vocabulary sentences, take the fewest-OOV ones


def in_vocabulary(sentences: Sequence[Sentence], training_words: set[str]) -> tuple[Sentence, ...]:
    """Held-out sentences whose words all occur in the training transcripts, as LibriSpeech's test
    text is unseen but almost entirely in-vocabulary (~1% OOV). A 2-hour corpus from one book
    would otherwise put ~18% of test words outside anything the model heard, and the WER would
    measure text coverage rather than recognition of unseen voices."""
    oov = [sum(word not in training_words for word in s.text.split()) for s in sentences]
    kept = tuple(s for s, n in zip(sentences, oov) if n == 0)
    if len(kept) >= min(MIN_HELD_OUT_SENTENCES, len(sentences)):
        return kept
    ranked = sorted(range(len(sentences)), key=lambda i: (oov[i], i))[:MIN_HELD_OUT_SENTENCES]
    return tuple(sentences[i] for i in sorted(ranked))


def _plan_hashes(plan: list[Utterance]) -> dict[str, str]:
    """relative flac path -> hash of what it must contain (spoken text and voice)."""
    return {str(u.relative_path): hashlib.sha1(f"{u.spoken}|{u.speaker}".encode()).hexdigest() for u in plan}


def generate_split(corpus_dir: Path, split: str, plan: list[Utterance], map_jobs: Mapper) -> SplitReport:
    """Write one split's flacs (skipping finished ones), trans.txt files and `.completed` marker.

    A split remembers what each flac holds (`.plan.json`): a file whose planned text or voice
    changed is removed rather than kept under a new transcript; unchanged files survive, so a
    growing split keeps its first utterances."""
    split_dir = corpus_dir / split
    marker = split_dir / ".completed"
    plan_file = split_dir / ".plan.json"
    hashes = _plan_hashes(plan)
    previous = _read_json(plan_file)
    if previous is None and split_dir.exists():
        shutil.rmtree(split_dir)  # made before plans were recorded: contents unknown
    for path, old_hash in (previous or {}).items():
        if hashes.get(path) != old_hash:
            (split_dir / path).unlink(missing_ok=True)
    done = _read_json(marker)
    if done is not None and previous == hashes:
        return SplitReport(split, len(plan), len(done["speaker_seconds"]), done["seconds"])
    marker.unlink(missing_ok=True)
    split_dir.mkdir(parents=True, exist_ok=True)
    _write_text(plan_file, json.dumps(hashes))
    for directory in {split_dir / u.relative_path.parent for u in plan}:
        directory.mkdir(parents=True, exist_ok=True)
    jobs = [(u.spoken, u.speaker.voice, str(split_dir / u.relative_path)) for u in plan]
    frames = map_jobs(_write_utterance, jobs, split)

    chapters: dict[Path, list[Utterance]] = defaultdict(list)
    for utterance in plan:
        chapters[split_dir / utterance.relative_path.parent].append(utterance)
    for directory, utterances in chapters.items():
        lines = "".join(f"{u.utterance_id} {u.text}\n" for u in sorted(utterances, key=lambda u: u.utterance_id))
        _write_text(directory / f"{directory.parent.name}-{directory.name}.trans.txt", lines)
    _prune(split_dir, {split_dir / u.relative_path for u in plan}
           | {d / f"{d.parent.name}-{d.name}.trans.txt" for d in chapters})

    speaker_seconds: dict[str, float] = defaultdict(float)
    for utterance, count in zip(plan, frames):
        speaker_seconds[str(utterance.speaker.speaker_id)] += count / SAMPLE_RATE
    seconds = sum(frames) / SAMPLE_RATE
    _write_text(marker, json.dumps({"num_utterances": len(plan), "seconds": seconds,
                                    "speaker_seconds": speaker_seconds}, indent=1))
    return SplitReport(split, len(plan), len(speaker_seconds), seconds)


def write_speakers_txt(corpus_dir: Path, seed: int) -> None:
    """SPEAKERS.TXT in LibriSpeech's format, for every finished split on disk."""
    rows = [";ID  |SEX| SUBSET           |MINUTES| NAME"]
    for split in SPLITS:
        done = _read_json(corpus_dir / split / ".completed")
        if done is None:
            continue
        for speaker in sorted(build_speakers(seed)[split], key=lambda speaker: speaker.speaker_id):
            seconds = done["speaker_seconds"].get(str(speaker.speaker_id))
            if seconds:
                v = speaker.voice
                name = f"espeak-ng {v.espeak_voice} s{v.speed} p{v.pitch} a{v.amplitude}"
                rows.append(f"{speaker.speaker_id:<5}| {speaker.sex} | {split:<17}| {seconds / 60:5.2f} | {name}")
    header = "; Synthetic speakers (espeak-ng voices); columns as in LibriSpeech's SPEAKERS.TXT\n"
    _write_text(corpus_dir / "SPEAKERS.TXT", header + "\n".join(rows) + "\n")


# ---------------------------------------------------------------- long-form

def _long_form_recording(index: int, config: CorpusConfig, sentences: Sequence[Sentence],
                         map_jobs: Mapper) -> tuple[Speaker, np.ndarray, list[tuple[float, float, str]]]:
    """One speaker reading test sentences (seeded order) with 0.3-1.5 s pauses until the recording
    reaches a length drawn from config.long_form_minutes; returns (speaker, audio, segments)."""
    speakers = build_speakers(config.seed)["test-clean"]
    speaker = speakers[index % len(speakers)]
    order_rng = random.Random(f"long-form-order-{config.seed}-{index}")
    pause_rng = random.Random(f"long-form-pauses-{config.seed}-{index}")
    low, high = (minutes * 60 for minutes in config.long_form_minutes)
    target = order_rng.uniform(low, high)
    order: list[Sentence] = []
    pieces: list[np.ndarray] = [np.zeros(int(pause_rng.uniform(*PAUSE_RANGE) * SAMPLE_RATE), np.float32)]
    segments: list[tuple[float, float, str]] = []
    position = len(pieces[0])
    while position < target * SAMPLE_RATE:
        batch: list[Sentence] = []  # enough sentences, by estimate, to fill what is left (plus a margin)
        batch_seconds, wanted = 0.0, 1.1 * (target - position / SAMPLE_RATE) + 5.0
        while batch_seconds < wanted:
            if not order:
                order = list(sentences)
                order_rng.shuffle(order)
            batch.append(order.pop())
            batch_seconds += estimate_seconds([batch[-1]], speaker.voice.speed) + sum(PAUSE_RANGE) / 2
        audios = map_jobs(_render_job, [(s.spoken, speaker.voice) for s in batch], f"long-form {index}")
        for sentence, audio in zip(batch, audios):
            if position >= target * SAMPLE_RATE:
                break
            pause = np.zeros(int(pause_rng.uniform(*PAUSE_RANGE) * SAMPLE_RATE), np.float32)
            segments.append((position / SAMPLE_RATE, (position + len(audio)) / SAMPLE_RATE, sentence.text))
            pieces += [audio, pause]
            position += len(audio) + len(pause)
    if position > high * SAMPLE_RATE and len(segments) > 1:
        last_length = len(pieces[-1]) + len(pieces[-2])
        if position - last_length >= low * SAMPLE_RATE:  # dropping the last utterance keeps it in range
            pieces, segments = pieces[:-2], segments[:-1]
    return speaker, np.concatenate(pieces), segments


def generate_long_form(out_dir: Path, config: CorpusConfig, sentences: Sequence[Sentence],
                       map_jobs: Mapper) -> list[LongFormReport]:
    """<out>/long-form/longform-<k>.{flac,txt,segments.tsv}; skipped when `.completed` matches."""
    long_form_dir = out_dir / "long-form"
    long_form_dir.mkdir(parents=True, exist_ok=True)
    marker = long_form_dir / ".completed"
    request = {"count": config.long_form, "minutes": list(config.long_form_minutes)}
    done = _read_json(marker)
    if done is not None and done["request"] == request:
        return [LongFormReport(**report) for report in done["recordings"]]
    marker.unlink(missing_ok=True)
    reports = []
    for index in range(config.long_form):
        speaker, audio, segments = _long_form_recording(index, config, sentences, map_jobs)
        recording_id = f"longform-{index:03d}"
        _write_text(long_form_dir / f"{recording_id}.txt", " ".join(text for _, _, text in segments) + "\n")
        _write_text(long_form_dir / f"{recording_id}.segments.tsv",
                    "start\tend\ttext\n" + "".join(f"{s:.3f}\t{e:.3f}\t{t}\n" for s, e, t in segments))
        write_flac(long_form_dir / f"{recording_id}.flac", audio)
        reports.append(LongFormReport(recording_id, speaker.speaker_id, len(segments), len(audio) / SAMPLE_RATE))
    for stale in long_form_dir.glob("longform-*"):
        if int(stale.name.split(".")[0].removeprefix("longform-")) >= config.long_form:
            stale.unlink()
    _write_text(marker, json.dumps({"request": request, "recordings": [asdict(r) for r in reports]}, indent=1))
    return reports


# ---------------------------------------------------------------- the corpus

def _claim_output(out_dir: Path, config: CorpusConfig) -> None:
    """Refuse to mix two seeds or text sources in one folder, or to touch a real LibriSpeech copy."""
    identity = {"format": FORMAT_VERSION, "seed": config.seed, "text_sources": list(config.text_sources)}
    if config.max_words:  # left out at 0, so corpora made before the option keep their identity
        identity["max_words"] = config.max_words
    claim = out_dir / ".synthetic.json"
    existing = _read_json(claim)
    if existing is not None and existing != identity:
        raise ValueError(f"{out_dir} holds a corpus made with {existing}, not {identity}; use another --out")
    corpus_dir = out_dir / "LibriSpeech"
    if existing is None and corpus_dir.is_dir() and any(corpus_dir.iterdir()):
        raise ValueError(f"{corpus_dir} exists and was not made by this generator; use another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_text(claim, json.dumps(identity))


def check_variants() -> None:
    """espeak-ng silently replaces an unknown variant by the plain voice, which would merge speakers."""
    missing = set(VARIANTS) - installed_variants()
    if missing:
        raise RuntimeError(f"espeak-ng lacks the voice variants {sorted(missing)}")


def generate_corpus(out_dir: Path | str, config: CorpusConfig = CorpusConfig(),
                    workers: int | None = None) -> CorpusReport:
    """Make (or finish) the corpus under `out_dir`; see the module docstring for the layout."""
    out_dir = Path(out_dir)
    check_variants()
    _claim_output(out_dir, config)
    # Sentences are split between train, dev and test before they are cut into phrases, so no test
    # phrase shares its sentence with a training phrase.
    sentence_splits = split_sentences(load_sentences(tuple(config.text_sources)), config.seed)
    split_sentences_of = {group: to_phrases(getattr(sentence_splits, group), config.max_words)
                          for group in ("train", "dev", "test")}
    workers = workers or os.cpu_count() or 1
    corpus_dir = out_dir / "LibriSpeech"
    budgets = config.split_budgets()
    # The training parts walk one shuffle of the training sentences, each part where the last stopped,
    # so train-clean-360 speaks the sentences train-clean-100 has not.
    plans: dict[str, list[Utterance]] = {}
    walk_split, walk_start = "", 0
    for split, (seconds, count) in budgets.items():
        if VOICE_GROUP[split] == "train":
            walk_split = walk_split or split
            plans[split] = plan_split(split, seconds, count, split_sentences_of["train"], config.seed,
                                      config.utterance_seconds, (walk_split, walk_start))
            walk_start += len(plans[split])
    training_words = {word for plan in plans.values() for u in plan for word in u.text.split()}
    # Train-pool sentences this corpus never speaks are unseen text too: share them between dev and
    # test, which then have enough fully in-vocabulary sentences to choose from.
    spoken = "|".join(u.text for plan in plans.values() for u in plan)
    spare = [sentence for sentence in split_sentences_of["train"] if sentence.text not in spoken]
    for offset, group in enumerate(("dev", "test")):
        split_sentences_of[group] = in_vocabulary(split_sentences_of[group] + tuple(spare[offset::2]), training_words)
    with Pool(workers) if workers > 1 else nullcontext() as pool:  # workers == 1: run in this process
        map_jobs = _mapper(pool)
        split_reports = []
        for split, (seconds, count) in budgets.items():
            plan = plans.get(split) or plan_split(split, seconds, count, split_sentences_of[VOICE_GROUP[split]],
                                                  config.seed, config.utterance_seconds)
            split_reports.append(generate_split(corpus_dir, split, plan, map_jobs))
        write_speakers_txt(corpus_dir, config.seed)
        long_form = (generate_long_form(out_dir, config, split_sentences_of["test"], map_jobs)
                     if config.long_form else [])
    return CorpusReport(tuple(split_reports), tuple(long_form))


# ---------------------------------------------------------------- command line

_HELP = {
    "seed": "seed for every text, voice and pause choice; same seed, same bytes",
    "text_sources": "comma-separated sentence sources: austen (r-cran-janeaustenr), devil (dict-devil), "
                    "gcide (dict-gcide)",
    "train_hours": "hours of train-clean-100",
    "train_utterances": "utterances of train-clean-100 (overrides --train-hours)",
    "train_360_hours": "hours of train-clean-360, with its own speakers (0: not made)",
    "train_360_utterances": "utterances of train-clean-360 (overrides --train-360-hours)",
    "dev_minutes": "minutes of dev-clean (0: not made)",
    "dev_utterances": "utterances of dev-clean (overrides --dev-minutes)",
    "test_minutes": "minutes of test-clean (0: not made)",
    "test_utterances": "utterances of test-clean (overrides --test-minutes)",
    "utterance_seconds": "MIN-MAX target length of an utterance; a short sentence gets followers towards it",
    "max_words": "cut sentences longer than this at commas, semicolons and colons into phrases spoken as "
                 "utterances of their own (0: whole sentences, like LibriSpeech)",
    "long_form": "number of long-form test recordings (0: none)",
    "long_form_minutes": "length of each long-form recording: MINUTES or MIN-MAX (drawn per recording)",
}


def _float_range(value: str) -> tuple[float, float]:
    low, _, high = value.partition("-")
    bounds = (float(low), float(high or low))
    if not 0 < bounds[0] <= bounds[1]:
        raise argparse.ArgumentTypeError(f"want N or MIN-MAX with 0 < MIN <= MAX, got {value!r}")
    return bounds


def parse_args(argv: Sequence[str] | None = None) -> tuple[Path, CorpusConfig, int]:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.synthetic.generate", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output folder; gets LibriSpeech/ and long-form/")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="parallel espeak-ng processes (default: %(default)s)")
    defaults = CorpusConfig()
    for field in fields(CorpusConfig):
        default = getattr(defaults, field.name)
        kind = {"text_sources": lambda v: tuple(v.split(",")), "long_form_minutes": _float_range,
                "utterance_seconds": _float_range,
                "train_utterances": int, "train_360_utterances": int, "dev_utterances": int,
                "test_utterances": int}.get(field.name, type(default))
        shown = ",".join(default) if field.name == "text_sources" else (
            "-".join(f"{m:g}" for m in default) if field.name in ("long_form_minutes", "utterance_seconds")
            else default)
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=kind, default=default,
                            help=f"{_HELP[field.name]} (default: {shown})")
    args = vars(parser.parse_args(argv))
    out, workers = args.pop("out"), args.pop("workers")
    return out, CorpusConfig(**args), workers


def main(argv: Sequence[str] | None = None) -> CorpusReport:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out, config, workers = parse_args(argv)
    started = time.perf_counter()
    report = generate_corpus(out, config, workers)
    _log_report(report, time.perf_counter() - started)
    return report


def _log_report(report: CorpusReport, wall_seconds: float) -> None:
    parts: Iterable[str] = (f"{r.split}: {r.seconds / 3600:.2f} h, {r.num_utterances} utterances, "
                            f"{r.num_speakers} speakers" for r in report.splits)
    long_form = sum(r.seconds for r in report.long_form)
    log.info("done in %.0f s; %s; long-form: %d recordings, %.1f min", wall_seconds, "; ".join(parts),
             len(report.long_form), long_form / 60)


if __name__ == "__main__":
    main()
