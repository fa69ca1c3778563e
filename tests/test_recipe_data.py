"""The standard-library code corpus: which files count, how held-out files are chosen, how rows are cut."""

from __future__ import annotations

import zlib

import pytest

from hf_distill.recipe.stdlib_corpus import (
    head_lines,
    list_source_files,
    split_files,
    stdlib_code_split,
    token_chunks,
    tokenized_training_rows,
)


def _write(path, size, text="x = 1\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((text * (size // len(text) + 1))[:size], encoding="utf-8")


@pytest.fixture
def source_tree(tmp_path):
    for i in range(12):
        _write(tmp_path / f"mod{i}.py", 3000, text=f"value_{i} = {i}\n")
    _write(tmp_path / "pkg" / "inner.py", 3000)
    _write(tmp_path / "tiny.py", 100)  # too small
    _write(tmp_path / "huge.py", 100_000)  # generated-table size
    _write(tmp_path / "test" / "test_mod.py", 3000)
    _write(tmp_path / "site-packages" / "thirdparty.py", 3000)
    _write(tmp_path / "notes.txt", 3000)
    (tmp_path / "latin1.py").write_bytes(b"s = '\xe9'\n" * 400)  # not UTF-8
    return tmp_path


def test_only_library_code_of_a_useful_size_is_listed(source_tree):
    files = list_source_files(source_tree)
    assert files == sorted([f"mod{i}.py" for i in range(12)] + ["pkg/inner.py"])


def test_held_out_files_are_never_training_files_and_follow_the_path_hash(source_tree):
    files = list_source_files(source_tree)
    train, held_out = split_files(files, num_eval_files=4)
    assert len(held_out) == 4 and len(train) == len(files) - 4
    assert not set(train) & set(held_out)
    assert set(train) | set(held_out) == set(files)
    # Independent reference: the 4 files with the smallest CRC32 bucket of "0:<path>".
    by_hash = sorted(files, key=lambda p: (zlib.crc32(f"0:{p}".encode()) % 10_000, p))
    assert list(held_out) == by_hash[:4]
    # Asking for fewer training files never changes which files are held out.
    fewer_train, same_held_out = split_files(files, num_eval_files=4, num_train_files=2)
    assert same_held_out == held_out and fewer_train == train[:2]
    # A different seed gives a different split (with 13 files and 4 held out, almost surely).
    assert split_files(files, num_eval_files=4, seed=1)[1] != held_out


def test_split_refuses_to_hold_out_everything(source_tree):
    files = list_source_files(source_tree)
    with pytest.raises(ValueError, match="cannot hold out"):
        split_files(files, num_eval_files=len(files))
    with pytest.raises(ValueError, match="num_eval_files"):
        split_files(files, num_eval_files=0)


def test_code_split_reads_held_out_texts(source_tree):
    split = stdlib_code_split(num_eval_files=3, root=source_tree)
    texts = split.eval_texts()
    assert list(texts) == list(split.eval_files)
    for path, text in texts.items():
        assert text == (source_tree / path).read_text()
    cut = split.eval_texts(max_chars_per_file=100)
    assert all(len(text) <= 100 and text.endswith("\n") for text in cut.values())


def test_head_lines_keeps_whole_lines():
    assert head_lines("ab\ncd\nef\n", 7) == "ab\ncd\n"
    assert head_lines("ab\ncd\n", 100) == "ab\ncd\n"
    assert head_lines("abcdef", 3) == "abc"


def test_token_chunks_cut_without_overlap_and_drop_short_tails():
    ids = list(range(10))
    assert token_chunks(ids, 4, min_length=1) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert token_chunks(ids, 4, min_length=3) == [[0, 1, 2, 3], [4, 5, 6, 7]]


class _CharTokenizer:
    """One id per character: makes expected chunks easy to write down."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


def test_training_rows_come_only_from_training_files(source_tree):
    split = stdlib_code_split(num_eval_files=4, root=source_tree)
    rows = tokenized_training_rows(split, _CharTokenizer(), max_length=500, num_rows=8, max_chunks_per_file=2)
    assert len(rows) == 8 and all(len(row) == 500 for row in rows)
    # Two chunks per file, files in split order: row 2k is the start of training file k.
    for k in range(4):
        assert "".join(map(chr, rows[2 * k])) == split.read(split.train_files[k])[:500]
    held_out_text = {split.read(path)[:500] for path in split.eval_files}
    assert not {"".join(map(chr, row)) for row in rows} & held_out_text
    with pytest.raises(ValueError, match="were asked for"):
        tokenized_training_rows(split, _CharTokenizer(), max_length=500, num_rows=10_000)
