"""Read character vectors out of an R package's lazy-load data (`data/Rdata.rdx` + `Rdata.rdb`),
without R: enough of R's XDR serialisation format for the text packages we take sentences from.

A lazy-load database is an index (`.rdx`: an `.rds` file, a compressed serialised list whose `variables`
maps each object's name to an (offset, length) block of the `.rdb`) and the blocks themselves
(4-byte big-endian size, then a compression tag `Z`/`2`/`X`/`0` or none for plain zlib, then the
serialised object). Only the value types such data holds are read: NULL, symbols, pairlists (for
attributes), character, logical, integer, double and generic vectors, and references to symbols.
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

_NIL, _SYM, _LIST, _CHAR, _LGL, _INT, _REAL, _STR, _VEC = 0, 1, 2, 9, 10, 13, 14, 16, 19
_REF, _NILVALUE, _GLOBALENV, _EMPTYENV = 255, 254, 253, 242


@dataclass
class RObject:
    """A vector with attributes (e.g. `names`)."""

    value: list
    attributes: dict[str, object] = field(default_factory=dict)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos, self.symbols = data, 0, []

    def int(self) -> int:
        if self.pos + 4 > len(self.data):
            raise ValueError("truncated R serialisation")
        (value,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return value

    def header(self) -> None:
        if self.data[:2] != b"X\n":
            raise ValueError(f"not XDR-serialised R data (starts {self.data[:2]!r})")
        self.pos = 2
        version = self.int()
        self.int(), self.int()  # R version that wrote it, oldest R that reads it
        if version == 3:
            encoding_length = self.int()  # then the native encoding's name
            self.pos += encoding_length
        elif version != 2:
            raise ValueError(f"unsupported R serialisation version {version}")

    def object(self):
        flags = self.int()
        kind, has_attributes, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind in (_NILVALUE, _EMPTYENV, _NIL):
            return None
        if kind == _GLOBALENV:
            return "<globalenv>"
        if kind == _REF:
            return self.symbols[(flags >> 8) - 1]
        if kind == _SYM:
            name = self.object()
            self.symbols.append(name)
            return name
        if kind == _CHAR:
            length = self.int()
            if length == -1:
                return None  # NA_character_
            text = self.data[self.pos:self.pos + length].decode("utf-8", errors="replace")
            self.pos += length
            return text
        if kind == _LIST:  # pairlist: attributes come before the tag, the value, then the rest
            if has_attributes:
                self.object()
            tag = self.object() if has_tag else None
            value = self.object()
            rest = self.object() or []
            return [(tag, value), *rest]
        if kind in (_STR, _VEC, _LGL, _INT, _REAL):
            length = self.int()
            if kind in (_STR, _VEC):
                value = [self.object() for _ in range(length)]
            else:
                code, size = ("d", 8) if kind == _REAL else ("i", 4)
                value = list(struct.unpack_from(f">{length}{code}", self.data, self.pos))
                self.pos += size * length
            if not has_attributes:
                return value
            return RObject(value, {str(tag): v for tag, v in self.object() or []})
        raise ValueError(f"R type {kind} is not supported by this reader (at byte {self.pos})")


def unserialize(data: bytes):
    """One XDR-serialised R object as Python values: lists, str, int, float, None, RObject."""
    reader = _Reader(data)
    reader.header()
    return reader.object()


def _block(raw: bytes) -> bytes:
    tag, body = raw[4:5], raw[5:]
    if tag == b"Z":
        return zlib.decompress(body)
    if tag == b"2":
        return bz2.decompress(body)
    if tag == b"X":
        return lzma.decompress(body)
    if tag == b"0":
        return body
    return zlib.decompress(raw[4:])  # R's default: plain zlib after the size


def read_rds(data: bytes):
    """An `.rds` file's bytes (gzip, bzip2, xz or uncompressed) as Python values."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    elif data[:3] == b"BZh":
        data = bz2.decompress(data)
    elif data[:6] == b"\xfd7zXZ\x00":
        data = lzma.decompress(data)
    return unserialize(data)


def read_lazyload(path: Path | str) -> dict[str, object]:
    """Every object of a lazy-load database, by name. `path` without suffix (…/data/Rdata)."""
    path = Path(path)
    index = read_rds(path.with_suffix(".rdx").read_bytes())
    if not isinstance(index, RObject) or "variables" not in index.attributes.get("names", []):
        raise ValueError(f"{path}.rdx is not a lazy-load index")
    variables = index.value[index.attributes["names"].index("variables")]
    data = path.with_suffix(".rdb").read_bytes()
    objects = {}
    for name, (offset, length) in zip(variables.attributes["names"], variables.value):
        objects[name] = unserialize(_block(data[offset:offset + length]))
    return objects
