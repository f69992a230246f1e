"""LibriSpeech data preparation: download, manifests, cuts with features, BPE model.

Each step is a typed function that skips work whose output is already complete (a
``.completed`` marker or the output file), so a crashed or repeated run resumes where it
stopped. :func:`prepare` runs them all; the CLI is a thin wrapper around it:

    python -m recipes.librispeech.prepare --corpus-dir /data/synthetic   # a local corpus
    python -m recipes.librispeech.prepare --parts mini                    # download from openslr

Everything lands under one output dir, named by :class:`DataLayout`.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Optional, Sequence, Union

from lhotse import CutSet, LilcomChunkyWriter, RecordingSet, SupervisionSet, fix_manifests, load_manifest
from lhotse.recipes.librispeech import LIBRISPEECH, MINI_LIBRISPEECH, download_librispeech, prepare_librispeech
from lhotse.utils import fastcopy

from asr.config import FeatureConfig
from asr.data.layout import DataLayout as BaseLayout
from asr.data.layout import bpe_filename, cuts_filename
from asr.features import KaldiNativeFbank
from asr.tokenizer import train_tokenizer
from recipes.librispeech.validate import SKIP_REASONS, CorpusIssue, PartScan, Utterance, scan_part

logger = logging.getLogger(__name__)

Pathlike = Union[str, Path]
OnError = Literal["skip", "stop"]

KNOWN_PARTS = LIBRISPEECH + MINI_LIBRISPEECH
PART_ALIASES = {
    "mini": ("train-clean-100", "dev-clean", "test-clean"),
    "full": LIBRISPEECH,
    "mini_librispeech": MINI_LIBRISPEECH,
}

MIN_CUTS_PER_JOB = 500  # fewer cuts per feature-extraction process than this: use fewer processes



@dataclass(frozen=True)
class DataLayout(BaseLayout):
    """Every path the recipe writes, derived from the output dir; the trainer reads the base
    layout's part of it (cuts, BPE model)."""

    @property
    def download_dir(self) -> Path:
        """Default place for downloaded archives and the extracted LibriSpeech/ tree."""
        return self.root / "download"

    def recordings(self, part: str) -> Path:
        return _recordings_path(self.manifest_dir, part)

    def supervisions(self, part: str) -> Path:
        return _supervisions_path(self.manifest_dir, part)

    def skipped(self, part: str) -> Path:
        return _skipped_path(self.manifest_dir, part)

    def features(self, part: str) -> Path:
        """Lilcom storage: ``feats_<part>.lca`` with one job, a ``feats_<part>/`` dir with several."""
        return _features_path(self.fbank_dir, part)

    @property
    def transcripts(self) -> Path:
        return _transcripts_path(self.lang_dir)


def _recordings_path(manifest_dir: Path, part: str) -> Path:
    return manifest_dir / f"librispeech_recordings_{part}.jsonl.gz"  # lhotse's own naming


def _supervisions_path(manifest_dir: Path, part: str) -> Path:
    return manifest_dir / f"librispeech_supervisions_{part}.jsonl.gz"


def _skipped_path(manifest_dir: Path, part: str) -> Path:
    return manifest_dir / f"skipped_{part}.json"


def _cuts_path(fbank_dir: Path, part: str) -> Path:
    return fbank_dir / cuts_filename(part)


def _features_path(fbank_dir: Path, part: str) -> Path:
    return fbank_dir / f"feats_{part}"


def _transcripts_path(lang_dir: Path) -> Path:
    return lang_dir / "transcripts.txt"


def _bpe_model_path(lang_dir: Path, vocab_size: int) -> Path:
    return lang_dir / bpe_filename(vocab_size)


# ----------------------------------------------------------------------------- parts


def is_training_part(part: str) -> bool:
    return part.startswith("train")


def resolve_parts(requested: Sequence[str], corpus_dir: Optional[Path] = None) -> tuple[str, ...]:
    """Expand aliases ("mini", "full", "mini_librispeech"); with none requested, take the known
    parts present in `corpus_dir`, or "mini" when there is no corpus yet (it will be downloaded)."""
    if not requested:
        if corpus_dir is None:
            return PART_ALIASES["mini"]
        found = tuple(part for part in KNOWN_PARTS if (corpus_dir / part).is_dir())
        if not found:
            raise ValueError(f"no LibriSpeech parts ({', '.join(KNOWN_PARTS)}) found in {corpus_dir}")
        return found
    parts: list[str] = []
    for name in requested:
        for part in PART_ALIASES.get(name, (name,)):
            if part not in parts:
                parts.append(part)
    return tuple(parts)


def locate_corpus(corpus_dir: Pathlike) -> Path:
    """The dir holding the part folders: `corpus_dir` itself or its ``LibriSpeech/`` child."""
    corpus_dir = Path(corpus_dir).absolute()  # manifests then point at files from any working dir
    nested = corpus_dir / "LibriSpeech"
    return nested if nested.is_dir() else corpus_dir


# ----------------------------------------------------------------------------- step 1


def download(target_dir: Pathlike, parts: Sequence[str]) -> Path:
    """Download and extract `parts` from openslr into ``target_dir/LibriSpeech``.

    lhotse keeps a ``.completed`` marker per part and resumes partial archives.
    """
    unknown = [part for part in parts if part not in KNOWN_PARTS]
    if unknown:
        raise ValueError(f"cannot download unknown LibriSpeech parts {unknown}; known: {', '.join(KNOWN_PARTS)}")
    logger.info("download: %s into %s (parts already extracted are skipped)", ", ".join(parts), target_dir)
    return download_librispeech(target_dir, dataset_parts=list(parts))


# ----------------------------------------------------------------------------- step 2: manifests


@dataclass(frozen=True)
class PartManifests:
    part: str
    num_utterances: int
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count, every reason listed


def make_manifests(
    corpus_dir: Pathlike,
    manifest_dir: Pathlike,
    parts: Sequence[str],
    on_error: OnError = "skip",
    num_jobs: int = 1,
) -> dict[str, PartManifests]:
    """lhotse recordings + supervisions manifests of the good utterances of each part.

    The corpus is checked first (:func:`scan_part`). With ``on_error="stop"`` the first problem
    raises a ValueError naming the file and line; with ``"skip"`` bad utterances are left out and
    counted by reason in ``skipped_<part>.json``. lhotse crashes on some bad lines and silently
    keeps others, so a part with problems is handed to lhotse as a filtered view of symlinks.
    """
    if on_error not in ("skip", "stop"):
        raise ValueError(f"on_error must be 'skip' or 'stop', got {on_error!r}")
    corpus_dir, manifest_dir = locate_corpus(corpus_dir), Path(manifest_dir)
    manifest_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for part in parts:
        marker = manifest_dir / f".manifests_{part}.completed"
        fingerprint = corpus_fingerprint(corpus_dir / part)
        if marker.is_file() and marker.read_text() == fingerprint:
            logger.info("manifests: %s already prepared from this corpus; skipped", part)
            results[part] = _read_part_summary(manifest_dir, part)
            continue
        if marker.is_file():
            logger.info("manifests: the corpus of %s changed since its manifests were made; redoing them", part)
            marker.unlink()
        scan = scan_part(corpus_dir / part, num_jobs)
        if scan.issues and on_error == "stop":
            more = f"; {len(scan.issues) - 1} more problem(s) in {part}" if len(scan.issues) > 1 else ""
            raise ValueError(f"{scan.issues[0].describe()}{more}; fix the corpus or use on_error='skip'")
        results[part] = _write_part_manifests(corpus_dir, manifest_dir, scan, num_jobs)
        marker.write_text(fingerprint)
    return results


def _write_part_manifests(corpus_dir: Path, manifest_dir: Path, scan: PartScan, num_jobs: int) -> PartManifests:
    part = scan.part
    outputs = (_recordings_path(manifest_dir, part), _supervisions_path(manifest_dir, part))
    for path in outputs:  # leftovers of an interrupted run: lhotse would skip the part if they exist
        path.unlink(missing_ok=True)
    view_root = manifest_dir / f".filtered_view_{part}"
    try:
        if scan.is_clean:
            lhotse_corpus = corpus_dir
        else:
            lhotse_corpus = _write_filtered_view(view_root, corpus_dir / part, scan.utterances)
        manifests = prepare_librispeech(lhotse_corpus, dataset_parts=[part], output_dir=manifest_dir, num_jobs=num_jobs)
    finally:
        shutil.rmtree(view_root, ignore_errors=True)

    # Keep exactly the utterances we checked, with sources pointing into the real corpus, sorted
    # by id: lhotse's order follows rglob and its thread pool, which differ between machines.
    good = {utterance.utterance_id: utterance for utterance in scan.utterances}
    recordings = RecordingSet.from_recordings(
        _with_source(recording, good[recording.id].audio_path)
        for recording in sorted(manifests[part]["recordings"], key=lambda recording: recording.id)
        if recording.id in good
    )
    supervisions = SupervisionSet.from_segments(
        segment
        for segment in sorted(manifests[part]["supervisions"], key=lambda segment: segment.id)
        if segment.recording_id in good
    )
    recordings, supervisions = fix_manifests(recordings, supervisions)
    kept = set(supervisions.ids) & set(recordings.ids)
    issues = list(scan.issues) + [
        CorpusIssue("rejected_by_lhotse", utterance.audio_path, None, "prepare_librispeech dropped it")
        for utterance_id, utterance in good.items()
        if utterance_id not in kept
    ]
    _save_atomically(recordings, outputs[0])
    _save_atomically(supervisions, outputs[1])

    counts = Counter(issue.reason for issue in issues)
    skipped = {reason: counts.get(reason, 0) for reason in SKIP_REASONS}
    report = {
        "part": part,
        "num_utterances": len(kept),
        "skipped": skipped,
        "items": [{"reason": i.reason, "path": str(i.path), "line": i.line, "detail": i.detail} for i in issues],
    }
    _skipped_path(manifest_dir, part).write_text(json.dumps(report, indent=2) + "\n")
    if issues:
        nonzero = {reason: count for reason, count in skipped.items() if count}
        details = _skipped_path(manifest_dir, part).name
        logger.warning("manifests: %s kept %d, skipped %d: %s (see %s)", part, len(kept), len(issues), nonzero, details)
    else:
        logger.info("manifests: %s has %d utterances, none skipped", part, len(kept))
    return PartManifests(part, len(kept), skipped)


def _write_filtered_view(view_root: Path, part_dir: Path, utterances: Iterable[Utterance]) -> Path:
    """A LibriSpeech tree with only good utterances (symlinks + filtered transcripts) for lhotse."""
    shutil.rmtree(view_root, ignore_errors=True)
    lines_by_dir: dict[Path, list[str]] = defaultdict(list)
    for utterance in utterances:
        link = view_root / part_dir.name / utterance.audio_path.relative_to(part_dir)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(utterance.audio_path.absolute())
        lines_by_dir[link.parent].append(f"{utterance.utterance_id} {utterance.text}\n")
    for directory, lines in lines_by_dir.items():
        (directory / "filtered.trans.txt").write_text("".join(lines), encoding="ascii")
    (view_root / part_dir.name).mkdir(parents=True, exist_ok=True)  # a part with no good utterance left
    return view_root


def _with_source(recording, audio_path: Path):
    sources = [fastcopy(source, source=str(audio_path)) for source in recording.sources]
    return fastcopy(recording, sources=sources)


def _read_part_summary(manifest_dir: Path, part: str) -> PartManifests:
    report = json.loads(_skipped_path(manifest_dir, part).read_text())
    return PartManifests(part, report["num_utterances"], report["skipped"])


def _save_atomically(manifest, path: Path) -> None:
    """Write next to `path` and rename, so a crash never leaves a truncated file under the real name."""
    partial = path.with_name(path.name.replace(".jsonl.gz", ".partial.jsonl.gz"))
    manifest.to_file(partial)
    os.replace(partial, path)


# ----------------------------------------------------------------------------- step 3


def make_cuts(
    manifest_dir: Pathlike,
    fbank_dir: Pathlike,
    parts: Sequence[str],
    precompute: bool = True,
    num_jobs: int = 1,
    feature_config: FeatureConfig = FeatureConfig(),
) -> dict[str, Path]:
    """``cuts_<part>.jsonl.gz`` per part: one cut per utterance, id = utterance id, text as in the
    corpus (upper case). With `precompute`, fbank features from :class:`KaldiNativeFbank` (the
    server's extractor) are stored lilcom-compressed next to them; otherwise the cuts carry only
    audio and the trainer extracts features on the fly with the same extractor.
    """
    manifest_dir, fbank_dir = Path(manifest_dir), Path(fbank_dir)
    fbank_dir.mkdir(parents=True, exist_ok=True)
    mode = "precomputed" if precompute else "on-the-fly"
    outputs = {}
    for part in parts:
        cuts_path = outputs[part] = _cuts_path(fbank_dir, part)
        marker = fbank_dir / f".cuts_{part}.completed"
        stamp = f"{mode}|{_manifest_stamp(manifest_dir, part)}"  # redo when the manifests were remade
        if cuts_path.is_file() and marker.is_file() and marker.read_text() == stamp:
            logger.info("cuts: %s already made with %s features; skipped", part, mode)
            continue
        marker.unlink(missing_ok=True)
        cuts = CutSet.from_manifests(
            recordings=load_manifest(_recordings_path(manifest_dir, part), RecordingSet),
            supervisions=load_manifest(_supervisions_path(manifest_dir, part), SupervisionSet),
        )
        # One supervision spans each recording: trimming only renames "<utt>-0" cuts to "<utt>".
        cuts = cuts.trim_to_supervisions(keep_overlapping=False).to_eager()
        if any(cut.sampling_rate != feature_config.sample_rate for cut in cuts):
            cuts = cuts.resample(feature_config.sample_rate)  # lazy: applied when audio is loaded
        _remove_features(fbank_dir, part)
        if precompute:
            num_cuts = len(cuts)
            # Each lhotse worker is a spawned process that imports torch (seconds): not worth it for small parts.
            jobs = max(1, min(num_jobs, num_cuts // MIN_CUTS_PER_JOB))
            # Each spawned worker would start a torch thread per core: jobs x cores threads thrash
            # (16 jobs on 16 cores stalled for minutes). One thread each; the workers inherit the env.
            saved = os.environ.get("OMP_NUM_THREADS")
            os.environ["OMP_NUM_THREADS"] = "1"
            try:
                cuts = cuts.compute_and_store_features(
                    extractor=KaldiNativeFbank(feature_config),
                    storage_path=_features_path(fbank_dir, part),
                    num_jobs=jobs,
                    storage_type=LilcomChunkyWriter,
                )
            finally:
                if saved is None:
                    os.environ.pop("OMP_NUM_THREADS", None)
                else:
                    os.environ["OMP_NUM_THREADS"] = saved
            if len(cuts) < num_cuts:  # lhotse drops cuts whose audio fails to decode, silently
                logger.warning("cuts: %s lost %d cuts whose audio could not be decoded", part, num_cuts - len(cuts))
        _save_atomically(cuts, cuts_path)
        marker.write_text(stamp)
        logger.info("cuts: %s has %d cuts with %s features", part, len(cuts), mode)
    return outputs


def corpus_fingerprint(part_dir: Path) -> str:
    """Number, total size and newest change time of a corpus part's files: a changed, grown or
    regenerated corpus gives another fingerprint, so its manifests are remade."""
    count = size = newest = 0
    for path in Path(part_dir).rglob("*"):
        if path.is_file():
            info = path.stat()
            count, size, newest = count + 1, size + info.st_size, max(newest, info.st_mtime_ns)
    return f"{count} files, {size} bytes, newest {newest}"


def _manifest_stamp(manifest_dir: Path, part: str) -> str:
    stats = [p.stat() for p in (_recordings_path(manifest_dir, part), _supervisions_path(manifest_dir, part))
             if p.is_file()]
    return ",".join(f"{s.st_size}:{s.st_mtime_ns}" for s in stats)


def _remove_features(fbank_dir: Path, part: str) -> None:
    """Stale storage of an earlier run (one job writes a .lca file, several a directory)."""
    storage = _features_path(fbank_dir, part)
    storage.with_suffix(".lca").unlink(missing_ok=True)
    shutil.rmtree(storage, ignore_errors=True)


# ----------------------------------------------------------------------------- step 4


def train_bpe(manifest_dir: Pathlike, lang_dir: Pathlike, parts: Sequence[str], vocab_size: int = 500) -> Path:
    """Train ``lang_dir/bpe_<vocab_size>.model`` on the transcripts of the training parts only
    (dev/test text must not leak into the vocabulary); they are also kept in ``transcripts.txt``."""
    manifest_dir, lang_dir = Path(manifest_dir), Path(lang_dir)
    model_path = _bpe_model_path(lang_dir, vocab_size)
    train_parts = [part for part in parts if is_training_part(part)]
    if not train_parts:
        raise ValueError(f"no training part among {list(parts)}; the BPE model is trained on train-* parts only")
    texts = [
        segment.text
        for part in train_parts
        for segment in load_manifest(_supervisions_path(manifest_dir, part), SupervisionSet)
    ]
    transcripts = _transcripts_path(lang_dir)
    if model_path.is_file() and transcripts.is_file() and transcripts.read_text() == "".join(f"{t}\n" for t in texts):
        logger.info("bpe: %s exists for these transcripts; skipped", model_path)
        return model_path
    lang_dir.mkdir(parents=True, exist_ok=True)
    _transcripts_path(lang_dir).write_text("".join(f"{text}\n" for text in texts))
    tokenizer = train_tokenizer(texts, vocab_size, model_type="bpe", model_prefix=lang_dir / f"bpe_{vocab_size}")
    logger.info(
        "bpe: trained %s (%d ids) on %d transcripts of %s",
        model_path.name, tokenizer.vocab_size, len(texts), ", ".join(train_parts),
    )
    return model_path


# ----------------------------------------------------------------------------- all steps


@dataclass(frozen=True)
class PrepareConfig:
    output_dir: Path = Path("data/librispeech")  # manifests/, fbank/ and lang/ go under it
    corpus_dir: Optional[Path] = None  # existing corpus in LibriSpeech's layout; None = download
    download_dir: Optional[Path] = None  # where to download to; None = <output_dir>/download
    parts: tuple[str, ...] = ()  # part names or aliases; () = parts in corpus_dir, else "mini"
    vocab_size: int = 500  # BPE vocabulary, blank and <unk> included
    precompute_features: bool = True  # False = cuts without features, extracted on the fly
    on_error: OnError = "skip"  # bad utterances: leave out and count ("skip") or raise ("stop")
    num_jobs: int = min(8, os.cpu_count() or 1)  # worker threads/processes for lhotse


def prepare(config: PrepareConfig = PrepareConfig()) -> DataLayout:
    """Run every step; each skips what an earlier run already finished."""
    layout = DataLayout(Path(config.output_dir), config.vocab_size)
    if config.corpus_dir is None:
        parts = resolve_parts(config.parts)
        corpus_dir = download(config.download_dir or layout.download_dir, parts)
    else:
        corpus_dir = locate_corpus(config.corpus_dir)
        logger.info("download: skipped, using the local corpus %s", corpus_dir)
        parts = resolve_parts(config.parts, corpus_dir)
    logger.info("parts: %s", ", ".join(parts))
    make_manifests(corpus_dir, layout.manifest_dir, parts, config.on_error, config.num_jobs)
    make_cuts(layout.manifest_dir, layout.fbank_dir, parts, config.precompute_features, config.num_jobs)
    if any(is_training_part(part) for part in parts):
        train_bpe(layout.manifest_dir, layout.lang_dir, parts, config.vocab_size)
    else:
        logger.warning("bpe: no training part among %s; no BPE model trained", ", ".join(parts))
    return layout


def build_parser() -> argparse.ArgumentParser:
    defaults = PrepareConfig()
    parser = argparse.ArgumentParser(
        prog="python -m recipes.librispeech.prepare",
        description="Prepare LibriSpeech (or a local corpus in its layout) for training: manifests, "
        "cuts with fbank features, BPE model. Re-running skips finished steps.",
    )
    parser.add_argument("--corpus-dir", type=Path, default=defaults.corpus_dir,
                        help="existing corpus in LibriSpeech layout (the LibriSpeech/ dir or its parent); "
                        "skips the download. Default: download from openslr.org")
    parser.add_argument("--download-dir", type=Path, default=defaults.download_dir,
                        help="where archives are downloaded and extracted (default: <output-dir>/download)")
    parser.add_argument("--output-dir", type=Path, default=defaults.output_dir,
                        help="gets manifests/, fbank/ and lang/ (default: %(default)s)")
    parser.add_argument("--parts", nargs="+", default=list(defaults.parts), metavar="PART",
                        help="parts to prepare, e.g. train-clean-100 dev-clean, or the aliases "
                        f"mini ({' '.join(PART_ALIASES['mini'])}), full (all 7) or mini_librispeech. "
                        "Default: the parts found in --corpus-dir, else mini")
    parser.add_argument("--vocab-size", type=int, default=defaults.vocab_size,
                        help="BPE vocabulary size incl. blank and <unk>, trained on the train-* parts only "
                        "(default: %(default)s)")
    parser.add_argument("--on-the-fly", action="store_true",
                        help="do not precompute features: cuts keep only audio and the trainer extracts "
                        "fbank on the fly")
    parser.add_argument("--on-error", choices=("skip", "stop"), default=defaults.on_error,
                        help="bad corpus items (missing/unreadable audio, missing/empty/non-ASCII transcript): "
                        "skip them and count them in manifests/skipped_<part>.json, or stop with an error naming "
                        "the file (default: %(default)s)")
    parser.add_argument("--num-jobs", type=int, default=defaults.num_jobs,
                        help="parallel jobs for checking audio, manifests and feature extraction "
                        "(default: %(default)s)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = PrepareConfig(
        output_dir=args.output_dir,
        corpus_dir=args.corpus_dir,
        download_dir=args.download_dir,
        parts=tuple(args.parts),
        vocab_size=args.vocab_size,
        precompute_features=not args.on_the_fly,
        on_error=args.on_error,
        num_jobs=args.num_jobs,
    )
    try:
        layout = prepare(config)
    except ValueError as error:  # bad corpus or arguments: the message says what to fix
        raise SystemExit(f"error: {error}") from error
    logger.info("done: cuts in %s, BPE model %s", layout.fbank_dir, layout.bpe_model)


if __name__ == "__main__":
    main()
