"""The R lazy-load reader behind the Austen text source: hand-built XDR bytes in R's layout, and the
Debian package itself where it is installed."""
import gzip
import struct
import zlib

import pytest

from recipes.synthetic.rdata import RObject, read_lazyload, unserialize
from recipes.synthetic.text import AUSTEN_DATA, austen_sentences, vocabulary


def _int(value: int) -> bytes:
    return struct.pack(">i", value)


def _char(text: str | None) -> bytes:
    if text is None:
        return _int(9) + _int(-1)
    data = text.encode()
    return _int(0x00040009) + _int(len(data)) + data  # CHARSXP, UTF-8 flag


def _strings(values, names=None) -> bytes:
    """STRSXP, with a `names` attribute pairlist when given (the symbol written out once)."""
    flags = 16 | (1 << 9 if names is not None else 0)
    out = _int(flags) + _int(len(values)) + b"".join(_char(v) for v in values)
    if names is not None:
        out += _int(2 | 1 << 10) + _int(1) + _char("names") + _strings(names) + _int(254)
    return out


def _serialize(body: bytes, version: int = 3) -> bytes:
    header = b"X\n" + _int(version) + _int(0x040201) + _int(0x030500)
    if version == 3:
        header += _int(5) + b"UTF-8"
    return header + body


def test_character_vectors_attributes_and_na_read_back():
    assert unserialize(_serialize(_strings(["It is a truth", None, "universally acknowledged"]))) == [
        "It is a truth", None, "universally acknowledged"]
    named = unserialize(_serialize(_strings(["a", "b"], names=["first", "second"]), version=2))
    assert isinstance(named, RObject)
    assert named.value == ["a", "b"] and named.attributes == {"names": ["first", "second"]}
    assert unserialize(_serialize(_int(13) + _int(3) + struct.pack(">3i", 1, -2, 3))) == [1, -2, 3]


def test_lazyload_database_reads_every_object_by_name(tmp_path):
    objects = {"emma": ["EMMA", "", "Emma Woodhouse, handsome, clever, and rich,"], "persuasion": ["Persuasion"]}
    blocks, offsets = b"", []
    for lines in objects.values():
        payload = _serialize(_strings(lines))
        block = _int(len(payload)) + zlib.compress(payload)  # R's default block: size, then zlib
        offsets.append((len(blocks), len(block)))
        blocks += block
    # index: list(variables = list(emma = c(offset, length), ...), references = list(), compressed = TRUE)
    variables = _int(19 | 1 << 9) + _int(len(objects))
    for offset, length in offsets:
        variables += _int(13) + _int(2) + struct.pack(">2i", offset, length)
    variables += _int(2 | 1 << 10) + _int(1) + _char("names") + _strings(list(objects)) + _int(254)
    index = _int(19 | 1 << 9) + _int(3) + variables + _int(19) + _int(0) + _int(10) + _int(1) + _int(1)
    index += _int(2 | 1 << 10) + _int(255 | 1 << 8) + _strings(["variables", "references", "compressed"]) + _int(254)
    (tmp_path / "Rdata.rdx").write_bytes(gzip.compress(_serialize(index)))
    (tmp_path / "Rdata.rdb").write_bytes(blocks)
    assert read_lazyload(tmp_path / "Rdata") == objects


def test_unsupported_types_and_foreign_bytes_fail_clearly():
    with pytest.raises(ValueError, match="not XDR"):
        unserialize(b"RDX2\n")
    with pytest.raises(ValueError, match="R type 4 is not supported"):
        unserialize(_serialize(_int(4)))  # an environment
    with pytest.raises(ValueError, match="truncated"):
        unserialize(_serialize(_int(16) + _int(2) + _char("only one")))


@pytest.mark.skipif(not AUSTEN_DATA.with_suffix(".rdb").is_file(), reason="apt-get install r-cran-janeaustenr")
def test_austen_novels_give_real_sentences_with_titles_spelled_as_librispeech_does():
    sentences = austen_sentences()
    assert len(sentences) > 20_000 and len(vocabulary(sentences)) > 10_000
    words = [w for s in sentences for w in s.text.split()]
    assert "MISTER" in words and "MISSUS" in words and "MR" not in words and "MRS" not in words
    assert not any(s.text.startswith("CHAPTER") for s in sentences)  # headings
    assert any(s.text == "IT IS A TRUTH UNIVERSALLY ACKNOWLEDGED THAT A SINGLE MAN IN POSSESSION OF A GOOD "
               "FORTUNE MUST BE IN WANT OF A WIFE" for s in sentences)
    assert all("_" not in s.spoken and "--" not in s.spoken for s in sentences)
