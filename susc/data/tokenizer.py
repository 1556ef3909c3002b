"""Byte-level BPE tokenizer in pure Python/numpy (training, encoding, decoding, JSON I/O).

The tokenizer follows GPT-2's design at a smaller scale:

1. **Pre-tokenization.** A byte regex (:data:`PATTERN`) splits the UTF-8 bytes of the text into
   pieces: an optional leading space plus a run of letters (ASCII letters, ``_`` and every byte
   ``>= 0x80``, so multi-byte UTF-8 characters stay inside words), an optional space plus a run of
   digits, an optional space plus a run of other symbols, English contractions (``'s``, ``'ll``,
   ...), and whitespace runs (a run before a word leaves its last space to the word). The pieces
   partition the input, so every byte sequence round-trips.
2. **Merges.** Token ids ``0..255`` are the bytes; merge ``i`` creates id ``256 + i`` as the
   concatenation of an existing pair. Training repeatedly merges the most frequent adjacent pair
   inside pieces (ties broken by the smaller ``(left, right)`` id pair, so training is
   deterministic). Merges never cross piece boundaries, so a token's bytes always belong to one
   pre-token class -- :mod:`susc.data.labels` relies on this.
3. **Encoding** applies merges greedily by rank (the lowest-numbered mergeable pair first, all its
   occurrences at once), which reproduces the training merges exactly; results are cached per
   piece, which makes encoding megabytes of source code take seconds.

One special token, ``<|endoftext|>``, gets the last id (``vocab_size - 1``); it separates documents
in the corpus and is never produced by :meth:`Tokenizer.encode` from ordinary text.
"""
from __future__ import annotations

import heapq
import json
import re
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np

__all__ = ["PATTERN", "EOT", "Tokenizer", "train_bpe"]

#: Pre-tokenization regex over bytes (GPT-2's pattern with ASCII classes; bytes >= 0x80 are letters).
PATTERN = (rb"'(?:s|t|re|ve|m|ll|d)| ?[A-Za-z_\x80-\xff]+| ?[0-9]+| ?[^\sA-Za-z0-9_\x80-\xff]+"
           rb"|\s+(?!\S)|\s+")
#: The document separator, the only special token.
EOT = "<|endoftext|>"
_FORMAT = "susc-bpe-v1"
_CACHE_MAX = 1 << 20


class Tokenizer:
    """A trained byte-level BPE tokenizer.

    Args:
      merges: list of ``(left_id, right_id)`` pairs; merge ``i`` creates token id ``256 + i``.
      pattern: the pre-tokenization regex (bytes); defaults to :data:`PATTERN`.

    Attributes:
      vocab_size: ``256 + len(merges) + 1`` (bytes, merges, ``<|endoftext|>``).
      eot_id: id of ``<|endoftext|>`` (``vocab_size - 1``).
      token_bytes: list of the byte string of every id.

    Examples:
      >>> tok = Tokenizer([(ord("a"), ord("b"))])
      >>> tok.encode("abab c").tolist()
      [256, 256, 32, 99]
      >>> tok.decode(tok.encode("abab c"))
      'abab c'
    """

    def __init__(self, merges: Iterable[tuple[int, int]], pattern: bytes = PATTERN):
        self.merges = [(int(a), int(b)) for a, b in merges]
        vocab = [bytes([i]) for i in range(256)]
        for i, (a, b) in enumerate(self.merges):
            if not (0 <= a < 256 + i and 0 <= b < 256 + i):
                raise ValueError(f"merges[{i}] = {(a, b)} refers to an id not yet defined "
                                 f"(ids must be < {256 + i}); the tokenizer file is corrupt.")
            vocab.append(vocab[a] + vocab[b])
        self.eot_id = len(vocab)
        vocab.append(EOT.encode())
        self.token_bytes: list[bytes] = vocab
        self.vocab_size = len(vocab)
        self.pattern = pattern
        self._regex = re.compile(pattern)
        self._ranks = {pair: i for i, pair in enumerate(self.merges)}
        self._cache: dict[bytes, tuple[int, ...]] = {}

    # -- encoding ---------------------------------------------------------------------------
    def _bpe(self, piece: bytes) -> tuple[int, ...]:
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        ids = list(piece)
        ranks = self._ranks
        while len(ids) > 1:
            best = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, 1 << 30))
            rank = ranks.get(best)
            if rank is None:
                break
            new_id, merged, i = 256 + rank, [], 0
            while i < len(ids):  # merge every occurrence of the best pair, left to right
                if i + 1 < len(ids) and ids[i] == best[0] and ids[i + 1] == best[1]:
                    merged.append(new_id)
                    i += 2
                else:
                    merged.append(ids[i])
                    i += 1
            ids = merged
        out = tuple(ids)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[piece] = out
        return out

    def encode(self, text: str) -> np.ndarray:
        """Token ids (``int32 [num_tokens]``) of ``text``; ``<|endoftext|>`` in text is plain bytes."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}; decode bytes first.")
        out: list[int] = []
        for piece in self._regex.findall(text.encode("utf-8")):
            out.extend(self._bpe(piece))
        return np.asarray(out, dtype=np.int32)

    def decode(self, ids) -> str:
        """Text of a 1-D sequence of ids (invalid UTF-8 from a cut multi-byte char becomes U+FFFD)."""
        ids = np.asarray(ids)
        if ids.ndim != 1:
            raise ValueError(f"ids must be 1-D, got shape {ids.shape}; decode rows one at a time.")
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"ids must lie in [0, {self.vocab_size}), got range "
                             f"[{ids.min()}, {ids.max()}].")
        tb = self.token_bytes
        return b"".join(tb[i] for i in ids.tolist()).decode("utf-8", errors="replace")

    # -- serialization ----------------------------------------------------------------------
    def to_json(self) -> str:
        """Deterministic JSON text (merges, pattern, special token)."""
        return json.dumps({"format": _FORMAT, "pattern": self.pattern.decode("latin-1"),
                           "special_tokens": {EOT: self.eot_id}, "vocab_size": self.vocab_size,
                           "merges": self.merges}, separators=(",", ":"), sort_keys=True)

    def save(self, path) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path) -> "Tokenizer":
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
        if obj.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a {_FORMAT} tokenizer file (format="
                             f"{obj.get('format')!r}); rebuild with scripts/build_corpus.py.")
        tok = cls([tuple(m) for m in obj["merges"]], obj["pattern"].encode("latin-1"))
        if tok.vocab_size != obj["vocab_size"] or obj["special_tokens"].get(EOT) != tok.eot_id:
            raise ValueError(f"{path}: vocab_size/special token ids disagree with the merges.")
        return tok


def train_bpe(texts: Iterable[str], vocab_size: int, *, pattern: bytes = PATTERN,
              min_count: int = 2) -> Tokenizer:
    """Train a byte-level BPE with ``vocab_size`` ids (256 bytes + merges + ``<|endoftext|>``).

    Deterministic: pieces are counted exactly, and each step merges the most frequent adjacent
    pair (ties: the smallest ``(left, right)``). Pair counts are updated incrementally (only the
    pieces containing the merged pair are touched; a lazy max-heap finds the next pair), so a
    few MB of text train in tens of seconds. Stops early if no pair occurs ``min_count`` times.
    """
    if vocab_size < 258:
        raise ValueError(f"vocab_size must be >= 258 (256 bytes + 1 merge + EOT), got {vocab_size}.")
    regex = re.compile(pattern)
    counts: Counter[bytes] = Counter()
    for text in texts:
        counts.update(regex.findall(text.encode("utf-8")))
    pieces = sorted(counts)  # sorted for a deterministic word order
    words = [list(p) for p in pieces]
    freq = [counts[p] for p in pieces]

    pair_count: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], set[int]] = {}
    for w, (ids, c) in enumerate(zip(words, freq)):
        for pair in zip(ids, ids[1:]):
            pair_count[pair] = pair_count.get(pair, 0) + c
            where.setdefault(pair, set()).add(w)
    heap = [(-c, p) for p, c in pair_count.items()]
    heapq.heapify(heap)

    merges: list[tuple[int, int]] = []
    num_merges = vocab_size - 257
    while len(merges) < num_merges and heap:
        neg, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -neg:  # stale heap entry
            continue
        if -neg < min_count:
            break
        new_id = 256 + len(merges)
        merges.append(pair)
        changed: set[tuple[int, int]] = set()
        for w in sorted(where.pop(pair, ())):
            ids, c = words[w], freq[w]
            if len(ids) < 2:
                continue
            out, i = [], 0
            while i < len(ids):
                if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
                    out.append(new_id)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            if len(out) == len(ids):
                continue  # stale index entry: the pair was already merged away in this word
            for p in zip(ids, ids[1:]):
                pair_count[p] -= c
                changed.add(p)
            for p in zip(out, out[1:]):
                pair_count[p] = pair_count.get(p, 0) + c
                where.setdefault(p, set()).add(w)
                changed.add(p)
            words[w] = out
        pair_count.pop(pair, None)
        for p in changed:
            c = pair_count.get(p, 0)
            if c > 0:
                heapq.heappush(heap, (-c, p))
            else:
                pair_count.pop(p, None)
    return Tokenizer(merges, pattern)
