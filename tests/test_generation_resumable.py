"""run_sharded: shards are written once, reruns resume, output order follows the input, mixing runs is refused."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset

from hf_distill.teachers.resumable import load_sharded, read_metadata, run_sharded


def _rows(n: int) -> list[dict]:
    return [{"x": i, "name": f"row{i}"} for i in range(n)]


def _duplicate_odd(batch: dict[str, list]) -> dict[str, list]:
    """A process_fn whose output row count differs from its input: odd x appear twice."""
    out = {"x": [], "double": []}
    for x in batch["x"]:
        for _ in range(2 if x % 2 else 1):
            out["x"].append(x)
            out["double"].append(2 * x)
    return out


def _expected_duplicate_odd(n: int) -> list[int]:
    return [x for x in range(n) for _ in range(2 if x % 2 else 1)]


def test_output_follows_input_order_across_shards(tmp_path):
    result = run_sharded(_rows(10), 3, tmp_path, _duplicate_odd, progress=False)
    assert result["x"] == _expected_duplicate_odd(10)
    assert result["double"] == [2 * x for x in _expected_duplicate_odd(10)]
    assert len(list((tmp_path / "shards").glob("*.parquet"))) == 4  # ceil(10 / 3)


def test_accepts_a_datasets_dataset(tmp_path):
    ds = Dataset.from_list(_rows(5))
    result = run_sharded(ds, 2, tmp_path, lambda b: {"name": b["name"]}, progress=False)
    assert result["name"] == [f"row{i}" for i in range(5)]


def test_interrupted_run_resumes_without_loss_or_duplicates(tmp_path):
    calls: list[list[int]] = []

    def flaky(batch):
        calls.append(list(batch["x"]))
        if batch["x"][0] == 6:  # dies in the middle of the third shard
            raise KeyboardInterrupt
        return _duplicate_odd(batch)

    with pytest.raises(KeyboardInterrupt):
        run_sharded(_rows(10), 3, tmp_path, flaky, progress=False)
    assert read_metadata(tmp_path)["sharding"]["complete"] is False
    with pytest.raises(ValueError, match="unfinished"):
        load_sharded(tmp_path)

    calls.clear()
    result = run_sharded(_rows(10), 3, tmp_path, _recording(calls), progress=False)
    assert calls == [[6, 7, 8], [9]]  # finished shards were not recomputed
    assert result["x"] == _expected_duplicate_odd(10)

    calls.clear()
    again = run_sharded(_rows(10), 3, tmp_path, _recording(calls), progress=False)
    assert calls == []
    assert again["x"] == result["x"]
    assert load_sharded(tmp_path)["x"] == result["x"]


def _recording(calls):
    def fn(batch):
        calls.append(list(batch["x"]))
        return _duplicate_odd(batch)

    return fn


def test_stale_temp_files_are_removed_and_never_read(tmp_path):
    run_sharded(_rows(4), 2, tmp_path, _duplicate_odd, progress=False)
    stale = tmp_path / "shards" / ".shard-00009-0000000000000000.parquet.123.tmp"
    stale.write_bytes(b"half a parquet file")
    result = run_sharded(_rows(4), 2, tmp_path, _duplicate_odd, progress=False)
    assert not stale.exists()
    assert result["x"] == _expected_duplicate_odd(4)


def test_metadata_is_stored_and_a_different_setting_is_refused(tmp_path):
    run_sharded(_rows(4), 2, tmp_path, _duplicate_odd, metadata={"teacher": "a", "t": 1.0}, progress=False)
    stored = json.loads((tmp_path / "metadata.json").read_text())
    assert stored["teacher"] == "a" and stored["t"] == 1.0
    assert stored["sharding"] == {"shard_size": 2, "num_input_rows": 4, "num_shards": 2, "complete": True}
    with pytest.raises(ValueError, match="different metadata"):
        run_sharded(_rows(4), 2, tmp_path, _duplicate_odd, metadata={"teacher": "b", "t": 1.0}, progress=False)
    with pytest.raises(ValueError, match="shard_size"):
        run_sharded(_rows(4), 3, tmp_path, _duplicate_odd, metadata={"teacher": "a", "t": 1.0}, progress=False)


def test_changed_input_rows_are_refused(tmp_path):
    run_sharded(_rows(4), 2, tmp_path, _duplicate_odd, progress=False)
    changed = _rows(4)
    changed[3]["name"] = "edited"
    with pytest.raises(ValueError, match="different input rows"):
        run_sharded(changed, 2, tmp_path, _duplicate_odd, progress=False)


def test_shards_that_produce_no_rows(tmp_path):
    def keep_big(batch):
        return {"x": [x for x in batch["x"] if x >= 4]}

    result = run_sharded(_rows(6), 2, tmp_path, keep_big, progress=False)
    assert result["x"] == [4, 5]
    nothing = run_sharded(_rows(2), 2, tmp_path / "none", keep_big, progress=False)
    assert len(nothing) == 0


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="shard_size"):
        run_sharded(_rows(2), 0, tmp_path, _duplicate_odd)
    with pytest.raises(ValueError, match="reserved"):
        run_sharded(_rows(2), 1, tmp_path, _duplicate_odd, metadata={"sharding": 1})
    with pytest.raises(TypeError, match="JSON"):
        run_sharded(_rows(2), 1, tmp_path / "j", _duplicate_odd, metadata={"f": object()})
    with pytest.raises(ValueError, match="different lengths"):
        run_sharded(_rows(2), 1, tmp_path / "l", lambda b: {"a": [1], "b": [1, 2]}, progress=False)
    with pytest.raises(FileNotFoundError):
        load_sharded(tmp_path / "missing")
