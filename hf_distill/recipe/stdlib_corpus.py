"""Python code from the interpreter's standard library as an offline training corpus, split by file.

Why the standard library: it is real, varied, well-written Python that every machine has, so the CPU recipe
needs no download. Held-out evaluation files are chosen by a hash of each file's path relative to the library
root, so the split is the same on every machine with the same Python version and no training file is ever
scored as held-out.
"""

from __future__ import annotations

import os
import sysconfig
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Directories that are not library code (third-party packages, tests, data tables, build helpers).
EXCLUDED_DIRS = frozenset(
    {
        "site-packages",
        "dist-packages",
        "__pycache__",
        "test",
        "tests",
        "idle_test",
        "encodings",
        "pydoc_data",
        "ensurepip",
        "config-3",
        "lib2to3",
        "turtledemo",
    }
)


@dataclass(frozen=True)
class CodeSplit:
    """Training and held-out files (paths relative to ``root``), both in a fixed order."""

    root: Path
    train_files: tuple[str, ...]
    eval_files: tuple[str, ...]

    def read(self, relative_path: str) -> str:
        return (self.root / relative_path).read_text(encoding="utf-8")

    def eval_texts(self, max_chars_per_file: int | None = None) -> dict[str, str]:
        """Held-out texts; with ``max_chars_per_file`` each is cut after the last whole line within that size."""
        return {path: head_lines(self.read(path), max_chars_per_file) for path in self.eval_files}


def head_lines(text: str, max_chars: int | None) -> str:
    """The longest prefix of ``text`` made of whole lines and at most ``max_chars`` characters long."""
    if max_chars is None or len(text) <= max_chars:
        return text
    cut = text.rfind("\n", 0, max_chars)
    return text[: cut + 1] if cut >= 0 else text[:max_chars]


def stdlib_root() -> Path:
    """Directory of the running interpreter's pure-Python standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def _excluded(parts: Sequence[str]) -> bool:
    return any(part in EXCLUDED_DIRS or part.startswith("config-") for part in parts)


def list_source_files(root: str | os.PathLike, min_bytes: int = 2_000, max_bytes: int = 60_000) -> list[str]:
    """Relative paths of ``.py`` files under ``root`` that are UTF-8 library code of a useful size, sorted.

    The size bounds drop stubs (too little context) and generated tables (not representative code).
    """
    root = Path(root)
    found = []
    for path in root.rglob("*.py"):
        relative = path.relative_to(root)
        if _excluded(relative.parts[:-1]) or not path.is_file():
            continue
        size = path.stat().st_size
        if not min_bytes <= size <= max_bytes:
            continue
        try:
            path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        found.append(relative.as_posix())
    return sorted(found)


def file_bucket(relative_path: str, seed: int = 0) -> int:
    """A stable pseudo-random number in [0, 10000) for a file path (CRC32, same on every platform)."""
    return zlib.crc32(f"{seed}:{relative_path}".encode()) % 10_000


def split_files(
    files: Sequence[str], num_eval_files: int, num_train_files: int | None = None, seed: int = 0
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Order files by their hash bucket; the first ``num_eval_files`` are held out, the next ones train.

    The two sets are disjoint by construction; changing ``num_train_files`` never changes the held-out set.
    """
    if num_eval_files < 1:
        raise ValueError(f"num_eval_files must be >= 1, got {num_eval_files}")
    ordered = sorted(dict.fromkeys(files), key=lambda path: (file_bucket(path, seed), path))
    if len(ordered) <= num_eval_files:
        raise ValueError(f"only {len(ordered)} source files: cannot hold out {num_eval_files} and still train")
    eval_files = ordered[:num_eval_files]
    rest = ordered[num_eval_files:]
    train_files = rest if num_train_files is None else rest[:num_train_files]
    return tuple(train_files), tuple(eval_files)


def stdlib_code_split(
    num_eval_files: int,
    num_train_files: int | None = None,
    seed: int = 0,
    root: str | os.PathLike | None = None,
    min_bytes: int = 2_000,
    max_bytes: int = 60_000,
) -> CodeSplit:
    """Held-out and training files of the standard library (or any source tree given as ``root``)."""
    root = Path(root) if root is not None else stdlib_root()
    files = list_source_files(root, min_bytes=min_bytes, max_bytes=max_bytes)
    if not files:
        raise FileNotFoundError(f"no Python source files found under {root}")
    train_files, eval_files = split_files(files, num_eval_files, num_train_files, seed)
    return CodeSplit(root, train_files, eval_files)


def token_chunks(ids: Sequence[int], max_length: int, min_length: int) -> list[list[int]]:
    """Consecutive non-overlapping pieces of ``max_length`` ids; a last piece shorter than ``min_length`` is dropped."""
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    pieces = [list(ids[start : start + max_length]) for start in range(0, len(ids), max_length)]
    return [piece for piece in pieces if len(piece) >= min_length]


def tokenized_training_rows(
    split: CodeSplit,
    tokenizer: Any,
    max_length: int,
    num_rows: int,
    min_length: int = 32,
    max_chunks_per_file: int | None = None,
) -> list[list[int]]:
    """``num_rows`` token chunks from the training files, in file order (up to ``max_chunks_per_file`` from the
    start of each file, then the next file).

    Pre-tokenized rows let the trainer see exactly these tokens: no truncation silently discarding file ends.
    Capping the chunks per file spreads a small budget over more files (more varied code).
    """
    min_length = min(min_length, max_length)
    rows: list[list[int]] = []
    for path in split.train_files:
        ids = tokenizer(split.read(path), add_special_tokens=False)["input_ids"]
        rows.extend(token_chunks(ids, max_length, min_length)[:max_chunks_per_file])
        if len(rows) >= num_rows:
            return rows[:num_rows]
    raise ValueError(
        f"the {len(split.train_files)} training files give only {len(rows)} chunks of {max_length} tokens; "
        f"{num_rows} were asked for: lower the number of steps/batch size or allow more training files"
    )


def training_dataset(rows: Sequence[Sequence[int]]) -> Any:
    """A `datasets.Dataset` of pre-tokenized rows (``input_ids``), ready for `SFTTrainer`/`KDTrainer`."""
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": [list(row) for row in rows]})
