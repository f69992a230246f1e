"""Corpus checks before lhotse sees a LibriSpeech part: every flac has a transcript line and
vice versa, audio opens and is long enough, transcripts are non-empty upper-case ASCII.
What fails is named (file and line) so prepare can skip and count it, or stop."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import soundfile
from tqdm.auto import tqdm

from asr.config import FeatureConfig

Problem = tuple[str, str]  # (one of SKIP_REASONS, what exactly is wrong)

# Why an utterance was left out of the manifests; skipped_<part>.json counts each of them.
SKIP_REASONS = (
    "missing_transcript",  # a .flac that no transcript line names
    "missing_audio",  # a transcript line whose .flac does not exist
    "unreadable_audio",  # soundfile cannot open the .flac
    "audio_too_short",  # shorter than one feature frame: extraction would fail
    "empty_transcript",  # an utterance id with no words
    "non_ascii_transcript",  # LibriSpeech text is upper-case ASCII; anything else is corrupt
    "duplicate_utterance",  # a second line with an id already seen
    "rejected_by_lhotse",  # passed our checks but prepare_librispeech did not keep it
)


@dataclass(frozen=True)
class Utterance:
    utterance_id: str
    audio_path: Path
    text: str


@dataclass(frozen=True)
class CorpusIssue:
    """One utterance left out of the manifests, and where the problem is."""

    reason: str  # one of SKIP_REASONS
    path: Path  # the transcript or audio file at fault
    line: Optional[int]  # 1-based line in the transcript, when the problem is a line
    detail: str

    def describe(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        return f"{where}: {self.detail} [{self.reason}]"


@dataclass(frozen=True)
class PartScan:
    """What :func:`scan_part` found in one part directory."""

    part: str
    utterances: tuple[Utterance, ...]  # the good ones
    issues: tuple[CorpusIssue, ...]
    num_blank_lines: int  # harmless for us, but lhotse's parser crashes on them

    @property
    def is_clean(self) -> bool:
        """True when lhotse can read the part directory as it is."""
        return not self.issues and self.num_blank_lines == 0


def scan_part(part_dir: Path, num_jobs: int = 1) -> PartScan:
    """Pair every transcript line with its flac and check both, without stopping at the first problem."""
    if not part_dir.is_dir():
        raise ValueError(f"no such LibriSpeech part directory: {part_dir}")
    issues: list[CorpusIssue] = []
    candidates: list[tuple[Utterance, Path, int]] = []
    claimed_audio: set[Path] = set()
    num_blank_lines = 0
    for trans_path in tqdm(sorted(part_dir.rglob("*.trans.txt")), desc=f"Checking {part_dir.name}", leave=False):
        # Undecodable bytes become U+FFFD, which the ASCII check then reports with its line.
        lines = trans_path.read_bytes().decode("utf-8", errors="replace").splitlines()
        for line_number, line in enumerate(lines, start=1):
            fields = line.strip().split(maxsplit=1)
            if not fields:
                num_blank_lines += 1
                continue
            utterance_id, text = fields[0], (fields[1].strip() if len(fields) > 1 else "")
            # lhotse's rule: 103-1240-0000 lives at <part>/103/1240/103-1240-0000.flac
            audio_path = part_dir / Path(utterance_id.replace("-", "/")).parent / f"{utterance_id}.flac"
            problem = _line_problem(utterance_id, text, audio_path, claimed_audio)
            claimed_audio.add(audio_path)
            if problem is not None:
                issues.append(CorpusIssue(problem[0], trans_path, line_number, problem[1]))
            else:
                candidates.append((Utterance(utterance_id, audio_path, text), trans_path, line_number))
    for audio_path in sorted(part_dir.rglob("*.flac")):
        if audio_path not in claimed_audio:
            issues.append(CorpusIssue("missing_transcript", audio_path, None, "no transcript line names this file"))

    with ThreadPoolExecutor(max(1, num_jobs)) as executor:
        audio_problems = list(executor.map(_audio_problem, (utterance.audio_path for utterance, _, _ in candidates)))
    utterances = []
    for (utterance, trans_path, line_number), problem in zip(candidates, audio_problems):
        if problem is None:
            utterances.append(utterance)
        else:
            detail = f"{problem[1]} (line {line_number} of {trans_path.name})"
            issues.append(CorpusIssue(problem[0], utterance.audio_path, None, detail))
    return PartScan(part_dir.name, tuple(utterances), tuple(issues), num_blank_lines)


def _line_problem(utterance_id: str, text: str, audio_path: Path, claimed_audio: set[Path]) -> Optional[Problem]:
    """(reason, detail) for a transcript line that cannot become an utterance, else None."""
    if audio_path in claimed_audio:
        return "duplicate_utterance", f"{utterance_id} appears on an earlier line"
    if not audio_path.is_file():
        return "missing_audio", f"{utterance_id}: no audio file {audio_path}"
    if not text:
        return "empty_transcript", f"{utterance_id} has an empty transcript"
    if not text.isascii():
        return "non_ascii_transcript", f"{utterance_id} has non-ASCII text {text!r}"
    return None


def _audio_problem(audio_path: Path) -> Optional[Problem]:
    """(reason, detail) for an audio file that cannot become features, else None. Reads the header only."""
    try:
        info = soundfile.info(str(audio_path))
    except (RuntimeError, OSError) as error:  # LibsndfileError is a RuntimeError
        return "unreadable_audio", f"cannot read audio: {error}"
    min_seconds = FeatureConfig().frame_length_ms / 1000
    if info.frames < info.samplerate * min_seconds:
        return "audio_too_short", f"{info.frames} samples is shorter than one {min_seconds * 1000:g} ms frame"
    return None
