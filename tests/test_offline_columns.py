"""Teacher columns: every capture/training mismatch is refused with a clear error; collation pads the
columns exactly where the wrapped collator put the tokens; remove_unused_columns keeps them."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import kd_args, make_tiny_llama, make_word_tokenizer
from test_offline_precompute import token_rows

from hf_distill import KDTrainer
from hf_distill.teachers.columns import (
    SAMPLE_COUNTS,
    SAMPLE_IDS,
    TOPK_IDS,
    TOPK_LOGPROBS,
    TOPK_TAIL,
    OfflineSignalCollator,
    TeacherSignalError,
    attach_metadata,
    check_compatible,
    read_attached_metadata,
    validate_columns,
)
from hf_distill.teachers.precompute import PrecomputeConfig, precompute_teacher_signal


@pytest.fixture(scope="module")
def topk_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("topk")
    config = PrecomputeConfig(mode="topk", k=4, batch_size=4)
    return precompute_teacher_signal(
        make_tiny_llama(seed=1), make_word_tokenizer(), token_rows(8), out, config, progress=False
    )


@pytest.fixture(scope="module")
def sampled_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("sampled")
    config = PrecomputeConfig(mode="sampled", num_samples=16, batch_size=4)
    return precompute_teacher_signal(
        make_tiny_llama(seed=1), make_word_tokenizer(), token_rows(8), out, config, progress=False
    )


def _edit_row(dataset, index, column, edit):
    """A copy of the dataset whose `column` in row `index` is replaced by edit(old value)."""

    def change(row, i):
        return {column: edit(row[column])} if i == index else {column: row[column]}

    return dataset.map(change, with_indices=True, features=dataset.features)


def test_valid_columns_pass(topk_data, sampled_data):
    validate_columns(topk_data, read_attached_metadata(topk_data))
    validate_columns(sampled_data, read_attached_metadata(sampled_data))


def test_missing_columns_are_named(topk_data):
    broken = topk_data.remove_columns([TOPK_TAIL])
    with pytest.raises(TeacherSignalError, match="lacks the columns \\['teacher_tail_mass'\\]"):
        validate_columns(broken, read_attached_metadata(topk_data))


def test_columns_misaligned_with_input_ids(topk_data):
    broken = _edit_row(topk_data, 3, "input_ids", lambda ids: ids + [5])
    with pytest.raises(TeacherSignalError, match="misaligned with input_ids in row 3"):
        validate_columns(broken, read_attached_metadata(topk_data))


def test_wrong_k_is_a_shape_error(topk_data):
    meta = dataclasses.replace(read_attached_metadata(topk_data), k=5)
    with pytest.raises(TeacherSignalError, match="the metadata says k=5"):
        validate_columns(topk_data, meta)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_values(topk_data, bad):
    def poison(rows):
        rows = [list(r) for r in rows]
        rows[1][2] = bad
        return rows

    broken = _edit_row(topk_data, 2, TOPK_LOGPROBS, poison)
    with pytest.raises(TeacherSignalError, match="NaN/Inf"):
        validate_columns(broken, read_attached_metadata(topk_data))


def test_ids_outside_vocabulary(topk_data):
    meta = dataclasses.replace(read_attached_metadata(topk_data), vocab_size=10)
    with pytest.raises(TeacherSignalError, match="outside \\[0, 10\\)"):
        validate_columns(topk_data, meta)


def test_sampled_counts_must_sum_to_num_samples(sampled_data):
    broken = _edit_row(sampled_data, 0, SAMPLE_COUNTS, lambda rows: [rows[0][:-1] + [rows[0][-1] + 1]] + rows[1:])
    with pytest.raises(TeacherSignalError, match="sum to num_samples=16"):
        validate_columns(broken, read_attached_metadata(sampled_data))


def test_compatibility_checks(topk_data):
    meta = read_attached_metadata(topk_data)
    check_compatible(meta, tokenizer=make_word_tokenizer(), student_vocab_size=64, temperature=1.0)
    with pytest.raises(TeacherSignalError, match="different tokenizer"):
        check_compatible(meta, tokenizer=make_word_tokenizer(prefix="v"))
    with pytest.raises(TeacherSignalError, match="only 32 logits"):
        check_compatible(meta, student_vocab_size=32)
    with pytest.raises(TeacherSignalError, match="captured at temperature 1.0 but training uses temperature 2.0"):
        check_compatible(meta, temperature=2.0)
    with pytest.raises(TeacherSignalError, match="forward_kl"):
        check_compatible(meta, divergence="jsd")


def test_trainer_refuses_mismatches_before_training(tmp_path, topk_data):
    def build(dataset, tokenizer=None, **overrides):
        return KDTrainer(
            model=make_tiny_llama(seed=0),
            args=kd_args(tmp_path, **{"temperature": 1.0, **overrides}),
            train_dataset=dataset,
            processing_class=tokenizer or make_word_tokenizer(),
        )

    with pytest.raises(TeacherSignalError, match="different tokenizer"):
        build(topk_data, tokenizer=make_word_tokenizer(prefix="v"))
    with pytest.raises(TeacherSignalError, match="captured at temperature"):
        build(topk_data, temperature=2.0)
    with pytest.raises(TeacherSignalError, match="temperature_schedule='linear'"):
        build(topk_data, temperature_schedule="linear", temperature_end=2.0)
    # SFT preparation truncates input_ids to max_length but cannot know the teacher columns.
    with pytest.raises(TeacherSignalError, match="misaligned"):
        build(topk_data, max_length=5)
    unlabelled = topk_data.map(lambda row: row, features=topk_data.features)
    unlabelled.info.description = ""
    with pytest.raises(TeacherSignalError, match="no teacher-signal metadata"):
        build(unlabelled)


def test_remove_unused_columns_keeps_teacher_columns(tmp_path, topk_data):
    trainer = KDTrainer(
        model=make_tiny_llama(seed=0),
        args=kd_args(tmp_path, temperature=1.0, remove_unused_columns=True),
        train_dataset=topk_data.add_column("junk", ["x"] * len(topk_data)),
        processing_class=make_word_tokenizer(),
    )
    batch = next(iter(trainer.get_train_dataloader()))
    assert {TOPK_IDS, TOPK_LOGPROBS, TOPK_TAIL} <= set(batch)
    assert "junk" not in batch
    assert batch[TOPK_IDS].shape[:2] == batch["input_ids"].shape


class _PadCollator:
    """Pads input_ids on one side; optionally truncates, to check the wrapper notices."""

    def __init__(self, side: str, truncate: int | None = None):
        self.side, self.truncate = side, truncate

    def __call__(self, features):
        rows = [list(f["input_ids"])[: self.truncate] for f in features]
        width = max(map(len, rows)) + 2
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        for i, row in enumerate(rows):
            if self.side == "right":
                ids[i, : len(row)] = torch.tensor(row)
            else:
                ids[i, width - len(row) :] = torch.tensor(row)
        return {"input_ids": ids}


@pytest.mark.parametrize("side", ["right", "left"])
def test_topk_collation_places_columns_with_their_tokens(topk_data, side):
    meta = read_attached_metadata(topk_data)
    features = [topk_data[i] for i in range(4)]
    batch = OfflineSignalCollator(_PadCollator(side), meta)(features)
    width = batch["input_ids"].shape[1]
    for i, feature in enumerate(features):
        n = len(feature["input_ids"])
        span = slice(0, n) if side == "right" else slice(width - n, width)
        padding = torch.ones(width, dtype=torch.bool)
        padding[span] = False
        assert batch[TOPK_IDS][i, span].tolist() == feature[TOPK_IDS]
        torch.testing.assert_close(batch[TOPK_LOGPROBS][i, span], torch.tensor(feature[TOPK_LOGPROBS]))
        torch.testing.assert_close(batch[TOPK_TAIL][i, span], torch.tensor(feature[TOPK_TAIL]))
        assert batch[TOPK_IDS][i, padding].abs().sum() == 0


def test_sampled_collation_pads_distinct_ids_with_zero_counts(sampled_data):
    meta = read_attached_metadata(sampled_data)
    features = [sampled_data.with_format("numpy")[i] for i in range(3)]
    batch = OfflineSignalCollator(_PadCollator("right"), meta)(features)
    assert batch[SAMPLE_IDS].shape == batch[SAMPLE_COUNTS].shape
    for i, feature in enumerate(features):
        for position, (ids, counts) in enumerate(zip(feature[SAMPLE_IDS], feature[SAMPLE_COUNTS])):
            row_counts = batch[SAMPLE_COUNTS][i, position]
            assert batch[SAMPLE_IDS][i, position, : len(ids)].tolist() == ids.tolist()
            assert row_counts[: len(counts)].tolist() == counts.tolist()
            assert int(row_counts[len(counts) :].sum()) == 0
        assert int(batch[SAMPLE_COUNTS][i, len(feature["input_ids"]) :].sum()) == 0


def test_collator_refuses_truncated_sequences(topk_data):
    meta = read_attached_metadata(topk_data)
    long_rows = [topk_data[i] for i in range(len(topk_data)) if len(topk_data[i]["input_ids"]) > 4][:2]
    with pytest.raises(TeacherSignalError, match="changed a sequence beyond padding"):
        OfflineSignalCollator(_PadCollator("right", truncate=4), meta)(long_rows)


def test_metadata_survives_dataset_transformations(topk_data, tmp_path):
    from datasets import load_from_disk

    meta = read_attached_metadata(topk_data)
    moved = (
        topk_data.shuffle(seed=0)
        .filter(lambda row: len(row["input_ids"]) > 3)
        .select_columns(["input_ids", TOPK_IDS, TOPK_LOGPROBS, TOPK_TAIL])
    )
    moved.save_to_disk(str(tmp_path / "saved"))
    assert read_attached_metadata(load_from_disk(str(tmp_path / "saved"))) == meta
    assert read_attached_metadata(attach_metadata(token_rows(2), meta)) == meta
