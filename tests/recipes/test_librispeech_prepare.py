"""LibriSpeech preparation on tiny corpora in LibriSpeech's layout, with real lhotse and sentencepiece."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
import soundfile
import torch
from lhotse import CutSet, RecordingSet, SupervisionSet, load_manifest
from lhotse.dataset import OnTheFlyFeatures

from asr.features import KaldiNativeFbank, compute_fbank
from asr.tokenizer import Tokenizer
from recipes.librispeech.prepare import (
    SKIP_REASONS,
    DataLayout,
    PrepareConfig,
    build_parser,
    make_cuts,
    make_manifests,
    prepare,
    resolve_parts,
)

PARTS = ("train-clean-100", "dev-clean", "test-clean")
SPEAKERS = {"train-clean-100": ("1", "2"), "dev-clean": ("3", "4"), "test-clean": ("5", "6")}
WORDS = ("HELLO", "WORLD", "STREAMING", "SPEECH", "RECOGNITION", "IS", "FUN", "AND", "FAST")
# lilcom stores log-mel values with a 2**-5 step: the rounding error is at most half of it.
LILCOM_TOLERANCE = 2**-6 + 1e-6


def write_utterance(chapter_dir: Path, utterance_id: str, rng: np.random.Generator, seconds: float = 0.6) -> Path:
    time = np.arange(int(16000 * seconds)) / 16000
    tone = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 800) * time) + 0.05 * rng.standard_normal(time.size)
    path = chapter_dir / f"{utterance_id}.flac"
    soundfile.write(path, tone.astype(np.float32), 16000, subtype="PCM_16")
    return path


def write_corpus(root: Path, num_utterances: int = 3) -> dict[str, dict[str, str]]:
    """``root/LibriSpeech/<part>/<spk>/<chapter>/`` with flacs and transcripts; returns part -> id -> text."""
    rng = np.random.default_rng(0)
    texts: dict[str, dict[str, str]] = {}
    for part in PARTS:
        texts[part] = {}
        for speaker in SPEAKERS[part]:
            chapter = f"{speaker}0"
            chapter_dir = root / "LibriSpeech" / part / speaker / chapter
            chapter_dir.mkdir(parents=True)
            lines = []
            for index in range(num_utterances):
                utterance_id = f"{speaker}-{chapter}-{index:04d}"
                write_utterance(chapter_dir, utterance_id, rng, seconds=0.5 + 0.1 * index)
                text = " ".join(rng.choice(WORDS, size=4))
                texts[part][utterance_id] = text
                lines.append(f"{utterance_id} {text}\n")
            (chapter_dir / f"{speaker}-{chapter}.trans.txt").write_text("".join(lines))
    return texts


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(path): (path.stat().st_mtime_ns, path.stat().st_size) for path in root.rglob("*") if path.is_file()}


def test_end_to_end_writes_manifests_features_equal_to_serving_fbank_and_a_bpe_model(tmp_path, caplog):
    texts = write_corpus(tmp_path / "corpus")
    config = PrepareConfig(output_dir=tmp_path / "data", corpus_dir=tmp_path / "corpus", num_jobs=1)

    layout = prepare(config)

    assert layout == DataLayout(tmp_path / "data", 500)
    for part in PARTS:
        recordings = load_manifest(layout.recordings(part), RecordingSet)
        supervisions = load_manifest(layout.supervisions(part), SupervisionSet)
        assert sorted(recordings.ids) == sorted(texts[part])
        assert {segment.id: segment.text for segment in supervisions} == texts[part]  # upper case kept
        assert json.loads(layout.skipped(part).read_text())["skipped"] == {reason: 0 for reason in SKIP_REASONS}

        cuts = CutSet.from_file(layout.cuts(part))
        assert sorted(cut.id for cut in cuts) == sorted(texts[part])
        for cut in cuts:
            features = cut.load_features()
            assert features.shape == (cut.num_frames, 80)
            audio, rate = soundfile.read(cut.recording.sources[0].source, dtype="float32")
            expected = compute_fbank(audio, rate).numpy()
            assert features.shape == expected.shape
            np.testing.assert_allclose(features, expected, rtol=0, atol=LILCOM_TOLERANCE)
            assert cut.supervisions[0].text == texts[part][cut.id]

    assert layout.bpe_model.name == "bpe_500.model"
    tokenizer = Tokenizer.from_file(layout.bpe_model)
    for text in texts["train-clean-100"].values():
        ids = tokenizer.encode(text)
        assert ids and 0 not in ids and tokenizer.decode(ids) == text
    # Only training text goes into the BPE model's corpus, in utterance-id order.
    train_texts = texts["train-clean-100"]
    assert layout.transcripts.read_text().splitlines() == [train_texts[key] for key in sorted(train_texts)]

    before = snapshot(tmp_path / "data")
    with caplog.at_level(logging.INFO, logger="recipes.librispeech.prepare"):
        prepare(config)
    assert snapshot(tmp_path / "data") == before
    messages = caplog.text
    for part in PARTS:
        assert f"manifests: {part} already prepared" in messages
        assert f"cuts: {part} already made with precomputed features; skipped" in messages
    assert "bpe_500.model exists for these transcripts; skipped" in messages


def test_a_grown_corpus_is_prepared_again_instead_of_reusing_stale_manifests(tmp_path, caplog):
    write_corpus(tmp_path / "corpus")
    config = PrepareConfig(output_dir=tmp_path / "data", corpus_dir=tmp_path / "corpus", num_jobs=1)
    layout = prepare(config)
    chapter_dir = tmp_path / "corpus" / "LibriSpeech" / "train-clean-100" / "1" / "10"
    write_utterance(chapter_dir, "1-10-0003", np.random.default_rng(1))
    with (chapter_dir / "1-10.trans.txt").open("a") as f:
        f.write("1-10-0003 FAST SPEECH IS FUN\n")
    with caplog.at_level(logging.INFO, logger="recipes.librispeech.prepare"):
        prepare(config)
    assert "the corpus of train-clean-100 changed" in caplog.text
    assert "dev-clean already prepared from this corpus" in caplog.text  # untouched parts are kept
    assert "1-10-0003" in load_manifest(layout.cuts("train-clean-100")).ids
    assert "FAST SPEECH IS FUN" in layout.transcripts.read_text().splitlines()  # BPE retrained


# Damages a clean part dir; returns the bad utterance id, the file an error must name, and the line.
BadInput = Callable[[Path], tuple[str, Path, Optional[int]]]


def transcript_of(part_dir: Path, speaker: str) -> Path:
    return part_dir / speaker / f"{speaker}0" / f"{speaker}-{speaker}0.trans.txt"


def flac_without_transcript(part_dir: Path):
    write_utterance(part_dir / "1" / "10", "1-10-0009", np.random.default_rng(1))
    return "1-10-0009", part_dir / "1" / "10" / "1-10-0009.flac", None


def transcript_without_flac(part_dir: Path):
    transcript = transcript_of(part_dir, "1")
    with transcript.open("a") as file:
        file.write("1-10-0008 A LINE WITH NO AUDIO\n")
    return "1-10-0008", transcript, 4


def corrupt_flac(part_dir: Path):
    path = part_dir / "2" / "20" / "2-20-0000.flac"
    path.write_bytes(np.random.default_rng(2).bytes(3000))
    return "2-20-0000", path, None


def replace_line(transcript: Path, line_number: int, new_line: str) -> None:
    lines = transcript.read_text(encoding="utf-8").splitlines()
    lines[line_number - 1] = new_line
    transcript.write_text("\n".join(lines) + "\n", encoding="utf-8")


def empty_transcript(part_dir: Path):
    replace_line(transcript_of(part_dir, "2"), 2, "2-20-0001")
    return "2-20-0001", transcript_of(part_dir, "2"), 2


def non_ascii_transcript(part_dir: Path):
    replace_line(transcript_of(part_dir, "2"), 3, "2-20-0002 CAFÉ AU LAIT")
    return "2-20-0002", transcript_of(part_dir, "2"), 3


BAD_INPUTS: dict[str, BadInput] = {
    "missing_transcript": flac_without_transcript,
    "missing_audio": transcript_without_flac,
    "unreadable_audio": corrupt_flac,
    "empty_transcript": empty_transcript,
    "non_ascii_transcript": non_ascii_transcript,
}


def test_skip_leaves_every_bad_item_out_and_counts_it_by_reason(tmp_path):
    texts = write_corpus(tmp_path / "corpus")
    part_dir = tmp_path / "corpus" / "LibriSpeech" / "train-clean-100"
    bad_ids = {make_bad(part_dir)[0] for make_bad in BAD_INPUTS.values()}
    with transcript_of(part_dir, "1").open("a") as file:
        file.write("\n")  # a blank line: harmless to us, but lhotse's parser crashes on it
    layout = DataLayout(tmp_path / "data")

    summary = make_manifests(tmp_path / "corpus", layout.manifest_dir, ["train-clean-100"], on_error="skip", num_jobs=2)

    good_ids = sorted(set(texts["train-clean-100"]) - bad_ids)
    assert len(good_ids) == 3
    recordings = load_manifest(layout.recordings("train-clean-100"), RecordingSet)
    supervisions = load_manifest(layout.supervisions("train-clean-100"), SupervisionSet)
    assert sorted(recordings.ids) == good_ids
    assert sorted(supervisions.ids) == good_ids
    # Sources point into the real corpus, not at the filtered view lhotse was given.
    assert all(Path(r.sources[0].source).parent.parent.parent == part_dir for r in recordings)
    report = json.loads(layout.skipped("train-clean-100").read_text())
    expected_counts = {reason: int(reason in BAD_INPUTS) for reason in SKIP_REASONS}
    assert report["skipped"] == expected_counts
    assert summary["train-clean-100"].skipped == expected_counts
    assert summary["train-clean-100"].num_utterances == 3
    assert sorted(item["reason"] for item in report["items"]) == sorted(BAD_INPUTS)
    assert not list(layout.manifest_dir.glob(".filtered_view*"))

    cuts_paths = make_cuts(layout.manifest_dir, layout.fbank_dir, ["train-clean-100"], num_jobs=1)
    cuts = CutSet.from_file(cuts_paths["train-clean-100"])
    assert sorted(cut.id for cut in cuts) == good_ids


@pytest.mark.parametrize("reason", sorted(BAD_INPUTS))
def test_stop_raises_naming_the_bad_file_and_line(tmp_path, reason):
    write_corpus(tmp_path / "corpus")
    _, bad_path, line = BAD_INPUTS[reason](tmp_path / "corpus" / "LibriSpeech" / "train-clean-100")
    manifest_dir = tmp_path / "data" / "manifests"

    with pytest.raises(ValueError) as raised:
        make_manifests(tmp_path / "corpus", manifest_dir, ["train-clean-100"], on_error="stop", num_jobs=1)

    message = str(raised.value)
    assert str(bad_path) in message and reason in message
    if line is not None:
        assert f"{bad_path}:{line}:" in message
    assert not list(manifest_dir.glob("*.jsonl.gz"))


def test_on_the_fly_cuts_have_no_features_but_lhotse_extracts_serving_fbank(tmp_path):
    write_corpus(tmp_path / "corpus")
    layout = DataLayout(tmp_path / "data")
    make_manifests(tmp_path / "corpus", layout.manifest_dir, ["dev-clean"], num_jobs=1)

    make_cuts(layout.manifest_dir, layout.fbank_dir, ["dev-clean"], precompute=False, num_jobs=1)

    cuts = CutSet.from_file(layout.cuts("dev-clean"))
    assert len(cuts) == 6 and not any(cut.has_features for cut in cuts)
    assert not list(layout.fbank_dir.glob("feats_*"))
    features, feature_lens = OnTheFlyFeatures(KaldiNativeFbank())(cuts)  # (B, T, 80), (B,)
    assert features.shape[0] == 6 and features.shape[2] == 80
    for index, cut in enumerate(cuts):
        expected = compute_fbank(cut.load_audio()[0], cut.sampling_rate)
        assert int(feature_lens[index]) == expected.shape[0]
        torch.testing.assert_close(features[index, : expected.shape[0]], expected, rtol=0, atol=0)

    # Asking for precomputed features later rebuilds the cuts instead of trusting the old file.
    make_cuts(layout.manifest_dir, layout.fbank_dir, ["dev-clean"], precompute=True, num_jobs=1)
    assert all(cut.has_features for cut in CutSet.from_file(layout.cuts("dev-clean")))


def test_without_a_corpus_dir_the_mini_parts_are_downloaded_into_the_download_dir(tmp_path, monkeypatch):
    calls = []

    def fake_download_librispeech(target_dir, dataset_parts):  # openslr is unreachable from tests
        calls.append((Path(target_dir), tuple(dataset_parts)))
        write_corpus(Path(target_dir))
        return Path(target_dir) / "LibriSpeech"

    monkeypatch.setattr("recipes.librispeech.prepare.download_librispeech", fake_download_librispeech)
    layout = prepare(PrepareConfig(output_dir=tmp_path / "data", vocab_size=64, precompute_features=False, num_jobs=1))

    assert calls == [(tmp_path / "data" / "download", ("train-clean-100", "dev-clean", "test-clean"))]
    assert all(layout.cuts(part).is_file() for part in PARTS)
    assert layout.bpe_model.name == "bpe_64.model" and layout.bpe_model.is_file()


def test_parts_default_to_those_in_the_corpus_and_aliases_expand(tmp_path):
    (tmp_path / "dev-clean").mkdir()
    (tmp_path / "train-clean-100").mkdir()
    (tmp_path / "notes").mkdir()
    assert resolve_parts((), tmp_path) == ("dev-clean", "train-clean-100")
    assert resolve_parts(()) == ("train-clean-100", "dev-clean", "test-clean")
    mini_and_more = resolve_parts(("mini", "dev-other", "dev-clean"))
    assert mini_and_more == ("train-clean-100", "dev-clean", "test-clean", "dev-other")
    with pytest.raises(ValueError, match="no LibriSpeech parts"):
        resolve_parts((), tmp_path / "notes")


def test_data_layout_names_every_output_path(tmp_path):
    layout = DataLayout(tmp_path, vocab_size=256)
    assert layout.recordings("dev-clean") == tmp_path / "manifests" / "librispeech_recordings_dev-clean.jsonl.gz"
    assert layout.supervisions("dev-clean") == tmp_path / "manifests" / "librispeech_supervisions_dev-clean.jsonl.gz"
    assert layout.skipped("dev-clean") == tmp_path / "manifests" / "skipped_dev-clean.json"
    assert layout.cuts("dev-clean") == tmp_path / "fbank" / "cuts_dev-clean.jsonl.gz"
    assert layout.bpe_model == tmp_path / "lang" / "bpe_256.model"
    assert layout.transcripts == tmp_path / "lang" / "transcripts.txt"


def test_cli_defaults_come_from_prepare_config():
    args = build_parser().parse_args([])
    defaults = PrepareConfig()
    assert args.output_dir == defaults.output_dir and args.vocab_size == defaults.vocab_size
    assert args.on_error == defaults.on_error and args.num_jobs == defaults.num_jobs
    assert args.corpus_dir is None and args.parts == [] and args.on_the_fly is False
