"""A tiny prepared data directory (DataLayout) built directly with lhotse, for trainer tests."""
from __future__ import annotations

from pathlib import Path

import soundfile as sf
from lhotse import CutSet, LilcomChunkyWriter, Recording, RecordingSet, SupervisionSegment, SupervisionSet

from asr.data.layout import DataLayout
from asr.demo import DIGITS, digit_strings
from asr.features import KaldiNativeFbank
from asr.tokenizer import train_tokenizer
from recipes.synthetic.espeak import Voice, speak


def make_prepared_dir(root: Path, parts: dict[str, int], vocab_size: int = 40, seed: int = 7) -> DataLayout:
    """parts: name -> number of digit-string utterances. Writes wavs, cuts with lilcom fbank, BPE."""
    layout = DataLayout(root, vocab_size)
    layout.fbank_dir.mkdir(parents=True, exist_ok=True)
    all_texts = []
    for index, (part, count) in enumerate(parts.items()):
        texts = digit_strings(count, seed=seed + index)
        all_texts += texts
        recordings, supervisions = [], []
        for i, text in enumerate(texts):
            utt = f"{part}-{i:03d}"
            wav = root / "audio" / f"{utt}.wav"
            wav.parent.mkdir(parents=True, exist_ok=True)
            sf.write(wav, speak(text, Voice("en-us", "m3", speed=170)), 16000)
            recording = Recording.from_file(wav, recording_id=utt)
            recordings.append(recording)
            supervisions.append(SupervisionSegment(utt, utt, 0.0, recording.duration, text=text, speaker="s1"))
        cuts = CutSet.from_manifests(RecordingSet.from_recordings(recordings), SupervisionSet.from_segments(supervisions))
        (root / "feats").mkdir(exist_ok=True)
        cuts = cuts.compute_and_store_features(KaldiNativeFbank(), root / "feats" / part, storage_type=LilcomChunkyWriter)
        cuts.to_file(layout.cuts(part))
    train_tokenizer(all_texts + list(DIGITS), vocab_size=vocab_size, model_prefix=layout.bpe_model.with_suffix(""))
    return layout
