"""Tests for susc.data: synthetic planted patterns, BPE tokenizer, shipped corpus, labeler."""
import importlib.util
import json
import platform
import shutil
import sysconfig
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from susc.data import (LABELS, PATTERNS, Tokenizer, label_tokens, load_corpus, load_corpus_tokens,
                       load_tokenizer, make_synthetic, pattern_mask, probe_set, train_bpe,
                       verify_corpus)
from susc.data.corpus import DEFAULT_DIR
from susc.data.labels import token_classes
from susc.data.synthetic import VOCAB

L = {v: k for k, v in PATTERNS.items()}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def syn():
    return make_synthetic(jax.random.key(0), num_sequences=2000, seq_len=64)


# ---------------------------------------------------------------- synthetic language
def test_synthetic_determinism_shapes_dtypes(syn):
    again = make_synthetic(jax.random.key(0), num_sequences=2000, seq_len=64)
    for k in ("tokens", "labels", "source", "bigram_table", "indent"):
        np.testing.assert_array_equal(syn[k], again[k])
    other = make_synthetic(jax.random.key(1), num_sequences=2000, seq_len=64)
    assert (other["tokens"] != syn["tokens"]).mean() > 0.5
    raw = make_synthetic(jax.random.PRNGKey(0), num_sequences=3, seq_len=8)  # raw uint32 key
    np.testing.assert_array_equal(raw["tokens"], make_synthetic(jax.random.PRNGKey(0),
                                                                num_sequences=3, seq_len=8)["tokens"])
    tok, lab = syn["tokens"], syn["labels"]
    assert tok.shape == (2000, 65) and tok.dtype == np.int32
    assert lab.shape == (2000, 64) and lab.dtype == np.int8
    assert (tok[:, 0] == VOCAB["BOS"]).all() and (tok[:, 1:] != VOCAB["BOS"]).all()
    assert tok.max() < 64 and set(np.unique(lab)) == set(PATTERNS)  # every pattern is planted


def test_induction_targets_copy_the_earlier_occurrence(syn):
    tok, lab, src = syn["tokens"], syn["labels"], syn["source"]
    r, t = np.nonzero(lab == L["induction"])       # target is tok[r, t + 1], previous tok[r, t]
    s = src[r, t]
    assert len(r) > 1000 and (s >= 1).all() and (s <= t).all()
    assert (tok[r, t + 1] == tok[r, s]).all() and (tok[r, t] == tok[r, s - 1]).all()
    assert (src[lab != L["induction"]] == -1).all()
    for i in range(0, len(r), 97):                  # independent check: the bigram occurred before
        prev, cur, row = tok[r[i], t[i]], tok[r[i], t[i] + 1], tok[r[i], : t[i] + 1]
        assert np.any((row[:-1] == prev) & (row[1:] == cur))


def test_bigram_targets_follow_the_sparse_table(syn):
    tok, lab, table = syn["tokens"], syn["labels"], syn["bigram_table"]
    r, t = np.nonzero(lab == L["bigram"])
    g, y = tok[r, t], tok[r, t + 1]
    assert np.isin(g, VOCAB["TRIGGER"]).all() and (table[g, y] > 0).all()
    assert ((table > 0).sum(1)[list(VOCAB["TRIGGER"])] == 2).all()
    for trig in VOCAB["TRIGGER"]:                   # empirical successor frequencies within 4 SE
        ys = y[g == trig]
        for succ in np.flatnonzero(table[trig]):
            p = table[trig, succ]
            assert abs((ys == succ).mean() - p) <= 4 * np.sqrt(p * (1 - p) / len(ys)) + 1e-12


def test_brackets_counting_delimiters_formatting_by_construction(syn):
    tok, lab, indent = syn["tokens"], syn["labels"], syn["indent"]
    target = tok[:, 1:]
    opens, closes = dict(zip(VOCAB["OPEN"], VOCAB["CLOSE"])), set(VOCAB["CLOSE"])
    assert ((lab == L["bracket_close"]) == np.isin(target, list(closes))).all()
    assert ((lab == L["delimiter"]) == np.isin(target, [VOCAB["COMMA"], VOCAB["END"]])).all()
    assert ((lab == L["formatting"]) == np.isin(target, [VOCAB["NEWLINE"], VOCAB["INDENT"]])).all()
    assert ((lab == L["filler"]) == (target == VOCAB["FILL"])).all()
    assert ((lab == L["counting"]) == (target == VOCAB["MARK"])).all()
    for r in range(300):
        stack, row = [], tok[r]
        for t in range(1, len(row)):
            x = int(row[t])
            if x in opens:
                stack.append(opens[x])
            elif x in closes:
                assert stack and stack.pop() == x   # closes the innermost open bracket
            elif x == VOCAB["MARK"]:                # exactly k fillers after the count token C_k
                k = 0
                while row[t - 1 - k] == VOCAB["FILL"]:
                    k += 1
                assert row[t - 1 - k] == VOCAB["COUNT"][k - 1]
            elif x in (VOCAB["COMMA"], VOCAB["END"]):
                assert row[t - 1] >= VOCAB["first_word"]
            elif x == VOCAB["NEWLINE"] and t + 1 + indent[r] < len(row):
                assert (row[t + 1: t + 1 + indent[r]] == VOCAB["INDENT"]).all()
                assert row[t + 1 + indent[r]] != VOCAB["INDENT"]


def test_pattern_probs_and_probe_set(syn):
    only = make_synthetic(3, num_sequences=200, seq_len=32, pattern_probs={"counting": 1.0})
    assert set(np.unique(only["labels"])) == {L["random"], L["filler"], L["counting"]}
    with pytest.raises(ValueError, match="unknown segments"):
        make_synthetic(0, num_sequences=2, seq_len=8, pattern_probs={"inductoin": 1.0})
    with pytest.raises(ValueError, match="vocab_size"):
        make_synthetic(0, num_sequences=2, seq_len=8, vocab_size=20)
    probe = probe_set(syn, "bracket_close")
    rows = np.flatnonzero((syn["labels"] == L["bracket_close"]).any(1))
    np.testing.assert_array_equal(probe["index"], rows)
    np.testing.assert_array_equal(probe["tokens"], syn["tokens"][rows])
    np.testing.assert_array_equal(probe["mask"], pattern_mask(syn["labels"], 3)[rows])
    assert probe["mask"].dtype == np.float32 and len(probe_set(syn, 3, max_sequences=5)["index"]) == 5


# ---------------------------------------------------------------- tokenizer
def test_bpe_training_oracle_and_serialization(tmp_path):
    # pieces "ab", " ab" x2, " abc": (a,b) occurs 4 times, then (" ", ab) 3 times, then nothing twice
    tok = train_bpe(["ab ab ab abc"], 300)
    assert tok.merges == [(97, 98), (32, 256)] and tok.vocab_size == 259 and tok.eot_id == 258
    assert tok.encode("ab abc").tolist() == [256, 257, 99]
    tok.save(tmp_path / "t.json")
    assert Tokenizer.load(tmp_path / "t.json").merges == tok.merges
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a susc-bpe-v1"):
        Tokenizer.load(tmp_path / "bad.json")


def test_tokenizer_round_trip_on_stdlib_and_unicode():
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [(stdlib / name).read_text(encoding="utf-8") for name in ("textwrap.py", "heapq.py")]
    texts += ["café — naïve ✓ 日本語\t\r\n  \n\n", "x<|endoftext|>y", ""]
    trained = train_bpe(texts[:1], 600)
    assert train_bpe(texts[:1], 600).merges == trained.merges          # deterministic
    for tok in (load_tokenizer(), trained):
        for s in texts:
            ids = tok.encode(s)
            assert ids.dtype == np.int32 and tok.decode(ids) == s
            assert (ids != tok.eot_id).all()
    shipped = load_tokenizer()
    assert shipped.vocab_size == 5000 and len(shipped.encode(texts[0])) < 0.4 * len(texts[0])


# ---------------------------------------------------------------- corpus
def test_load_corpus_windows_and_splits():
    stream = load_corpus_tokens()
    assert stream.dtype == np.uint16 and stream.size == 2_000_000
    d = load_corpus(64, 10)
    assert d["tokens"].shape == (10, 65) and d["tokens"].dtype == np.int32
    np.testing.assert_array_equal(d["tokens"].ravel(), stream[:650])
    train, test = load_corpus(127)["tokens"], load_corpus(127, split="test")["tokens"]
    assert len(train) == 1_900_000 // 128 and len(test) == 100_000 // 128
    np.testing.assert_array_equal(test[0], stream[1_900_000:1_900_128])
    a, b = load_corpus(32, 50, key=jax.random.key(5)), load_corpus(32, 50, key=jax.random.key(5))
    np.testing.assert_array_equal(a["tokens"], b["tokens"])
    with pytest.raises(ValueError, match="num_sequences"):
        load_corpus(1023, 10**6)


def test_corpus_first_document_is_the_stdlib_file():
    manifest = verify_corpus()
    if manifest["python_version"] != platform.python_version():
        pytest.skip("corpus built from another Python version's stdlib")
    with np.load(DEFAULT_DIR / "stdlib_tokens.npz") as z:
        tokens, starts = z["tokens"], z["doc_starts"]
    tok = load_tokenizer()
    first = tokens[: starts[1] - 1]
    assert tokens[starts[1] - 1] == tok.eot_id
    path = Path(sysconfig.get_paths()["stdlib"]) / manifest["files_used"][0]
    assert tok.decode(first) == path.read_text(encoding="utf-8")


def test_checksum_mismatch_and_missing_file(tmp_path):
    copy = tmp_path / "corpus"
    shutil.copytree(DEFAULT_DIR, copy)
    assert load_corpus(16, 2, data_dir=copy)["tokens"].shape == (2, 17)
    blob = bytearray((copy / "stdlib_tokens.npz").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (copy / "stdlib_tokens.npz").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=r"stdlib_tokens\.npz.*build_corpus\.py"):
        load_corpus(16, 2, data_dir=copy)
    (copy / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(copy)


def test_build_script_is_deterministic(tmp_path):
    spec = importlib.util.spec_from_file_location("build_corpus", ROOT / "scripts" / "build_corpus.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    args = ["--vocab-size", "320", "--train-bytes", "30000", "--max-tokens", "5000"]
    for name in ("a", "b"):
        build.main(args + ["--out", str(tmp_path / name)])
    for f in ("MANIFEST.json", "stdlib_tokens.npz", "tokenizer.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert load_corpus(99, data_dir=tmp_path / "a")["tokens"].shape == (47, 100)
    assert load_tokenizer(tmp_path / "a").vocab_size == 320


# ---------------------------------------------------------------- labeler
def _names(text, tok):
    return [LABELS[int(c)] for c in label_tokens(tok.encode(text), tok)]


def test_labels_on_hand_written_strings():
    byte_tok = Tokenizer([])  # one token per byte
    assert _names("ab(1, 22)", byte_tok) == ["word_start", "word_part", "delimiter", "numeric",
                                             "delimiter", "spacing", "numeric", "numeric", "delimiter"]
    assert _names("a\n  b  c", byte_tok) == ["word_start", "formatting", "formatting", "formatting",
                                             "word_start", "spacing", "spacing", "word_start"]
    # the trigram (x, y, z) recurs: only its last token is induction
    assert _names("xyz xyz", byte_tok) == ["word_start", "word_part", "word_part", "spacing",
                                           "word_start", "word_part", "induction"]
    # merges: " f" " fo" " foo" and the contraction "'s"
    tok = Tokenizer([(32, 102), (256, 111), (257, 111), (39, 115)])
    foo, s = tok.encode(" foo"), tok.encode("'s")
    assert foo.tolist() == [258] and s.tolist() == [259]
    ids = np.concatenate([foo, tok.encode("x"), s, [tok.eot_id], tok.encode("  a")])
    assert [LABELS[int(c)] for c in label_tokens(ids, tok)] == [
        "word_start", "word_part", "word_part", "formatting", "formatting", "formatting", "word_start"]


def _induction_oracle(row):
    return [i >= 2 and any(tuple(row[j - 2:j + 1]) == tuple(row[i - 2:i + 1]) for j in range(2, i))
            for i in range(len(row))]


def test_labels_vectorized_match_loops_and_are_fast():
    tok = load_tokenizer()
    ids = load_corpus(199, 100)["tokens"][:, :200]          # 20,000 tokens
    start = time.perf_counter()
    lab = label_tokens(ids, tok)
    assert time.perf_counter() - start < 5.0
    assert lab.shape == ids.shape and lab.dtype == np.int8 and set(np.unique(lab)) == set(LABELS)
    np.testing.assert_array_equal(lab[7], label_tokens(ids[7], tok))
    static_ws = np.isin(token_classes(tok)["kind"][ids], (4, 5))
    for r in range(5):
        expect = np.array(_induction_oracle(ids[r].tolist())) & ~static_ws[r]
        np.testing.assert_array_equal(lab[r] == 2, expect)
