"""Real English sentences for the synthetic corpus, normalised to LibriSpeech-style transcripts.

Sources (Debian packages, read from their data files):
  austen `r-cran-janeaustenr`: Jane Austen's six novels (1811-1818), public domain (the package's
         code and packaging: MIT), 418k words in 25k sentences. The default: LibriSpeech reads
         Project Gutenberg novels, Austen's among them, and a novel repeats its everyday words
         often enough that an 8-hour corpus meets ~93% of its test words 5 times or more.
  devil  `dict-devil`: Ambrose Bierce, "The Devil's Dictionary" (1911), public domain.
  gcide  `dict-gcide`: the block quotations (Dryden, Milton, Macaulay, Addison, the Bible, ...)
         of the GNU Collaborative International Dictionary of English (GPL-2+).

Every sentence keeps two forms: `spoken`, the original wording with its punctuation (espeak-ng
pauses at commas), and `text`, the transcript in LibriSpeech style (A-Z, apostrophe, single spaces).
Sentences that espeak-ng would not read as written (digits, acronyms, Roman numerals,
abbreviations, initials) are dropped rather than rewritten.
"""
from __future__ import annotations

import gzip
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DICTD_DIR = Path("/usr/share/dictd")
AUSTEN_DATA = Path("/usr/lib/R/site-library/janeaustenr/data/Rdata")  # R lazy-load database (.rdx/.rdb)
# source -> (data file, Debian package)
SOURCES = {
    "austen": (AUSTEN_DATA.with_suffix(".rdb"), "r-cran-janeaustenr"),
    "devil": (DICTD_DIR / "devil.dict.dz", "dict-devil"),
    "gcide": (DICTD_DIR / "gcide.dict.dz", "dict-gcide"),
}
MIN_WORDS, MAX_WORDS = 4, 40

# espeak-ng expands these (Mr -> mister) or they are not words at all; a sentence holding one is dropped.
_ABBREVIATION = re.compile(
    r"\b(Mr|Mrs|Dr|St|Mt|Jr|Sr|Messrs|Esq|Capt|Col|Gen|Gov|Rev|Prof|Hon|No|Co|Ltd|etc|viz|vs|ib|ibid|cf|"
    r"lib|vol|chap|ch|pp|ed|sc|adj|i\.e|e\.g|[B-HJ-NP-Z])\.",
)
_ENDS_WITH_ABBREVIATION = re.compile(_ABBREVIATION.pattern + r"[\"')]*$")
_ALL_CAPS_WORD = re.compile(r"\b[A-Z]{2,}\b")  # acronyms and Roman numerals: espeak spells or counts them
_SLUR = re.compile(r"\bniggers?\b", re.IGNORECASE)  # 1911 text; we do not synthesise slurs
_ALLOWED_CHARS = re.compile(r"^[A-Za-z ,.;:!?'\"()&-]+$")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])[\"')]*\s+(?=[\"'(]*[A-Z])")
# A Devil's entry opens with its headword and part of speech: "ABSOLUTE, adj.  Independent, ..."
_HEADWORD = re.compile(r"^[A-Z][A-Z'\- ]*(?:,\s*[a-z][a-z. &]*\.)?\.?\s+")
# GCIDE authors who wrote Middle or Early Modern English spelling that espeak-ng mangles.
_ARCHAIC_AUTHORS = (
    "Chaucer", "Cheucer", "Spenser", "Gower", "Wyclif", "Piers", "Rom. of R", "Mandeville", "Lydgate",
    "Tyndale", "Skelton", "Holinshed", "Udall", "Sir T.", "Hakluyt", "Robynson", "Chapman", "Holland",
    "Latimer", "Old Play", "Sylvester", "Foxe", "Drayton", "Fairfax", "Shak", "Beau. & Fl", "Golding",
)


@dataclass(frozen=True)
class Sentence:
    text: str  # transcript: upper case A-Z, apostrophe, single spaces
    spoken: str  # what espeak-ng reads: original wording and punctuation
    source: str  # key of SOURCES


@dataclass(frozen=True)
class SentenceSplits:
    train: tuple[Sentence, ...]
    dev: tuple[Sentence, ...]
    test: tuple[Sentence, ...]


def normalize_transcript(text: str) -> str:
    """LibriSpeech style: upper case, "&" -> AND, hyphens split words, other punctuation dropped;
    an apostrophe survives only between letters ("DEVIL'S", not "'TIS")."""
    text = text.upper().replace("&", " AND ").replace("-", " ")
    text = re.sub(r"[^A-Z' ]", " ", text)
    text = re.sub(r"(?<![A-Z])'|'(?![A-Z])", " ", text)
    return " ".join(text.split())


def _source_file(source: str) -> Path:
    path, package = SOURCES[source]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: install the text source with `apt-get install {package}`")
    return path


def _read_dictd(source: str) -> str:
    with gzip.open(_source_file(source), "rt", encoding="utf-8", errors="replace") as f:
        return f.read()


def _clean_spoken(raw: str) -> str:
    """Drop markup that is not speech: [etymologies], {cross-reference braces}, _italics_, "--"."""
    text = re.sub(r"\[[^\]]*\]", " ", raw).replace("&c.", "et cetera.")  # espeak-ng reads "&c." as "and c dot"
    text = text.replace("{", "").replace("}", "").replace("_", "").replace("--", ", ")
    text = re.sub(r"\s+,", ",", " ".join(text.split()))
    return re.sub(r",+", ",", text).strip(" ,")


def _accept(spoken: str, source: str) -> Sentence | None:
    """The sentence if espeak-ng reads it as its transcript is written, else None."""
    if not spoken or not spoken.lstrip("\"'(")[:1].isupper() or not re.search(r"[.!?][\"')]*$", spoken):
        return None
    if not _ALLOWED_CHARS.match(spoken) or _ABBREVIATION.search(spoken) or _ALL_CAPS_WORD.search(spoken):
        return None
    if ". ." in spoken or "''" in spoken or _SLUR.search(spoken):
        return None
    text = normalize_transcript(spoken)
    if not MIN_WORDS <= len(text.split()) <= MAX_WORDS:
        return None
    return Sentence(text=text, spoken=spoken, source=source)


def split_into_sentences(paragraph: str, source: str) -> list[Sentence]:
    """Sentences of one prose paragraph that pass `_accept`."""
    pieces: list[str] = []
    for piece in _SENTENCE_BREAK.split(_clean_spoken(paragraph)):
        # "St. Andrew" is split after "St."; rejoin it so the whole sentence is judged (and dropped).
        if pieces and _ENDS_WITH_ABBREVIATION.search(pieces[-1]):
            pieces[-1] += " " + piece
        else:
            pieces.append(piece)
    accepted = (_accept(piece.strip(), source) for piece in pieces)
    return [sentence for sentence in accepted if sentence is not None]


def devil_sentences() -> list[Sentence]:
    """Prose of every entry: headword and part of speech removed; verse and attributions (paragraphs
    whose every line is indented) dropped."""
    data = _read_dictd("devil")
    start = data.find("\nABASEMENT, n.")  # skip the dictd header and the preface
    sentences = []
    for paragraph in re.split(r"\n\s*\n", data[start:]):
        lines = paragraph.strip("\n").split("\n")
        if all(line.startswith((" ", "\t")) for line in lines):
            continue
        sentences.extend(split_into_sentences(_HEADWORD.sub("", " ".join(lines).strip()), "devil"))
    return sentences


def gcide_sentences() -> list[Sentence]:
    """Block quotations ("            The people contested not. --Locke.") by post-Elizabethan authors."""
    data = _read_dictd("gcide")
    sentences = []
    for quotation, author in re.findall(r"\n\n((?: {9,}\S.*\n)+?)\s*--([A-Z][^\n\[]*)\n", data):
        if author.strip().startswith(_ARCHAIC_AUTHORS):
            continue
        sentence = _accept(_clean_spoken(" ".join(quotation.split())), "gcide")
        if sentence is not None:
            sentences.append(sentence)
    return sentences


# LibriSpeech spells out the titles espeak-ng expands ("MISTER DARCY"); the rest of _ABBREVIATION
# still drops a sentence.
_TITLES = {"Mr": "Mister", "Mrs": "Missus", "Dr": "Doctor"}
_TITLE = re.compile(r"\b(" + "|".join(_TITLES) + r")\b\.?")  # "Mr." and Persuasion's "Mr"


def austen_sentences() -> list[Sentence]:
    """Narration and dialogue of the six novels, paragraph by paragraph (the package stores each
    novel as its printed lines). Headings (all upper case) and "CHAPTER" lines are dropped by
    `_accept` with every other all-capitals word."""
    from recipes.synthetic.rdata import read_lazyload

    _source_file("austen")
    sentences = []
    for name, lines in sorted(read_lazyload(AUSTEN_DATA).items()):
        paragraph: list[str] = []
        for line in [*lines, ""]:
            if line and line.strip():
                paragraph.append(line.strip())
                continue
            if paragraph:
                text = _TITLE.sub(lambda m: _TITLES[m.group(1)], " ".join(paragraph))
                sentences.extend(split_into_sentences(text, "austen"))
            paragraph = []
    return sentences


@lru_cache(maxsize=4)
def load_sentences(sources: tuple[str, ...] = ("austen",)) -> tuple[Sentence, ...]:
    """Unique sentences (by transcript) of the given sources, in a fixed order (sorted by transcript)."""
    readers = {"austen": austen_sentences, "devil": devil_sentences, "gcide": gcide_sentences}
    unknown = set(sources) - set(readers)
    if unknown:
        raise ValueError(f"unknown text sources {sorted(unknown)}; choose from {sorted(readers)}")
    unique: dict[str, Sentence] = {}
    for source in sources:
        for sentence in readers[source]():
            unique.setdefault(sentence.text, sentence)
    return tuple(unique[text] for text in sorted(unique))


_CLAUSE_BREAK = re.compile(r"(?:(?<=[,;:])|(?<=[,;:][\"')]))\s+")


def split_into_phrases(sentence: Sentence, max_words: int) -> list[Sentence]:
    """`sentence` cut at clause punctuation (, ; :) into phrases of at most `max_words` words.

    Clauses are packed greedily in order; a clause longer than `max_words` stays whole, and a
    piece shorter than MIN_WORDS joins its shorter neighbour. Every phrase is spoken as a
    sentence of its own (its clause punctuation replaced by a full stop), so its audio starts and
    ends in silence. Short utterances give a small corpus many more alignment anchors.
    """
    if max_words <= 0 or len(sentence.text.split()) <= max_words:
        return [sentence]
    pieces: list[list[str]] = []
    for clause in _CLAUSE_BREAK.split(sentence.spoken):
        words = len(normalize_transcript(clause).split())
        if pieces and len(normalize_transcript(" ".join(pieces[-1])).split()) + words <= max_words:
            pieces[-1].append(clause)
        else:
            pieces.append([clause])
    size = lambda piece: len(normalize_transcript(" ".join(piece)).split())  # noqa: E731
    i = 0
    while len(pieces) > 1 and i < len(pieces):  # a piece too short to be an utterance joins a neighbour
        if size(pieces[i]) >= MIN_WORDS:
            i += 1
        elif i > 0 and (i == len(pieces) - 1 or size(pieces[i - 1]) <= size(pieces[i + 1])):
            pieces[i - 1].extend(pieces.pop(i))
        else:
            short = pieces.pop(i)
            pieces[i][:0] = short  # the next piece now sits at i
    phrases = []
    for piece in pieces:
        spoken = " ".join(piece).replace('"', "").replace("(", "").replace(")", "")  # quotes may span phrases
        spoken = spoken.strip().rstrip(",;:").strip().lstrip("'")  # Austen quotes within quotes with '...'
        if not re.search(r"[.!?]$", spoken):
            spoken += "."
        text = normalize_transcript(spoken)
        if text:
            phrases.append(Sentence(text=text, spoken=spoken[:1].upper() + spoken[1:], source=sentence.source))
    return phrases


def to_phrases(sentences: tuple[Sentence, ...], max_words: int) -> tuple[Sentence, ...]:
    """Every sentence's phrases (see `split_into_phrases`), duplicates dropped, order kept."""
    unique: dict[str, Sentence] = {}
    for sentence in sentences:
        for phrase in split_into_phrases(sentence, max_words):
            unique.setdefault(phrase.text, phrase)
    return tuple(unique.values())


def vocabulary(sentences: tuple[Sentence, ...] | list[Sentence]) -> set[str]:
    return {word for sentence in sentences for word in sentence.text.split()}


def split_sentences(sentences: tuple[Sentence, ...], seed: int, dev_fraction: float = 0.1,
                    test_fraction: float = 0.1) -> SentenceSplits:
    """Disjoint train/dev/test sentence sets by a seeded shuffle, so test text is never trained on."""
    order = list(sentences)
    random.Random(f"sentences-{seed}").shuffle(order)
    num_dev, num_test = round(len(order) * dev_fraction), round(len(order) * test_fraction)
    return SentenceSplits(
        train=tuple(order[num_dev + num_test:]),
        dev=tuple(order[:num_dev]),
        test=tuple(order[num_dev:num_dev + num_test]),
    )
