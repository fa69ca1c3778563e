"""Precomputing teacher columns: values vs an unbatched float64 teacher, compact dtypes, metadata, and
kill-and-resume giving the same dataset as an uninterrupted run (a real subprocess is killed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_llama, make_word_tokenizer
from datasets import Dataset

from hf_distill.teachers.columns import (
    SAMPLE_COUNTS,
    SAMPLE_ENTROPY,
    SAMPLE_IDS,
    TOPK_IDS,
    TOPK_LOGPROBS,
    TOPK_TAIL,
    TeacherSignalMetadata,
    read_attached_metadata,
    tokenizer_fingerprint,
)
from hf_distill.teachers.precompute import (
    PrecomputeConfig,
    load_teacher_signal,
    precompute_teacher_signal,
    sampled_rows,
)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "precompute_logits.py"


def token_rows(num_rows=10, vocab=64, seed=0, min_len=3, max_len=12):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (num_rows,), generator=gen)
    return Dataset.from_dict(
        {"input_ids": [torch.randint(3, vocab, (int(n),), generator=gen).tolist() for n in lengths]}
    )


def teacher_log_probs(teacher, tokens, temperature):
    """Float64 log-softmax of one unpadded sequence, straight from the model."""
    with torch.no_grad():
        logits = teacher(input_ids=torch.tensor([tokens])).logits[0].double()
    return torch.log_softmax(logits / temperature, -1)


def test_topk_columns_match_unbatched_teacher_and_use_compact_dtypes(tmp_path):
    teacher, tokenizer, rows = make_tiny_llama(seed=1), make_word_tokenizer(), token_rows()
    config = PrecomputeConfig(mode="topk", k=5, temperature=1.5, batch_size=3, shard_size=4, max_length=10)
    out = precompute_teacher_signal(teacher, tokenizer, rows, tmp_path, config, teacher_name="tiny", progress=False)

    assert out.features[TOPK_IDS].feature.feature.dtype == "uint16"
    assert out.features[TOPK_LOGPROBS].feature.feature.dtype == "float16"
    assert out.features[TOPK_TAIL].feature.dtype == "float16"
    assert out.features[TOPK_IDS].feature.length == 5
    for index in range(len(rows)):
        tokens = rows[index]["input_ids"][:10]
        row = out[index]
        assert row["input_ids"] == tokens
        log_p = teacher_log_probs(teacher, tokens, 1.5)
        expected_lp, expected_ids = log_p.topk(5, -1)
        got_ids = torch.tensor(row[TOPK_IDS])
        got_lp = torch.tensor(row[TOPK_LOGPROBS], dtype=torch.float64)
        # float16 storage: ~1e-3 relative; ids may swap only between near-ties.
        torch.testing.assert_close(got_lp, expected_lp, rtol=2e-3, atol=2e-3)
        assert (got_ids == expected_ids).float().mean() > 0.95
        expected_tail = 1 - expected_lp.exp().sum(-1)
        torch.testing.assert_close(
            torch.tensor(row[TOPK_TAIL], dtype=torch.float64), expected_tail, rtol=2e-3, atol=1e-4
        )

    meta = read_attached_metadata(out)
    assert meta == TeacherSignalMetadata(
        mode="topk",
        teacher_name="tiny",
        teacher_revision=None,
        tokenizer_hash=tokenizer_fingerprint(tokenizer),
        vocab_size=64,
        temperature=1.5,
        max_length=10,
        k=5,
        value_dtype="float16",
    )
    assert read_attached_metadata(load_teacher_signal(tmp_path)) == meta


def test_full_vocabulary_float32_columns_are_exact(tmp_path):
    teacher, tokenizer, rows = make_tiny_llama(seed=2), make_word_tokenizer(), token_rows(num_rows=4)
    config = PrecomputeConfig(mode="topk", k=64, value_dtype="float32", batch_size=4)
    out = precompute_teacher_signal(teacher, tokenizer, rows, tmp_path, config, progress=False)
    for index in range(len(rows)):
        log_p = teacher_log_probs(teacher, rows[index]["input_ids"], 1.0)
        ids = torch.tensor(out[index][TOPK_IDS]).long()
        stored = torch.tensor(out[index][TOPK_LOGPROBS], dtype=torch.float64)
        torch.testing.assert_close(stored, log_p.gather(-1, ids), rtol=1e-5, atol=1e-5)
        assert all(value == 0.0 for value in out[index][TOPK_TAIL])


def test_sampled_columns_are_distinct_counts_summing_to_num_samples(tmp_path):
    teacher, tokenizer, rows = make_tiny_llama(seed=3), make_word_tokenizer(), token_rows(num_rows=6)
    config = PrecomputeConfig(mode="sampled", num_samples=48, temperature=2.0, batch_size=4, shard_size=4)
    out = precompute_teacher_signal(teacher, tokenizer, rows, tmp_path, config, progress=False)
    assert out.features[SAMPLE_IDS].feature.feature.dtype == "uint16"
    assert out.features[SAMPLE_COUNTS].feature.feature.dtype == "uint8"
    for index in range(len(rows)):
        row = out[index]
        log_p = teacher_log_probs(teacher, row["input_ids"], 2.0)
        entropy = -(log_p.exp() * log_p).sum(-1)
        torch.testing.assert_close(
            torch.tensor(row[SAMPLE_ENTROPY], dtype=torch.float64), entropy, rtol=2e-3, atol=2e-3
        )
        for ids, counts in zip(row[SAMPLE_IDS], row[SAMPLE_COUNTS]):
            assert sum(counts) == 48 and min(counts) >= 1
            assert ids == sorted(set(ids))


def test_sampled_frequencies_follow_teacher_probabilities():
    """With many draws each count / N is within 5 binomial standard deviations of the teacher probability."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 40, generator=gen) * 2
    meta = TeacherSignalMetadata(
        mode="sampled", teacher_name="t", teacher_revision=None, tokenizer_hash="h", vocab_size=40,
        temperature=1.3, max_length=None, num_samples=20000, seed=0, value_dtype="float32",
    )  # fmt: skip
    rows = sampled_rows(logits, meta, torch.Generator().manual_seed(1))
    p = torch.softmax(logits.double() / 1.3, -1)
    n = meta.num_samples
    for position in range(3):
        freq = torch.zeros(40, dtype=torch.float64)
        freq[torch.as_tensor(rows[SAMPLE_IDS][position].astype(np.int64))] = torch.as_tensor(
            rows[SAMPLE_COUNTS][position].astype(np.float64)
        )
        freq /= n
        sd = (p[position] * (1 - p[position]) / n).sqrt()
        assert bool(((freq - p[position]).abs() <= 5 * sd + 1e-12).all())


def test_rerun_with_other_settings_is_refused(tmp_path):
    teacher, tokenizer, rows = make_tiny_llama(seed=1), make_word_tokenizer(), token_rows(num_rows=3)
    precompute_teacher_signal(teacher, tokenizer, rows, tmp_path, PrecomputeConfig(k=4), progress=False)
    with pytest.raises(ValueError, match="different metadata"):
        precompute_teacher_signal(teacher, tokenizer, rows, tmp_path, PrecomputeConfig(k=8), progress=False)


# ---- kill and resume ---------------------------------------------------------------------------------------

_SLOW_DRIVER = """
import runpy, sys, time
from transformers import LlamaForCausalLM
forward = LlamaForCausalLM.forward
def slow_forward(self, *args, **kwargs):
    time.sleep(0.25)
    return forward(self, *args, **kwargs)
LlamaForCausalLM.forward = slow_forward
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _script_args(teacher_dir: Path, data_dir: Path, out: Path) -> list[str]:
    return [
        "--teacher", str(teacher_dir), "--dataset", str(data_dir), "--out", str(out), "--mode", "sampled",
        "--num-samples", "32", "--temperature", "1.5", "--batch-size", "2", "--shard-size", "3",
        "--dtype", "float32", "--device", "cpu", "--no-progress",
    ]  # fmt: skip


def test_killed_precompute_resumes_to_the_uninterrupted_dataset(tmp_path):
    teacher_dir, data_dir = tmp_path / "teacher", tmp_path / "data"
    make_tiny_llama(seed=4).save_pretrained(teacher_dir)
    make_word_tokenizer().save_pretrained(teacher_dir)
    token_rows(num_rows=24, seed=5).save_to_disk(str(data_dir))
    killed_out, clean_out = tmp_path / "killed", tmp_path / "clean"
    shard_dir = killed_out / "shards"

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-c", _SLOW_DRIVER, str(SCRIPT), *_script_args(teacher_dir, data_dir, killed_out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 180
    try:
        while len(list(shard_dir.glob("shard-*.parquet"))) < 2:
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "precompute subprocess made no progress"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    finished = {p.name: p.stat().st_mtime_ns for p in shard_dir.glob("shard-*.parquet")}
    assert 2 <= len(finished) < 8, "the run must be interrupted part-way (8 shards in total)"
    with pytest.raises(ValueError, match="unfinished"):
        load_teacher_signal(killed_out)

    from hf_distill.cli import main as hf_distill_cli  # the killed run was the script; resume with the CLI

    assert hf_distill_cli(["precompute", *_script_args(teacher_dir, data_dir, killed_out)]) == 0
    assert hf_distill_cli(["precompute", *_script_args(teacher_dir, data_dir, clean_out)]) == 0

    for name, mtime in finished.items():  # finished shards were not recomputed
        assert (shard_dir / name).stat().st_mtime_ns == mtime
    assert not list(shard_dir.glob(".*.tmp"))
    resumed, clean = load_teacher_signal(killed_out), load_teacher_signal(clean_out)
    assert len(resumed) == len(clean) == 24
    assert resumed.data.table.equals(clean.data.table)
    assert read_attached_metadata(resumed) == read_attached_metadata(clean)


@pytest.mark.parametrize("mode", ["topk", "sampled"])
def test_vocabularies_above_65536_store_three_byte_ids(tmp_path, mode):
    from hf_distill.teachers.columns import OfflineSignalCollator, validate_columns

    vocab = 70_000
    teacher = make_tiny_llama(vocab_size=vocab, hidden_size=16, seed=6)
    with torch.no_grad():
        teacher.lm_head.weight[65_536:] *= 3  # make ids above 16 bits common among the top tokens
    tokenizer = make_word_tokenizer(vocab_size=vocab)
    rows = token_rows(num_rows=4, vocab=vocab, seed=7)
    config = PrecomputeConfig(mode=mode, k=3, num_samples=8, batch_size=2)
    out = precompute_teacher_signal(teacher, tokenizer, rows, tmp_path, config, progress=False)
    meta = read_attached_metadata(out)
    ids_name, high_name = (
        (TOPK_IDS, "teacher_topk_ids_high") if mode == "topk" else (SAMPLE_IDS, "teacher_sample_ids_high")
    )
    assert meta.split_ids and high_name in meta.columns
    assert out.features[ids_name].feature.feature.dtype == "uint16"
    assert out.features[high_name].feature.feature.dtype == "uint8"
    validate_columns(out, meta)

    def collate(features):
        return {"input_ids": torch.nn.utils.rnn.pad_sequence([torch.tensor(f["input_ids"]) for f in features], True)}

    batch = OfflineSignalCollator(collate, meta)([out[i] for i in range(len(out))])
    assert high_name not in batch and batch[ids_name].dtype == torch.int32
    seen_high = 0
    for index in range(len(rows)):
        tokens = rows[index]["input_ids"]
        log_p = teacher_log_probs(teacher, tokens, 1.0)
        ids = batch[ids_name][index, : len(tokens)].long()
        if mode == "topk":
            expected = log_p.topk(3, -1).indices
            assert (ids == expected).float().mean() > 0.95
        else:  # every drawn id is a real token with non-negligible teacher probability
            counts = batch[SAMPLE_COUNTS][index, : len(tokens)]
            drawn = log_p.gather(-1, ids)[counts > 0]
            assert bool((drawn > -20).all())
        seen_high += int((ids >= 65_536).sum())
    assert seen_high > 0
