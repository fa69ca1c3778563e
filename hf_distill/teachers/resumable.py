"""Resumable, sharded processing of a dataset into Parquet shards.

Long teacher jobs (generating completions, precomputing logits) must survive being killed: every
fixed-size shard of the input is processed and written atomically (temporary file + rename), a rerun
skips finished shards, and the final dataset is assembled from the shards in input order. Each shard's
file name carries a hash of its input rows, so a rerun on changed input fails loudly instead of mixing
results from two different inputs.

Layout of ``out_dir``::

    metadata.json                      # caller's metadata + a "sharding" block
    shards/shard-00000-<hash>.parquet  # one file per finished input shard
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from datasets import Dataset, concatenate_datasets
from datasets.fingerprint import Hasher
from datasets.table import InMemoryTable
from tqdm.auto import tqdm

Columns = dict[str, list]
METADATA_FILE = "metadata.json"
SHARD_DIR = "shards"
_SHARD_RE = re.compile(r"^shard-(\d{5,})-([0-9a-f]{16})\.parquet$")


def run_sharded(
    rows: Dataset | Sequence[Mapping[str, Any]],
    shard_size: int,
    out_dir: str | os.PathLike,
    process_fn: Callable[[Columns], Mapping[str, Sequence]],
    metadata: Mapping[str, Any] | None = None,
    progress: bool = True,
    desc: str = "shards",
) -> Dataset:
    """Apply ``process_fn`` to ``rows`` shard by shard, resuming from whatever ``out_dir`` holds.

    ``process_fn`` receives one shard as a dict of column lists (like ``Dataset.map(batched=True)``)
    and returns a dict of equal-length column lists; it may return more or fewer rows than it got (e.g.
    n samples per prompt, or a filter). ``metadata`` (JSON-serialisable) is stored in
    ``metadata.json``; rerunning into the same ``out_dir`` with different metadata, shard size or input
    raises instead of silently mixing runs. Returns the assembled dataset, shards in input order.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    num_rows = len(rows)
    num_shards = math.ceil(num_rows / shard_size)
    out = Path(out_dir)
    shard_dir = out / SHARD_DIR
    shard_dir.mkdir(parents=True, exist_ok=True)
    user_meta = _json_roundtrip(dict(metadata or {}))
    if "sharding" in user_meta:
        raise ValueError("metadata key 'sharding' is reserved for run_sharded's own bookkeeping")
    sharding = {"shard_size": shard_size, "num_input_rows": num_rows, "num_shards": num_shards}
    _check_or_init_metadata(out, user_meta, sharding)
    _remove_stale_temp_files(shard_dir)
    existing = _existing_shards(shard_dir)

    bar = tqdm(total=num_rows, unit="row", desc=desc, disable=not progress)
    try:
        for index in range(num_shards):
            start, stop = index * shard_size, min((index + 1) * shard_size, num_rows)
            batch = _slice_columns(rows, start, stop)
            digest = Hasher.hash(batch)[:16]
            target = shard_dir / f"shard-{index:05d}-{digest}.parquet"
            found = existing.get(index)
            if found is not None and found != target.name:
                raise ValueError(
                    f"{shard_dir / found} was computed from different input rows than shard {index} of "
                    "this run; use a fresh out_dir (or delete it) when the input changes"
                )
            if found is None:
                columns = _validate_output(process_fn(batch), index)
                _write_parquet_atomically(columns, target)
            bar.update(stop - start)
    finally:
        bar.close()
    sharding["complete"] = True
    _write_json_atomically(out / METADATA_FILE, {**user_meta, "sharding": sharding})
    return load_sharded(out)


def load_sharded(out_dir: str | os.PathLike) -> Dataset:
    """Assemble a finished ``run_sharded`` output (shards in input order) into one dataset."""
    out = Path(out_dir)
    meta = read_metadata(out)
    if not meta.get("sharding", {}).get("complete"):
        raise ValueError(f"{out} holds an unfinished run; rerun run_sharded to complete it")
    shard_dir = out / SHARD_DIR
    files = [shard_dir / name for _, name in sorted(_existing_shards(shard_dir).items())]
    if len(files) != meta["sharding"]["num_shards"]:
        raise ValueError(f"{shard_dir} has {len(files)} shards, metadata expects {meta['sharding']['num_shards']}")
    # Read with pyarrow (no datasets cache dir, no per-file progress bars); the datasets features stored in
    # each file's schema metadata are restored by the Dataset constructor.
    parts = [Dataset(InMemoryTable(pq.read_table(f))) for f in files]
    parts = [p for p in parts if len(p) > 0]
    if not parts:
        return Dataset.from_dict({})
    return concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def read_metadata(out_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``metadata.json`` of a sharded run (caller metadata plus the ``sharding`` block)."""
    path = Path(out_dir) / METADATA_FILE
    if not path.exists():
        raise FileNotFoundError(f"no {METADATA_FILE} in {out_dir}; was it written by run_sharded?")
    return json.loads(path.read_text())


def _check_or_init_metadata(out: Path, user_meta: dict, sharding: dict) -> None:
    path = out / METADATA_FILE
    if path.exists():
        stored = json.loads(path.read_text())
        stored_sharding = stored.pop("sharding", {})
        if stored != user_meta:
            raise ValueError(
                f"{path} was written with different metadata/settings; use a fresh out_dir.\n"
                f"stored: {stored}\nnow:    {user_meta}"
            )
        for key in ("shard_size", "num_input_rows"):
            if stored_sharding.get(key) != sharding[key]:
                raise ValueError(
                    f"{path}: {key} was {stored_sharding.get(key)}, now {sharding[key]}; use a fresh out_dir"
                )
        return
    _write_json_atomically(path, {**user_meta, "sharding": {**sharding, "complete": False}})


def _slice_columns(rows: Dataset | Sequence[Mapping[str, Any]], start: int, stop: int) -> Columns:
    if isinstance(rows, Dataset):
        return dict(rows[start:stop])
    chunk = list(rows[start:stop])
    names = list(chunk[0].keys()) if chunk else []
    for row in chunk:
        if list(row.keys()) != names:
            raise ValueError(f"rows must all have the same keys; got {list(row.keys())} vs {names}")
    return {name: [row[name] for row in chunk] for name in names}


def _validate_output(columns: Mapping[str, Sequence], index: int) -> Columns:
    if not isinstance(columns, Mapping):
        raise TypeError(f"process_fn must return a dict of column lists, got {type(columns).__name__}")
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"process_fn returned columns of different lengths for shard {index}: {lengths}")
    return {name: list(values) for name, values in columns.items()}


def _write_parquet_atomically(columns: Columns, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    # datasets infers the Arrow schema (and stores its features); pyarrow writes without a progress bar.
    pq.write_table(Dataset.from_dict(columns).data.table, tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, target)


def _write_json_atomically(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _existing_shards(shard_dir: Path) -> dict[int, str]:
    found: dict[int, str] = {}
    for entry in shard_dir.iterdir():
        match = _SHARD_RE.match(entry.name)
        if match:
            index = int(match.group(1))
            if index in found:
                raise ValueError(f"two files for shard {index} in {shard_dir}: {found[index]}, {entry.name}")
            found[index] = entry.name
    return found


def _remove_stale_temp_files(shard_dir: Path) -> None:
    for entry in shard_dir.glob(".*.tmp"):
        entry.unlink(missing_ok=True)


def _json_roundtrip(value: dict) -> dict:
    try:
        return json.loads(json.dumps(value, sort_keys=True))
    except TypeError as err:
        raise TypeError(f"metadata must be JSON-serialisable: {err}") from None
