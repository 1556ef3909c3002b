"""Corpus subsets of the stdlib that differ the way the Pile's subsets do (source, prose, data, GUI).

Baker et al. (arXiv:2504.18274) compare heads' susceptibilities across Pile subsets (GitHub,
arXiv, FreeLaw, ...). Our corpus is one kind of text -- Python source -- but it has parts that
differ in the same way: natural-language prose inside code, numeric tables, and a distinct
application domain. :func:`token_subsets` labels every token with one of :data:`SUBSETS`:

``prose``
    inside a comment or a docstring / triple-quoted string (found with :mod:`tokenize`; a file
    that does not tokenize, e.g. the truncated last one, falls back to a regex for ``#`` comments
    and triple-quoted spans).
``numeric``
    otherwise, in a numeric-heavy module: the fraction of digit bytes of the file is above
    ``numeric_quantile`` of all files (constants tables, codecs, calendars, ...).
``gui``
    otherwise, in the Tk/IDLE/turtle GUI code (``tkinter/``, ``idlelib/``, ``turtledemo/``,
    ``turtle.py``): a different application domain with its own vocabulary.
``code``
    everything else.

Labels refer to tokens of the stream (`susc.data.load_corpus_tokens` with the same ``vocab_size``);
a token that straddles a span boundary takes the class of its first byte.
"""
from __future__ import annotations

import io
import re
import tokenize

import numpy as np

from .corpus import document_index, load_corpus_tokens, load_tokenizer

__all__ = ["SUBSETS", "token_subsets", "prose_mask"]

SUBSETS = ("code", "prose", "numeric", "gui")
_GUI = ("tkinter/", "idlelib/", "turtledemo/", "turtle.py")
_FALLBACK = re.compile(rb'(?s)""".*?(?:"""|\Z)|\'\'\'.*?(?:\'\'\'|\Z)|#[^\n]*')


def prose_mask(source: bytes) -> np.ndarray:
    """Boolean ``[len(source)]``: bytes inside comments, docstrings or triple-quoted strings."""
    mask = np.zeros(len(source), bool)
    try:
        text = source.decode("utf-8")
        lines = text.splitlines(keepends=True)
        # byte offset of each line start (tokenize reports (row, col) in characters)
        starts = np.cumsum([0] + [len(l.encode("utf-8")) for l in lines])
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            is_doc = tok.type == tokenize.STRING and tok.string.lstrip("rRbBuUfF")[:3] in ('"""', "'''")
            if tok.type == tokenize.COMMENT or is_doc:
                (r0, c0), (r1, c1) = tok.start, tok.end
                b0 = starts[r0 - 1] + len(lines[r0 - 1][:c0].encode("utf-8"))
                b1 = starts[r1 - 1] + len(lines[r1 - 1][:c1].encode("utf-8"))
                mask[b0:b1] = True
    except (tokenize.TokenError, IndentationError, SyntaxError, UnicodeDecodeError, IndexError):
        mask[:] = False
        for m in _FALLBACK.finditer(source):
            mask[m.start():m.end()] = True
    return mask


def token_subsets(positions=None, *, vocab_size: int | None = None, numeric_quantile: float = 0.9,
                  data_dir=None) -> np.ndarray:
    """Subset id (index into :data:`SUBSETS`) of the stream tokens at ``positions`` (default: all).

    Only the documents that contain a requested position are decoded and tokenized.
    """
    stream = load_corpus_tokens(data_dir, vocab_size=vocab_size)
    tok = load_tokenizer(data_dir, vocab_size=vocab_size)
    doc, paths = document_index(data_dir, vocab_size=vocab_size)
    positions = np.arange(len(stream)) if positions is None else np.asarray(positions, np.int64)
    if positions.size and (positions.min() < 0 or positions.max() >= len(stream)):
        raise ValueError(f"positions must lie in [0, {len(stream)}), got [{positions.min()}, "
                         f"{positions.max()}].")
    lengths = np.array([len(b) for b in tok.token_bytes])
    lengths[tok.eot_id] = 0                                  # the separator is not source text
    starts = np.searchsorted(doc, np.arange(len(paths)))     # first token of each document
    ends = np.append(starts[1:], len(stream))
    # digit fraction per file, from the token bytes (cheap: no decoding of every file)
    is_digit = np.array([sum(c in b"0123456789" for c in b) for b in tok.token_bytes])
    is_digit[tok.eot_id] = 0
    digits = np.bincount(doc, weights=is_digit[stream], minlength=len(paths))
    size = np.maximum(np.bincount(doc, weights=lengths[stream], minlength=len(paths)), 1)
    frac = digits / size
    numeric_doc = frac > np.quantile(frac, numeric_quantile)
    gui_doc = np.array([p.startswith(_GUI) or p == "turtle.py" for p in paths])
    out = np.where(numeric_doc[doc[positions]], 2, np.where(gui_doc[doc[positions]], 3, 0))
    for d in np.unique(doc[positions]):
        ids = stream[starts[d]:ends[d]]
        offs = np.concatenate([[0], np.cumsum(lengths[ids])])[:-1]        # byte offset per token
        source = b"".join(tok.token_bytes[i] for i in ids if i != tok.eot_id)
        prose = prose_mask(source)
        sel = np.nonzero(doc[positions] == d)[0]
        o = offs[positions[sel] - starts[d]]
        inside = np.zeros(sel.size, bool)
        ok = o < len(source)
        inside[ok] = prose[o[ok]]
        out[sel[inside]] = 1
    return out.astype(np.int32)
