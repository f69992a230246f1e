"""The synthetic corpus: LibriSpeech's layout (lhotse reads it unchanged), determinism, held-out
voices and text, long-form recordings. Tiny corpora, so the whole file runs in seconds."""
import json
import re
from pathlib import Path

import pytest
import soundfile as sf

from recipes.synthetic.espeak import espeak_available
from recipes.synthetic.generate import (
    SPLITS, CorpusConfig, build_speakers, generate_corpus, main, plan_split, voice_pairs,
)
from recipes.synthetic.text import SOURCES, load_sentences, split_sentences, vocabulary

pytestmark = [
    pytest.mark.skipif(not espeak_available(), reason="espeak-ng not installed (make test installs it)"),
    pytest.mark.skipif(not SOURCES["austen"][0].is_file(), reason="apt-get install r-cran-janeaustenr"),
]

TINY = ["--train-utterances", "6", "--dev-utterances", "3", "--test-utterances", "4",
        "--long-form", "1", "--long-form-minutes", "0.2-0.4", "--workers", "2"]
TRANSCRIPT = re.compile(r"^[A-Z']+( [A-Z']+)*$")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    main(["--out", str(out), "--seed", "0", *TINY])
    return out


def _transcripts(split_dir: Path) -> dict[str, str]:
    lines = [line for path in sorted(split_dir.rglob("*.trans.txt")) for line in path.read_text().splitlines()]
    return dict(line.split(" ", 1) for line in lines)


def _all_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_every_transcript_line_names_a_16k_mono_flac_in_librispeech_layout(corpus):
    library = corpus / "LibriSpeech"
    assert sorted(p.name for p in library.iterdir() if p.is_dir()) == ["dev-clean", "test-clean", "train-clean-100"]
    for split, count in [("train-clean-100", 6), ("dev-clean", 3), ("test-clean", 4)]:
        transcripts = _transcripts(library / split)
        flacs = sorted((library / split).rglob("*.flac"))
        assert len(transcripts) == len(flacs) == count
        for flac in flacs:
            speaker, chapter, _ = flac.stem.split("-")
            assert flac.parent == library / split / speaker / chapter
            assert (flac.parent / f"{speaker}-{chapter}.trans.txt").is_file()
            info = sf.info(flac)
            assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "FLAC")
            assert 1.0 < info.duration < 30.0
            assert TRANSCRIPT.match(transcripts[flac.stem])
        assert (library / split / ".completed").is_file()
    speaker_rows = [line for line in (library / "SPEAKERS.TXT").read_text().splitlines() if not line.startswith(";")]
    assert len(speaker_rows) == 6 + 3 + 4  # speakers take turns, so each tiny utterance has its own


def test_lhotse_prepare_librispeech_reads_the_corpus_unchanged(corpus, tmp_path):
    from lhotse.recipes import prepare_librispeech

    manifests = prepare_librispeech(corpus_dir=corpus / "LibriSpeech", output_dir=tmp_path)
    assert set(manifests) == {"train-clean-100", "dev-clean", "test-clean"}
    for split, parts in manifests.items():
        transcripts = _transcripts(corpus / "LibriSpeech" / split)
        assert len(parts["recordings"]) == len(parts["supervisions"]) == len(transcripts)
        assert {s.id: s.text for s in parts["supervisions"]} == transcripts
        assert all(r.sampling_rate == 16000 and r.num_channels == 1 for r in parts["recordings"])


def test_same_seed_gives_identical_bytes_and_another_seed_differs(corpus, tmp_path):
    main(["--out", str(tmp_path / "again"), "--seed", "0", *TINY])
    main(["--out", str(tmp_path / "other"), "--seed", "1", *TINY])
    first, again, other = _all_files(corpus), _all_files(tmp_path / "again"), _all_files(tmp_path / "other")
    assert again == first
    assert _transcripts(tmp_path / "other" / "LibriSpeech" / "test-clean") != _transcripts(
        corpus / "LibriSpeech" / "test-clean")
    assert {k: v for k, v in other.items() if k.endswith(".flac")} != {k: v for k, v in first.items() if k.endswith(".flac")}


def test_rerun_regenerates_only_missing_files_and_growing_keeps_the_first_utterances(tmp_path):
    config = CorpusConfig(train_utterances=3, dev_minutes=0, test_minutes=0, long_form=0)
    generate_corpus(tmp_path, config, workers=1)
    split_dir = tmp_path / "LibriSpeech" / "train-clean-100"
    before = _all_files(split_dir)
    victim = sorted(split_dir.rglob("*.flac"))[0]
    victim.unlink()
    (split_dir / ".completed").unlink()
    report = generate_corpus(tmp_path, CorpusConfig(train_utterances=5, dev_minutes=0, test_minutes=0,
                                                    long_form=0), workers=1)
    after = _all_files(split_dir)
    assert report.splits[0].num_utterances == 5
    assert all(after[name] == data for name, data in before.items() if name.endswith(".flac"))
    sentences = split_sentences(load_sentences(), seed=0).train
    assert [u.text for u in plan_split("train-clean-100", 0, 3, sentences, 0)] == \
        [u.text for u in plan_split("train-clean-100", 0, 5, sentences, 0)][:3]


def test_dev_and_test_voices_and_sentences_are_never_trained_on():
    pairs = voice_pairs(seed=0)
    assert not set(pairs["test"]) & set(pairs["train"]) and not set(pairs["dev"]) & set(pairs["train"])
    assert not set(pairs["test"]) & set(pairs["dev"])
    speakers = build_speakers(seed=0)
    voices = {split: {(s.voice.name, s.voice.variant) for s in speakers[split]} for split in SPLITS}
    trained = voices["train-clean-100"] | voices["train-clean-360"]
    assert not voices["test-clean"] & trained and not voices["dev-clean"] & trained
    ids = [s.speaker_id for split in SPLITS for s in speakers[split]]
    assert len(ids) == len(set(ids))
    splits = split_sentences(load_sentences(), seed=0)
    train, dev, test = ({s.text for s in part} for part in (splits.train, splits.dev, splits.test))
    assert not train & dev and not train & test and not dev & test
    assert len(test) > 100 and len(train) > 8 * len(test) - 10


def test_text_source_has_5000_words_and_only_librispeech_characters():
    sentences = load_sentences()
    assert len(vocabulary(sentences)) >= 5000
    assert all(TRANSCRIPT.match(s.text) for s in sentences)
    assert all(not re.search(r"[0-9]", s.spoken) for s in sentences)


def test_long_form_length_is_in_range_and_its_transcript_joins_its_segments(corpus):
    recording = corpus / "long-form" / "longform-000"
    duration = sf.info(f"{recording}.flac").duration
    assert 0.2 * 60 <= duration <= 0.4 * 60
    rows = [line.split("\t") for line in Path(f"{recording}.segments.tsv").read_text().splitlines()[1:]]
    assert len(rows) >= 2
    starts, ends = [float(r[0]) for r in rows], [float(r[1]) for r in rows]
    assert all(s < e <= duration for s, e in zip(starts, ends))
    assert all(e < s for e, s in zip(ends, starts[1:]))  # pauses between utterances
    assert Path(f"{recording}.txt").read_text().strip() == " ".join(r[2] for r in rows)
    # held-out text: never part of any training utterance
    trained = "|".join(_transcripts(corpus / "LibriSpeech" / "train-clean-100").values())
    assert all(r[2] not in trained for r in rows)


def test_held_out_sentences_are_in_vocabulary_with_a_fewest_oov_fallback_for_toy_corpora():
    from recipes.synthetic.generate import MIN_HELD_OUT_SENTENCES, in_vocabulary
    from recipes.synthetic.text import Sentence

    def sentence(text):
        return Sentence(text, text.lower(), "test")

    training_words = {"THE", "CAT", "SAT", "ON", "MAT"}
    known = [sentence("THE CAT SAT"), sentence("ON THE MAT")] * MIN_HELD_OUT_SENTENCES
    unknown = [sentence("THE DOG SAT"), sentence("A DOG ATE THE MAT")]
    assert in_vocabulary(unknown + known, training_words) == tuple(known)
    # too few fully known sentences: the ones with the fewest unknown words, in their original order
    assert in_vocabulary(unknown + known[:1], training_words) == (unknown[0], unknown[1], known[0])


def test_a_changed_plan_replaces_stale_audio_instead_of_keeping_it(tmp_path):
    config = CorpusConfig(train_utterances=3, dev_minutes=0, test_minutes=0, long_form=0)
    generate_corpus(tmp_path, config, workers=1)
    split_dir = tmp_path / "LibriSpeech" / "train-clean-100"
    plan = split_dir / ".plan.json"
    hashes = json.loads(plan.read_text())
    path = next(iter(hashes))
    hashes[path] = "0" * 40  # as if this flac had been planned with other words or another voice
    plan.write_text(json.dumps(hashes))
    flac = split_dir / path
    flac.write_bytes(b"stale")
    generate_corpus(tmp_path, config, workers=1)
    assert sf.info(flac).samplerate == 16000  # regenerated, not kept


def test_phrases_split_long_sentences_at_clauses_and_keep_every_word():
    from recipes.synthetic.text import MIN_WORDS, split_into_phrases, to_phrases

    sentences = load_sentences()
    long = [s for s in sentences if len(s.text.split()) > 20 and "," in s.spoken][:50]
    assert long
    split = 0
    for sentence in long:
        phrases = split_into_phrases(sentence, max_words=12)
        split += len(phrases) >= 2  # not all: a long clause stays whole
        assert " ".join(p.text for p in phrases) == sentence.text  # nothing lost, nothing added
        assert all(TRANSCRIPT.match(p.text) and len(p.text.split()) >= MIN_WORDS for p in phrases)
        assert all(p.spoken[-1] in ".!?" and p.spoken[0].isupper() for p in phrases)
    assert split > 0.8 * len(long)
    assert split_into_phrases(long[0], max_words=0) == [long[0]]
    short = [s for s in sentences if len(s.text.split()) <= 12]
    assert to_phrases(tuple(short), 12) == tuple(short)  # short sentences pass through whole
    phrases = to_phrases(sentences, 12)
    assert len(phrases) > 1.3 * len(sentences)
    assert len({p.text for p in phrases}) == len(phrases)


def test_utterance_length_follows_the_configured_spread():
    from recipes.synthetic.text import to_phrases

    phrases = to_phrases(split_sentences(load_sentences(), seed=0).train, 12)
    short = plan_split("train-clean-100", 0, 200, phrases, seed=0, spread=(1.0, 6.0))
    default = plan_split("train-clean-100", 0, 200, phrases, seed=0)
    mean = lambda plan: sum(u.estimated_seconds for u in plan) / len(plan)  # noqa: E731
    assert mean(short) < 0.6 * mean(default)
    # a follower is added only while the estimate stays within the upper end
    assert all(u.estimated_seconds <= 6.0 for u in short if " " in u.text and len(u.spoken.split(". ")) > 1)


def test_train_clean_360_walks_on_from_where_train_clean_100_stopped():
    from recipes.synthetic.generate import _sentence_order
    from recipes.synthetic.text import to_phrases

    phrases = to_phrases(split_sentences(load_sentences(), seed=0).train, 12)
    alone = plan_split("train-clean-100", 0, 300, phrases, seed=0, spread=(1.0, 6.0))
    walked = plan_split("train-clean-100", 0, 300, phrases, seed=0, spread=(1.0, 6.0),
                        walk=("train-clean-100", 0))
    assert [u.text for u in walked] == [u.text for u in alone]  # a part walking alone is unchanged
    after = plan_split("train-clean-360", 0, 300, phrases, seed=0, spread=(1.0, 6.0),
                       walk=("train-clean-100", 300))
    walk = _sentence_order(0, "train-clean-100", 0, len(phrases))
    # each utterance opens with the next sentence of train-clean-100's walk, so none opens with one
    # that train-clean-100 already opened with
    assert all(u.text.startswith(phrases[walk[300 + i]].text) for i, u in enumerate(after))
    assert all(u.text.startswith(phrases[walk[i]].text) for i, u in enumerate(alone))
    own = plan_split("train-clean-360", 0, 300, phrases, seed=0, spread=(1.0, 6.0))
    assert [u.text for u in own] != [u.text for u in after]
    assert {u.speaker.split for u in after} == {"train-clean-360"}
