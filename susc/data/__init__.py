"""Text data for the transformer experiments: no downloads, everything generated or shipped.

- :mod:`~susc.data.synthetic`: a synthetic language with planted, labelled patterns (induction,
  bigram, bracket matching, delimiters, formatting, counting) -- the right answer is known.
- :mod:`~susc.data.tokenizer`: a pure-Python byte-level BPE tokenizer.
- :mod:`~susc.data.corpus`: the CPython standard library, tokenized and shipped in ``data/corpus``
  with checksums (built by ``scripts/build_corpus.py``).
- :mod:`~susc.data.labels`: token pattern classes for real text (word start, word part,
  induction, spacing, delimiter, formatting, numeric).

Batches follow the project's loss contract: ``data["tokens"]`` is int32 ``[n, T + 1]``; a model
reads ``tokens[:, :-1]`` and ``loss_fn(params, batch)`` returns per-token losses ``(B, T)`` for the
targets ``tokens[:, 1:]``; pattern labels refer to those targets.
"""
from .corpus import load_corpus, load_corpus_tokens, load_tokenizer, verify_corpus
from .labels import LABELS, label_tokens
from .synthetic import PATTERNS, make_synthetic, pattern_mask, probe_set
from .tokenizer import Tokenizer, train_bpe

__all__ = ["make_synthetic", "PATTERNS", "pattern_mask", "probe_set", "Tokenizer", "train_bpe",
           "load_corpus", "load_corpus_tokens", "load_tokenizer", "verify_corpus", "LABELS",
           "label_tokens"]
