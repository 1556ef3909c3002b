"""Load the shipped real-text corpus: the CPython standard library, byte-level BPE tokenized.

The artifacts in ``data/corpus/`` are built once by ``python scripts/build_corpus.py`` (see
``data/README.md``) and never rebuilt by chapters:

- ``stdlib_tokens.npz``: ``tokens`` (uint16 ``[N]``, documents joined by ``<|endoftext|>``) and
  ``doc_starts`` (int64, index of each document's first token);
- ``tokenizer.json``: the BPE merges (:class:`susc.data.tokenizer.Tokenizer`);
- ``MANIFEST.json``: provenance (Python version, source file hashes, licence) and the sha256 of
  both artifacts, checked on every load.

:func:`load_corpus` cuts the token stream into non-overlapping windows of ``context_len + 1``
tokens (input ``tokens[:, :-1]``, targets ``tokens[:, 1:]``, matching the per-token loss contract
``loss_fn(params, batch) -> (B, T)``). The last ``test_fraction`` of the stream is held out.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .synthetic import numpy_rng
from ..artifacts import sha256_file
from .tokenizer import Tokenizer

__all__ = ["DEFAULT_DIR", "ARTIFACTS", "REBUILD", "sha256_file", "verify_corpus", "load_tokenizer",
           "load_corpus_tokens", "load_corpus", "reduce_vocab", "document_index"]

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "data" / "corpus"
ARTIFACTS = ("stdlib_tokens.npz", "tokenizer.json")
REBUILD = "python scripts/build_corpus.py"


def verify_corpus(data_dir=None) -> dict:
    """Check every artifact's sha256 against ``MANIFEST.json``; return the manifest.

    Runs on every load (hashing the ~2 MB of artifacts takes milliseconds), so an edited or
    truncated file is always caught.

    Raises:
      FileNotFoundError: a file is missing. ValueError: a checksum mismatch. Both name the file
      and the rebuild command.
    """
    d = Path(DEFAULT_DIR if data_dir is None else data_dir)
    manifest_path = d / "MANIFEST.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path} not found; build the corpus with `{REBUILD}` "
                                "from the repository root (or pass data_dir=).")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for name in ARTIFACTS:
        if not (d / name).is_file():
            raise FileNotFoundError(f"{d / name} not found; rebuild with `{REBUILD}`.")
    for name in ARTIFACTS:
        path = d / name
        expected = manifest["artifacts"][name]["sha256"]
        got = sha256_file(path)
        if got != expected:
            raise ValueError(f"checksum mismatch for {path}: sha256 {got} != {expected} recorded in "
                             f"{manifest_path}; the file is corrupt or stale, rebuild with `{REBUILD}`.")
    return manifest


def _check_vocab(vocab_size, full: int) -> None:
    if vocab_size is not None and (not isinstance(vocab_size, (int, np.integer))
                                   or not 257 <= vocab_size <= full):
        raise ValueError(f"vocab_size must be None (the shipped {full}) or an int in [257, {full}], "
                         f"got {vocab_size!r}.")


def load_tokenizer(data_dir=None, *, vocab_size: int | None = None) -> Tokenizer:
    """The shipped tokenizer (checksum-verified); ``vocab_size`` keeps its first merges only.

    BPE merges are learned greedily, so the first ``vocab_size - 257`` merges of the shipped
    tokenizer are exactly what training with that vocabulary would have learned (same data, same
    tie-break): a smaller tokenizer for free, with ``<|endoftext|>`` again the last id.
    """
    d = Path(DEFAULT_DIR if data_dir is None else data_dir)
    verify_corpus(d)
    tok = Tokenizer.load(d / "tokenizer.json")
    _check_vocab(vocab_size, tok.vocab_size)
    if vocab_size is None or vocab_size == tok.vocab_size:
        return tok
    return Tokenizer(tok.merges[:vocab_size - 257], tok.pattern)


def reduce_vocab(tokens, tokenizer: Tokenizer, vocab_size: int):
    """Re-express a token stream of ``tokenizer`` in its ``vocab_size`` merge prefix.

    Returns ``(ids, source)``: the new int32 ids ``[M]`` (``M ≥ N``) and, for each, the index of
    the original token it came from. Encoding applies merges in rank order and a merge's pair only
    involves ids created by lower ranks, so undoing every merge of rank ≥ ``vocab_size - 257``
    (splitting such tokens into their pair, recursively) equals encoding the bytes with the
    smaller tokenizer -- exact, and vectorized (no re-encoding of the text).
    """
    _check_vocab(vocab_size, tokenizer.vocab_size)
    tokens = np.asarray(tokens, dtype=np.int64)
    k = vocab_size - 257                              # merges kept; ids 256 .. 256 + k - 1
    left = np.array([a for a, _ in tokenizer.merges], np.int64)
    right = np.array([b for _, b in tokenizer.merges], np.int64)
    eot_new = vocab_size - 1
    ids, src = tokens, np.arange(tokens.size)
    while True:
        split = (ids >= 256 + k) & (ids != tokenizer.eot_id)
        if not split.any():
            break
        rep = np.where(split, 2, 1)
        out = np.repeat(ids, rep)
        src = np.repeat(src, rep)
        first = np.cumsum(rep) - rep                  # position of each old token in out
        m = ids[split] - 256
        out[first[split]] = left[m]
        out[first[split] + 1] = right[m]
        ids = out
    ids = np.where(ids == tokenizer.eot_id, eot_new, ids)
    return ids.astype(np.int32), src


def load_corpus_tokens(data_dir=None, *, vocab_size: int | None = None) -> np.ndarray:
    """The whole token stream ``[N]`` (checksum-verified), in the ``vocab_size`` merge prefix if given."""
    d = Path(DEFAULT_DIR if data_dir is None else data_dir)
    verify_corpus(d)
    with np.load(d / "stdlib_tokens.npz") as z:
        stream = z["tokens"]
    if vocab_size is None:
        return stream
    return reduce_vocab(stream, Tokenizer.load(d / "tokenizer.json"), vocab_size)[0]


def document_index(data_dir=None, *, vocab_size: int | None = None) -> tuple[np.ndarray, list]:
    """``(doc, paths)``: the document id of every token of the stream and the documents' source paths.

    ``doc[i] = j`` means token ``i`` (of `load_corpus_tokens` with the same ``vocab_size``) belongs to
    the file ``paths[j]`` (relative to the stdlib root, from ``MANIFEST.json``); the separator
    ``<|endoftext|>`` belongs to the document it opens.
    """
    d = Path(DEFAULT_DIR if data_dir is None else data_dir)
    manifest = verify_corpus(d)
    with np.load(d / "stdlib_tokens.npz") as z:
        stream, starts = z["tokens"], z["doc_starts"]
    doc = np.searchsorted(starts, np.arange(len(stream)), side="right") - 1
    doc = np.maximum(doc, 0)
    if vocab_size is not None:
        _, src = reduce_vocab(stream, Tokenizer.load(d / "tokenizer.json"), vocab_size)
        doc = doc[src]
    return doc, list(manifest["files_used"])[: len(starts)]


def load_corpus(context_len: int, num_sequences: int | None = None, *, split: str = "train",
                key=None, test_fraction: float = 0.05, data_dir=None,
                vocab_size: int | None = None, return_index: bool = False) -> dict:
    """Windows of the stdlib corpus: ``dict(tokens=int32 [n, context_len + 1])``.

    Args:
      context_len: T, the model's context length; windows hold ``T + 1`` tokens and do not overlap.
      num_sequences: how many windows (default all in the split); an error if more than exist.
      split: ``"train"`` (first ``1 - test_fraction`` of the stream), ``"test"`` (the rest) or
        ``"all"``.
      key: None takes the first windows in order; a JAX key or int seed takes a random subset
        (without replacement, in random order).
      data_dir: directory of the artifacts (default ``<repo>/data/corpus``).
      vocab_size: re-tokenize with the shipped tokenizer's first merges (`reduce_vocab`); the
        split point is the same fraction of the (longer) stream.
      return_index: also return ``start`` [n], the stream position of each window's first token.

    Examples:
      >>> load_corpus(64, 8)["tokens"].shape   # doctest: +SKIP
      (8, 65)
    """
    if not isinstance(context_len, (int, np.integer)) or context_len < 1:
        raise ValueError(f"context_len must be a positive int, got {context_len!r}.")
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}.")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    stream = load_corpus_tokens(data_dir, vocab_size=vocab_size)
    offset = {"train": 0, "test": int(round(len(stream) * (1.0 - test_fraction))), "all": 0}[split]
    cut = int(round(len(stream) * (1.0 - test_fraction)))
    stream = {"train": stream[:cut], "test": stream[cut:], "all": stream}[split]
    W = int(context_len) + 1
    windows = stream[: (len(stream) // W) * W].reshape(-1, W)
    total = len(windows)
    if num_sequences is None:
        num_sequences = total
    if not 0 < num_sequences <= total:
        raise ValueError(f"num_sequences must be in [1, {total}] for context_len={context_len} "
                         f"and split={split!r}, got {num_sequences}.")
    if key is None:
        index = np.arange(num_sequences)
    else:
        index = numpy_rng(key).choice(total, size=num_sequences, replace=False)
    out = {"tokens": windows[index].astype(np.int32)}
    if return_index:
        out["start"] = offset + index * W
    return out
