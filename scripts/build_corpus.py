"""Build ``data/corpus/``: the CPython standard library's source, BPE-tokenized.

Usage (from the repository root; ~1 minute on one core, no network)::

    python scripts/build_corpus.py [--out data/corpus] [--vocab-size 5000]
                                   [--train-bytes 3000000] [--max-tokens 2000000]

Steps: (1) list the ``.py`` files under ``sysconfig.get_paths()["stdlib"]`` except tests,
``site-packages``, generated/machine-specific files (``_sysconfigdata*``, ``config-*``) and data
tables (``encodings``, ``pydoc_data``); (2) order them by the sha256 of their relative path (a
fixed, module-mixing shuffle); (3) train a byte-level BPE (:func:`susc.data.train_bpe`) on the
first ``--train-bytes`` bytes of files; (4) encode files in that order, joined by
``<|endoftext|>``, until ``--max-tokens``; (5) write ``stdlib_tokens.npz`` (zip entries with a
fixed timestamp, so the bytes are reproducible), ``tokenizer.json``, ``LICENSE-PSF.txt`` (the
stdlib's ``LICENSE.txt``, which the PSF licence asks derivative works to retain) and
``MANIFEST.json``.
The output is deterministic given the Python version (the manifest records it and a hash of the
source files, since distributions may patch the stdlib).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import platform
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from susc.data.corpus import sha256_file  # noqa: E402
from susc.data.tokenizer import EOT, train_bpe  # noqa: E402

EXCLUDE_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__",
                "encodings", "pydoc_data", "lib-dynload"}


def list_sources(root: Path) -> list[tuple[str, bytes]]:
    """``(relative posix path, raw bytes)`` of the selected files, in sha256(path) order."""
    out = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        parts = rel.parts
        if set(parts[:-1]) & EXCLUDE_DIRS or parts[0].startswith("config-"):
            continue
        if rel.name.startswith("_sysconfigdata"):
            continue
        out.append((rel.as_posix(), path.read_bytes()))
    out.sort(key=lambda item: hashlib.sha256(item[0].encode()).hexdigest())
    return out


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` with fixed zip timestamps (numpy stamps the current time)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=9)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "data" / "corpus"))
    ap.add_argument("--stdlib", default=sysconfig.get_paths()["stdlib"])
    ap.add_argument("--vocab-size", type=int, default=5000)
    ap.add_argument("--train-bytes", type=int, default=3_000_000)
    ap.add_argument("--max-tokens", type=int, default=2_000_000)
    args = ap.parse_args(argv)
    if args.vocab_size > 65536:
        raise SystemExit("--vocab-size must be <= 65536 (tokens are stored as uint16).")
    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    sources = list_sources(Path(args.stdlib))
    texts = [raw.decode("utf-8") for _, raw in sources]
    train, nbytes = [], 0
    for (rel, raw), text in zip(sources, texts):
        if nbytes >= args.train_bytes:
            break
        train.append(text)
        nbytes += len(raw)
    tok = train_bpe(train, args.vocab_size)
    t_train = time.perf_counter() - t0

    chunks, starts, used, total = [], [], [], 0
    for (rel, raw), text in zip(sources, texts):
        if total >= args.max_tokens:
            break
        ids = tok.encode(text)
        starts.append(total)
        chunks.append(np.append(ids, tok.eot_id))
        used.append((rel, raw))
        total += len(ids) + 1
    tokens = np.concatenate(chunks)[: args.max_tokens].astype(np.uint16)
    assert tokens.max() < tok.vocab_size
    write_npz(out / "stdlib_tokens.npz", {"tokens": tokens, "doc_starts": np.asarray(starts, np.int64)})
    tok.save(out / "tokenizer.json")
    licence = Path(args.stdlib) / "LICENSE.txt"  # the PSF licence asks derivatives to retain it
    if licence.is_file():
        (out / "LICENSE-PSF.txt").write_bytes(licence.read_bytes())

    listing = "".join(f"{rel} {hashlib.sha256(raw).hexdigest()}\n" for rel, raw in used)
    manifest = {
        "source": "CPython standard library (.py files under sysconfig.get_paths()['stdlib'])",
        "licence": "PSF-2.0 (Python Software Foundation License Version 2); see data/README.md",
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "excluded_dirs": sorted(EXCLUDE_DIRS) + ["config-*", "_sysconfigdata*.py"],
        "file_order": "sorted by sha256 of the relative path",
        "num_files_available": len(sources),
        "num_files_used": len(used),
        "files_used_sha256": hashlib.sha256(listing.encode()).hexdigest(),
        "files_used": [rel for rel, _ in used],
        "tokenizer": {"type": "byte-level BPE", "vocab_size": tok.vocab_size,
                      "num_merges": len(tok.merges), "eot": EOT, "eot_id": tok.eot_id,
                      "train_files": len(train), "train_bytes": nbytes},
        "corpus": {"num_tokens": int(tokens.size), "dtype": "uint16",
                   "source_bytes_used": int(sum(len(raw) for _, raw in used)),
                   "truncated_last_file": bool(total > args.max_tokens)},
        "build_command": "python scripts/build_corpus.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out", "stdlib")),
        "artifacts": {name: {"sha256": sha256_file(out / name), "bytes": (out / name).stat().st_size}
                      for name in ("stdlib_tokens.npz", "tokenizer.json", "LICENSE-PSF.txt")
                      if (out / name).is_file()},
    }
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    dt = time.perf_counter() - t0
    print(f"{len(used)}/{len(sources)} files, {tokens.size:,} tokens "
          f"({manifest['corpus']['source_bytes_used'] / tokens.size:.2f} bytes/token), vocab "
          f"{tok.vocab_size}, npz {manifest['artifacts']['stdlib_tokens.npz']['bytes']:,} B; "
          f"train {t_train:.1f} s, total {dt:.1f} s -> {out}")


if __name__ == "__main__":
    main()
