"""A synthetic language with planted, labelled token patterns (the right answer is known).

Each sequence starts with ``BOS`` and is a concatenation of *segments*; a new segment starts
whenever the previous one ends, its type drawn from ``pattern_probs``:

=============  ===============================================================  =================
segment        tokens emitted                                                    target labels
=============  ===============================================================  =================
``random``     a phrase of 1-4 words from a Zipf(1) unigram distribution          random
``bigram``     a trigger ``g``, then a successor drawn from the sparse row       random, bigram
               ``bigram_table[g]`` (``bigram_support`` nonzero entries)
``induction``  a copy of ``L`` consecutive words seen earlier in the sequence    random, induction
               (``L`` uniform in ``induction_len``; a random phrase if no        x (L - 1)
               earlier word run is long enough)
``bracket``    a balanced bracket word: an opener, then until depth 0 an open    random /
               (depth < 3), a close (of the innermost opener) or a word          bracket_close
``delimiter``  a list ``w , w , ... w ;`` of 2-4 random words                    random / delimiter
``formatting`` ``NEWLINE`` then ``INDENT`` x indent (one width per sequence)    formatting
``counting``   a count token ``C_k`` (k = 1..4), k ``FILL`` tokens, ``MARK``     random, filler,
                                                                                 counting
=============  ===============================================================  =================

A label belongs to the *target* position: ``labels[:, t]`` describes ``tokens[:, t + 1]``, the
token a language model predicts from ``tokens[:, :t + 1]``; "random" means the target is a fresh
draw (predictable only through unigram or segment-type statistics). Every other label names the
rule that determines the target from its context, so each is right by construction:
``induction`` targets equal ``tokens[source]`` with ``tokens[source - 1]`` equal to the previous
token; ``bigram`` targets lie in the support of the trigger's row; ``bracket_close`` targets
close the innermost open bracket; ``counting`` markers come after exactly ``k`` fillers.
Sequences are cut at ``seq_len + 1`` tokens, so the last segment may be unfinished.

Vocabulary (``vocab_size >= 32``): 0 ``BOS``, 1 ``NEWLINE``, 2 ``INDENT``, 3 ``,``, 4 ``;``,
5/6 ``(``/``)``, 7/8 ``[``/``]``, 9 ``FILL``, 10 ``MARK``, 11-14 ``C_1..C_4``, 15-18 bigram
triggers, 19.. words. Generation is numpy, vectorized over sequences with a loop over positions.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

__all__ = ["PATTERNS", "SEGMENTS", "VOCAB", "DEFAULT_PATTERN_PROBS", "make_synthetic",
           "pattern_mask", "probe_set", "numpy_rng"]

#: label id -> name (labels describe the target token, see the module docstring).
PATTERNS = {0: "random", 1: "induction", 2: "bigram", 3: "bracket_close", 4: "delimiter",
            5: "formatting", 6: "filler", 7: "counting"}
_LID = {v: k for k, v in PATTERNS.items()}
#: Segment types, in the order used by ``pattern_probs``.
SEGMENTS = ("random", "induction", "bigram", "bracket", "delimiter", "formatting", "counting")
DEFAULT_PATTERN_PROBS = {"random": 0.3, "induction": 0.2, "bigram": 0.15, "bracket": 0.1,
                         "delimiter": 0.1, "formatting": 0.07, "counting": 0.08}
#: Special token ids; words are ``VOCAB["first_word"] .. vocab_size - 1``.
VOCAB = {"BOS": 0, "NEWLINE": 1, "INDENT": 2, "COMMA": 3, "END": 4, "OPEN": (5, 7),
         "CLOSE": (6, 8), "FILL": 9, "MARK": 10, "COUNT": (11, 12, 13, 14),
         "TRIGGER": (15, 16, 17, 18), "first_word": 19}
_MAX_DEPTH, _MIN_WORDS = 3, 13
# in-segment states
_IDLE, _PHRASE, _BIGRAM, _BRACKET, _COUNT, _LIST, _FORMAT, _COPY = range(8)


def _check_probs(pattern_probs) -> np.ndarray:
    if not isinstance(pattern_probs, Mapping):
        raise TypeError("pattern_probs must be a dict {segment: prob} with segments from "
                        f"{SEGMENTS}, got {type(pattern_probs).__name__}.")
    unknown = set(pattern_probs) - set(SEGMENTS)
    if unknown:
        raise ValueError(f"pattern_probs has unknown segments {sorted(unknown)}; use {SEGMENTS}.")
    p = np.array([float(pattern_probs.get(s, 0.0)) for s in SEGMENTS])
    if (p < 0).any() or not np.isfinite(p).all() or p.sum() <= 0:
        raise ValueError(f"pattern_probs must be finite, >= 0 and not all zero, got {pattern_probs}.")
    return p / p.sum()


def make_synthetic(key, *, num_sequences: int, seq_len: int, vocab_size: int = 64,
                   pattern_probs: Mapping[str, float] | None = None,
                   induction_len: tuple[int, int] = (3, 6), bigram_support: int = 2) -> dict:
    """Generate ``num_sequences`` sequences of ``seq_len + 1`` tokens with planted patterns.

    Args:
      key: a JAX PRNG key (``jax.random.key``/``PRNGKey``) or an int seed; same key, same data.
      num_sequences, seq_len: output shapes ``[num_sequences, seq_len + 1]`` tokens.
      vocab_size: total vocabulary (>= 32); the last ``vocab_size - 19`` ids are words.
      pattern_probs: ``{segment: probability}`` (normalized; missing segments get 0), see
        :data:`SEGMENTS`; default :data:`DEFAULT_PATTERN_PROBS`.
      induction_len: inclusive range of copied span lengths.
      bigram_support: nonzero successors per trigger in ``bigram_table``.

    Returns:
      dict with ``tokens`` (int32 ``[n, T+1]``, ``tokens[:, 0] = BOS``), ``labels`` (int8
      ``[n, T]``, label of ``tokens[:, 1:]``, ids in :data:`PATTERNS`), ``source`` (int32
      ``[n, T]``: for induction targets the index into ``tokens`` of the copied token, else -1),
      ``bigram_table`` (float64 ``[vocab_size, vocab_size]`` successor probabilities, nonzero
      rows for triggers only), ``indent`` (int32 ``[n]``, the formatting width per sequence).

    Examples:
      >>> d = make_synthetic(0, num_sequences=2, seq_len=16)
      >>> d["tokens"].shape, d["labels"].shape, d["tokens"].dtype, d["labels"].dtype
      ((2, 17), (2, 16), dtype('int32'), dtype('int8'))
    """
    _check_sizes(num_sequences, seq_len, vocab_size, induction_len)
    probs = _check_probs(DEFAULT_PATTERN_PROBS if pattern_probs is None else pattern_probs)
    gen = _Generator(numpy_rng(key), int(num_sequences), int(seq_len), vocab_size, probs,
                     tuple(induction_len), bigram_support)
    for t in range(1, gen.T + 1):
        gen.step(t)
    return {"tokens": gen.tok, "labels": gen.lab[:, 1:], "source": gen.src[:, 1:],
            "bigram_table": gen.table, "indent": gen.indent}


def _check_sizes(num_sequences, seq_len, vocab_size, induction_len) -> None:
    for name, v in (("num_sequences", num_sequences), ("seq_len", seq_len)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}.")
    if vocab_size < _MIN_WORDS + VOCAB["first_word"]:
        raise ValueError(f"vocab_size must be >= {_MIN_WORDS + VOCAB['first_word']}, got {vocab_size}.")
    lo, hi = induction_len
    if not 2 <= lo <= hi:
        raise ValueError(f"induction_len must be (lo, hi) with 2 <= lo <= hi, got {induction_len}.")


class _Generator:
    """The per-sequence segment state machine behind `make_synthetic`, vectorized over sequences.

    Each `step` first continues the segments in progress, then starts a new segment in every
    sequence that was idle when the step began. The order of the draws from ``rng`` is part of the
    output (same key, same data): keep it when editing.
    """

    def __init__(self, rng, n, T, vocab_size, probs, induction_len, bigram_support):
        self.rng, self.T, self.induction_len = rng, T, induction_len
        self.w0 = w0 = VOCAB["first_word"]
        self.num_words = num_words = vocab_size - w0
        zipf = 1.0 / np.arange(1, num_words + 1)
        self.zipf_cdf = np.cumsum(zipf / zipf.sum())
        self.table = np.zeros((vocab_size, vocab_size))
        for g in VOCAB["TRIGGER"]:
            succ = w0 + rng.choice(num_words, size=bigram_support, replace=False)
            self.table[g, succ] = rng.dirichlet(np.ones(bigram_support))
        self.table_cdf = np.cumsum(self.table, axis=1)
        self.table_cdf[list(VOCAB["TRIGGER"]), -1] = 1.0  # guard the float round-off of the last entry
        self.seg_cdf = np.cumsum(probs)
        self.triggers = np.asarray(VOCAB["TRIGGER"])
        self.opens, self.closes = np.array(VOCAB["OPEN"]), np.array(VOCAB["CLOSE"])

        self.tok = np.zeros((n, T + 1), np.int32)
        self.lab = np.zeros((n, T + 1), np.int8)      # lab[:, t] labels tok[:, t]; column 0 dropped
        self.src = np.full((n, T + 1), -1, np.int32)
        self.run = np.zeros((n, T + 1), np.int32)     # length of the word run ending at each position
        self.state = np.zeros(n, np.int32)
        self.left = np.zeros(n, np.int32)             # fills / indents / copy tokens / list items left
        self.ptr = np.zeros(n, np.int32)              # copy source pointer
        self.stack = np.zeros((n, _MAX_DEPTH), np.int32)
        self.depth = np.zeros(n, np.int32)
        self.phase = np.zeros(n, bool)                # list: True = a delimiter is due
        self.indent = rng.integers(1, 4, size=n).astype(np.int32)

    def words(self, k):
        return (self.w0 + np.searchsorted(self.zipf_cdf, self.rng.random(k), side="right")
                .clip(max=self.num_words - 1))

    def emit(self, idx, t, values, label, source=None):
        self.tok[idx, t] = values
        self.lab[idx, t] = _LID[label]
        if source is not None:
            self.src[idx, t] = source

    def start_phrase(self, idx, t, first=None):
        """A run of 1-4 random words (``first`` overrides the first word)."""
        self.emit(idx, t, self.words(len(idx)) if first is None else first, "random")
        self.left[idx] = self.rng.integers(0, 4, size=len(idx))
        self.state[idx] = np.where(self.left[idx] > 0, _PHRASE, _IDLE)

    def step(self, t):
        idle = np.flatnonzero(self.state == _IDLE)  # these start a new segment at the end of the step
        self.continue_segments(t)
        self.start_segments(t, idle)
        is_word = self.tok[:, t] >= self.w0
        self.run[:, t] = np.where(is_word, self.run[:, t - 1] + 1, 0)

    def continue_segments(self, t):
        """Emit the next token of every segment in progress (all but the bracket segment)."""
        state, left, tok, emit = self.state, self.left, self.tok, self.emit
        i = np.flatnonzero(state == _PHRASE)
        emit(i, t, self.words(len(i)), "random")
        left[i] -= 1
        state[i[left[i] == 0]] = _IDLE

        i = np.flatnonzero(state == _BIGRAM)
        u = self.rng.random(len(i))[:, None]
        emit(i, t, (u >= self.table_cdf[tok[i, t - 1]]).sum(1), "bigram")
        state[i] = _IDLE

        i = np.flatnonzero(state == _COUNT)
        fill, done = i[left[i] > 0], i[left[i] == 0]
        emit(fill, t, VOCAB["FILL"], "filler")
        left[fill] -= 1
        emit(done, t, VOCAB["MARK"], "counting")
        state[done] = _IDLE

        i = np.flatnonzero(state == _FORMAT)
        emit(i, t, VOCAB["INDENT"], "formatting")
        left[i] -= 1
        state[i[left[i] == 0]] = _IDLE

        i = np.flatnonzero(state == _COPY)
        emit(i, t, tok[i, self.ptr[i]], "induction", self.ptr[i])
        self.ptr[i] += 1
        left[i] -= 1
        state[i[left[i] == 0]] = _IDLE

        i = np.flatnonzero(state == _LIST)
        phase = self.phase
        dl, wd = i[phase[i]], i[~phase[i]]
        more = left[dl] > 0
        emit(dl, t, np.where(more, VOCAB["COMMA"], VOCAB["END"]), "delimiter")
        state[dl[~more]] = _IDLE
        emit(wd, t, self.words(len(wd)), "random")
        left[wd] -= 1
        phase[i] = ~phase[i]

        self.continue_brackets(t)

    def continue_brackets(self, t):
        """Open (depth < 3), close the innermost opener, or emit a word."""
        depth, stack = self.depth, self.stack
        i = np.flatnonzero(self.state == _BRACKET)
        u = self.rng.random(len(i))
        do_open = (depth[i] < _MAX_DEPTH) & (u < 0.25)
        do_close = u >= 0.6
        j = i[do_close]
        depth[j] -= 1
        self.emit(j, t, self.closes[stack[j, depth[j]]], "bracket_close")
        self.state[j[depth[j] == 0]] = _IDLE
        j = i[do_open]
        kind = self.rng.integers(0, 2, size=len(j))
        stack[j, depth[j]] = kind
        depth[j] += 1
        self.emit(j, t, self.opens[kind], "random")
        j = i[~do_open & ~do_close]
        self.emit(j, t, self.words(len(j)), "random")

    def start_segments(self, t, idle):
        """Draw a segment type for each sequence in ``idle`` and emit its first token."""
        rng, state, left, emit = self.rng, self.state, self.left, self.emit
        seg = np.searchsorted(self.seg_cdf, rng.random(len(idle)), side="right").clip(max=len(SEGMENTS) - 1)
        by = {name: idle[seg == k] for k, name in enumerate(SEGMENTS)}
        self.start_phrase(by["random"], t)
        self.start_induction(by["induction"], t)

        i = by["bigram"]
        emit(i, t, rng.choice(self.triggers, size=len(i)), "random")
        state[i] = _BIGRAM

        i = by["bracket"]
        kind = rng.integers(0, 2, size=len(i))
        self.stack[i, 0], self.depth[i], state[i] = kind, 1, _BRACKET
        emit(i, t, self.opens[kind], "random")

        i = by["delimiter"]
        emit(i, t, self.words(len(i)), "random")
        left[i], self.phase[i], state[i] = rng.integers(1, 4, size=len(i)), True, _LIST

        i = by["formatting"]
        emit(i, t, VOCAB["NEWLINE"], "formatting")
        left[i], state[i] = self.indent[i], _FORMAT

        i = by["counting"]
        k = rng.integers(1, len(VOCAB["COUNT"]) + 1, size=len(i))
        emit(i, t, np.asarray(VOCAB["COUNT"])[k - 1], "random")
        left[i], state[i] = k, _COUNT

    def start_induction(self, i, t):
        """Copy L words from a word run ending at e <= t - 1 (a random phrase if there is none)."""
        lo, hi = self.induction_len
        L = self.rng.integers(lo, hi + 1, size=len(i))
        valid = self.run[i, :t] >= L[:, None]
        e = np.argmax(self.rng.random(valid.shape) * valid, axis=1)
        ok = valid.any(axis=1)
        self.start_phrase(i[~ok], t)
        i, s, L = i[ok], (e - L + 1)[ok], L[ok]
        self.emit(i, t, self.tok[i, s], "random")
        self.ptr[i], self.left[i], self.state[i] = s + 1, L - 1, _COPY


def pattern_mask(labels, pattern) -> np.ndarray:
    """Boolean mask ``[n, T]`` of target positions whose label is ``pattern`` (name or id)."""
    return np.asarray(labels) == _label_id(pattern)


def probe_set(data: Mapping, pattern, *, max_sequences: int | None = None) -> dict:
    """The sequences that contain ``pattern`` targets, with a per-position mask.

    Args:
      data: a dict from :func:`make_synthetic` (``tokens``, ``labels``).
      pattern: a label name or id from :data:`PATTERNS`.
      max_sequences: keep at most this many sequences (the first ones, in order).

    Returns:
      dict with ``tokens`` (int32 ``[m, T+1]``), ``mask`` (float32 ``[m, T]``, 1 at positions whose
      target has the pattern; use it to average per-token losses ``(B, T)`` into a probe
      observable) and ``index`` (int32 ``[m]``, rows of ``data``).
    """
    mask = pattern_mask(data["labels"], pattern)
    index = np.flatnonzero(mask.any(axis=1))[:max_sequences].astype(np.int32)
    return {"tokens": np.asarray(data["tokens"])[index], "mask": mask[index].astype(np.float32),
            "index": index}


def _label_id(pattern) -> int:
    if isinstance(pattern, str):
        if pattern not in _LID:
            raise ValueError(f"unknown pattern {pattern!r}; choose from {list(_LID)}.")
        return _LID[pattern]
    if int(pattern) not in PATTERNS:
        raise ValueError(f"unknown pattern id {pattern!r}; choose from {PATTERNS}.")
    return int(pattern)


def numpy_rng(key) -> np.random.Generator:
    """A numpy Generator seeded from a JAX PRNG key (typed or raw) or an int seed."""
    if isinstance(key, (int, np.integer)):
        return np.random.default_rng(int(key))
    import jax
    import jax.numpy as jnp

    return np.random.default_rng(np.asarray(jax.random.bits(key, (4,), jnp.uint32)))
