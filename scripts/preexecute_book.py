"""Execute the book's MyST chapters in parallel into the jupyter-cache the book build reads.

Jupyter Book 1 executes notebooks one after another. This script fills the same per-profile
cache (``_build/.jupyter_cache_<profile>``, see book/_ext/profile_cache.py) with a process pool
first, so the build that follows finds every chapter as "Using cached notebook" and takes about
1/cores of the time. Nothing is trusted blindly: a chapter that fails here has no cache record,
so the build executes it again and reports the error with `-W`.

Usage: python scripts/preexecute_book.py [profile]   (default: $SUSC_PROFILE or small)
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import yaml
from jupyter_cache import get_cache
from jupyter_cache.executors import load_executor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import quiet_kernels  # noqa: E402  (drops ipykernel's "running over TCP without encryption")


def toc_files(toc_path: Path) -> list[Path]:
    toc = yaml.safe_load(toc_path.read_text())
    entries = [toc["root"]]

    def walk(node):
        for key in ("parts", "chapters", "sections"):
            for item in node.get(key, []) or []:
                if "file" in item:
                    entries.append(item["file"])
                walk(item)

    walk(toc)
    return [ROOT / f"{e}.md" for e in entries if (ROOT / f"{e}.md").exists()]


def is_notebook(path: Path) -> bool:
    head = path.read_text(encoding="utf-8")[:4000]
    return head.startswith("---") and "jupytext:" in head and "kernelspec:" in head


def main(profile: str) -> int:
    quiet_kernels.install(ROOT / "_build")
    cache = get_cache(str(ROOT / "_build" / f".jupyter_cache_{profile}"))
    notebooks = [p for p in toc_files(ROOT / "_toc.yml") if is_notebook(p)]
    for nb in notebooks:
        cache.add_nb_to_project(str(nb), read_data={"name": "myst_nb_md", "type": "plugin"})
    t0 = time.perf_counter()
    executor = load_executor("local-parallel", cache=cache)
    result = executor.run_and_cache(filter_uris=[str(nb) for nb in notebooks], timeout=900)
    print(f"pre-executed {len(result.succeeded)} chapter(s) in {time.perf_counter() - t0:.0f} s "
          f"(profile {profile}); errored: {[Path(p).name for p in result.errored]}; "
          f"excepted: {[Path(p).name for p in result.excepted]}")
    return 0  # failures are reported by the book build, which re-executes them


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SUSC_PROFILE", "small")))
