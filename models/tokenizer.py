"""A small byte-level BPE tokenizer, pure Python.

Ids 0..255 are the raw bytes, id 256 + i is the i-th learned merge. Text is
first split into chunks (a word with its leading space, a run of digits, a run
of other symbols, whitespace) and merges never cross a chunk boundary, as in
GPT-2. Because every byte has its own id, `decode(encode(s)) == s` for any
string that UTF-8 can encode, whatever bytes training saw.

Training is deterministic: at each step the most frequent adjacent pair wins,
ties broken by the smaller pair of ids.
"""
from __future__ import annotations

import codecs
import json
import re
from collections import Counter
from pathlib import Path
from typing import Iterable

from models.errors import TokenizerError

FORMAT = "shardproof-byte-bpe"
FORMAT_VERSION = 1

# Chunking pattern (ASCII classes; any other character falls in the "other symbols" class).
DEFAULT_PATTERN = r"'(?:s|t|re|ve|m|ll|d)| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+"


def _merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """`ids` with every non-overlapping occurrence of `pair` (left to right) replaced by `new_id`."""
    out: list[int] = []
    i, n = 0, len(ids)
    a, b = pair
    while i < n:
        if i + 1 < n and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class ByteBPETokenizer:
    """Byte-level BPE: `encode(str) -> list[int]`, `decode(list[int]) -> str`."""

    def __init__(self, merges: list[tuple[int, int]], pattern: str = DEFAULT_PATTERN) -> None:
        try:
            self._split = re.compile(pattern)
        except re.error as e:
            raise TokenizerError(f"bad chunking pattern: {e}") from None
        self.pattern = pattern
        self.merges: list[tuple[int, int]] = []
        self._ranks: dict[tuple[int, int], int] = {}
        self._bytes: list[bytes] = [bytes([i]) for i in range(256)]
        for i, pair in enumerate(merges):
            if (
                not isinstance(pair, (list, tuple))
                or len(pair) != 2
                or not all(isinstance(t, int) and not isinstance(t, bool) for t in pair)
            ):
                raise TokenizerError(f"merge {i} is not a pair of ints: {pair!r}")
            a, b = int(pair[0]), int(pair[1])
            new_id = 256 + i
            if not (0 <= a < new_id and 0 <= b < new_id):
                raise TokenizerError(f"merge {i} ({a}, {b}) refers to an id not yet defined")
            if (a, b) in self._ranks:
                raise TokenizerError(f"merge {i} ({a}, {b}) is a duplicate")
            self.merges.append((a, b))
            self._ranks[(a, b)] = i
            self._bytes.append(self._bytes[a] + self._bytes[b])
        self._cache: dict[str, tuple[int, ...]] = {}

    @property
    def vocab_size(self) -> int:
        return 256 + len(self.merges)

    # ---- training ---------------------------------------------------------------------------
    @classmethod
    def train(cls, text: str, vocab_size: int, pattern: str = DEFAULT_PATTERN) -> "ByteBPETokenizer":
        """Learn `vocab_size - 256` merges from `text` (fewer if no pair repeats)."""
        if not isinstance(vocab_size, int) or vocab_size < 256:
            raise TokenizerError(f"vocab_size must be an int >= 256, got {vocab_size!r}")
        splitter = re.compile(pattern)
        chunk_counts = Counter(splitter.findall(text))
        words: list[list[int]] = []
        counts: list[int] = []
        for chunk, c in sorted(chunk_counts.items()):
            words.append(list(chunk.encode("utf-8")))
            counts.append(c)
        merges: list[tuple[int, int]] = []
        for step in range(vocab_size - 256):
            pairs: Counter[tuple[int, int]] = Counter()
            for w, c in zip(words, counts):
                for pair in zip(w, w[1:]):
                    pairs[pair] += c
            if not pairs:
                break
            best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
            if best[1] < 2:
                break
            pair, new_id = best[0], 256 + step
            merges.append(pair)
            a, b = pair
            for j, w in enumerate(words):
                if len(w) > 1 and a in w:
                    words[j] = _merge(w, pair, new_id)
        return cls(merges, pattern)

    # ---- encoding ---------------------------------------------------------------------------
    def _encode_chunk(self, chunk: str) -> tuple[int, ...]:
        cached = self._cache.get(chunk)
        if cached is not None:
            return cached
        ids = list(chunk.encode("utf-8"))
        while len(ids) >= 2:
            ranked = [(self._ranks.get(p, -1), p) for p in zip(ids, ids[1:])]
            ranked = [rp for rp in ranked if rp[0] >= 0]
            if not ranked:
                break
            rank, pair = min(ranked)
            ids = _merge(ids, pair, 256 + rank)
        out = tuple(ids)
        if len(self._cache) < 100_000:
            self._cache[chunk] = out
        return out

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`."""
        if not isinstance(text, str):
            raise TokenizerError(f"encode expects str, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise TokenizerError(f"text is not encodable as UTF-8: {e}") from None
        ids: list[int] = []
        for chunk in self._split.findall(text):
            ids.extend(self._encode_chunk(chunk))
        return ids

    # ---- decoding ---------------------------------------------------------------------------
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The raw bytes that `ids` stand for."""
        out = bytearray()
        n = self.vocab_size
        for t in ids:
            t = int(t)
            if not 0 <= t < n:
                raise TokenizerError(f"token id {t} outside the vocabulary [0, {n})")
            out += self._bytes[t]
        return bytes(out)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; byte sequences that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def stream_decoder(self) -> "StreamDecoder":
        """An incremental decoder that turns token ids into text as they arrive."""
        return StreamDecoder(self)

    # ---- persistence ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "vocab_size": self.vocab_size,
            "pattern": self.pattern,
            "merges": [list(m) for m in self.merges],
        }

    def save(self, path: str | Path) -> None:
        """Write the tokenizer as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=None, separators=(",", ":")) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, d: dict) -> "ByteBPETokenizer":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise TokenizerError(f"not a {FORMAT} tokenizer")
        if d.get("version") != FORMAT_VERSION:
            raise TokenizerError(f"unsupported tokenizer version {d.get('version')!r}")
        merges = d.get("merges")
        pattern = d.get("pattern")
        if not isinstance(merges, list) or not isinstance(pattern, str):
            raise TokenizerError("tokenizer JSON needs 'merges' (list) and 'pattern' (str)")
        tok = cls([tuple(m) if isinstance(m, list) else m for m in merges], pattern)
        if d.get("vocab_size") != tok.vocab_size:
            raise TokenizerError(f"vocab_size {d.get('vocab_size')!r} does not match {len(merges)} merges")
        return tok

    @classmethod
    def load(cls, path: str | Path) -> "ByteBPETokenizer":
        """Read a tokenizer written by `save`."""
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TokenizerError(f"tokenizer file not found: {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise TokenizerError(f"cannot read tokenizer {path}: {e}") from None
        return cls.from_dict(d)


class StreamDecoder:
    """Turns token ids into text incrementally, holding back incomplete UTF-8 sequences."""

    def __init__(self, tokenizer: ByteBPETokenizer) -> None:
        self._tok = tokenizer
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, ids: Iterable[int]) -> str:
        """Text completed by `ids` (may be empty while a multi-byte character is pending)."""
        return self._dec.decode(self._tok.decode_bytes(ids))

    def flush(self) -> str:
        """Whatever is pending, with an incomplete sequence rendered as U+FFFD."""
        return self._dec.decode(b"", final=True)
