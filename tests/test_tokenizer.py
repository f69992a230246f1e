"""SentencePiece tokenizer: blank at id 0, lossless round trips, and a model that travels as bytes."""
from __future__ import annotations

import pytest

from asr.tokenizer import Tokenizer, train_tokenizer

SENTENCES = [
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "SHE SELLS SEA SHELLS BY THE SEA SHORE",
    "A JOURNEY OF A THOUSAND MILES BEGINS WITH A SINGLE STEP",
    "SPEECH RECOGNITION TURNS SOUND INTO TEXT",
    "THE RAIN IN SPAIN STAYS MAINLY IN THE PLAIN",
    "HOW MUCH WOOD WOULD A WOODCHUCK CHUCK",
    "PETER PIPER PICKED A PECK OF PICKLED PEPPERS",
    "ALL THAT GLITTERS IS NOT GOLD",
    "TO BE OR NOT TO BE THAT IS THE QUESTION",
    "IT WAS THE BEST OF TIMES IT WAS THE WORST OF TIMES",
    "CALL ME ISHMAEL",
    "THE OLD MAN AND THE SEA",
    "WHERE THERE IS A WILL THERE IS A WAY",
    "KNOWLEDGE IS POWER",
    "THE EARLY BIRD CATCHES THE WORM",
    "ACTIONS SPEAK LOUDER THAN WORDS",
    "BETTER LATE THAN NEVER",
    "EVERY CLOUD HAS A SILVER LINING",
    "TIME FLIES LIKE AN ARROW",
    "FRUIT FLIES LIKE A BANANA",
    "THE PEN IS MIGHTIER THAN THE SWORD",
    "WHEN IN ROME DO AS THE ROMANS DO",
    "A PICTURE IS WORTH A THOUSAND WORDS",
    "THE TRANSDUCER EMITS A BLANK OR A TOKEN AT EVERY FRAME",
    "STREAMING MODELS SEE ONLY THE PAST AND A LITTLE OF THE FUTURE",
    "FEATURES ARE COMPUTED EVERY TEN MILLISECONDS",
    "THE ENCODER SUBSAMPLES THE FRAMES BY FOUR",
    "JACK AND JILL WENT UP THE HILL",
    "QUIZZICAL ZEBRAS VEX THE JUMPY WIZARD",
    "HELLO WORLD",
]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return train_tokenizer(SENTENCES, vocab_size=120)


def test_blank_is_id_0_and_unk_is_id_1(tokenizer):
    assert tokenizer.blank_id == 0
    assert tokenizer.id_to_piece(0) == "<blk>"
    assert tokenizer.id_to_piece(1) == "<unk>"


def test_vocab_size_is_at_most_requested_and_covers_all_characters(tokenizer):
    num_characters = len(set("".join(SENTENCES).replace(" ", "")))
    assert num_characters + 2 <= tokenizer.vocab_size <= 120


def test_encode_decode_round_trips_training_and_unseen_text(tokenizer):
    for text in SENTENCES[:5] + ["A BRAND NEW SENTENCE NEVER SEEN", "ZEBRA QUESTION"]:
        ids = tokenizer.encode(text)
        assert ids and all(2 <= i < tokenizer.vocab_size for i in ids)  # no blank, no unk
        assert tokenizer.decode(ids) == text


def test_text_is_not_case_normalized(tokenizer):
    # Lower-case letters were never seen: the tokenizer must not silently upper-case them.
    assert 1 in tokenizer.encode("hello")


def test_decode_ignores_blanks(tokenizer):
    ids = tokenizer.encode("HELLO WORLD")
    with_blanks = [0, 0] + [x for i in ids for x in (i, 0)]
    assert tokenizer.decode(with_blanks) == "HELLO WORLD"


def test_bytes_round_trip_gives_identical_encodings(tokenizer):
    rebuilt = Tokenizer.from_bytes(tokenizer.to_bytes())
    assert rebuilt.vocab_size == tokenizer.vocab_size
    for text in SENTENCES:
        assert rebuilt.encode(text) == tokenizer.encode(text)


def test_model_prefix_writes_a_loadable_model_file(tmp_path):
    trained = train_tokenizer(iter(SENTENCES), vocab_size=60, model_type="unigram", model_prefix=tmp_path / "bpe")
    loaded = Tokenizer.from_file(tmp_path / "bpe.model")
    assert loaded.to_bytes() == trained.to_bytes()
    assert loaded.id_to_piece(0) == "<blk>" and loaded.vocab_size <= 60


def test_vocab_too_small_for_the_alphabet_is_a_value_error():
    with pytest.raises(ValueError, match="Vocabulary size is smaller than required_chars"):
        train_tokenizer(SENTENCES, vocab_size=10)


def test_model_without_blank_at_0_is_rejected():
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES), model_writer=model, vocab_size=60, hard_vocab_limit=False, minloglevel=2
    )
    with pytest.raises(ValueError, match="expected '<blk>'"):
        Tokenizer.from_bytes(model.getvalue())
