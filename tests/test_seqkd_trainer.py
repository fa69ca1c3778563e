"""SeqKDTrainer: completion-only loss, the beta mix and the token-KD term equal float64 formulas computed here."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_llama
from datasets import Dataset
from test_generation_tokenizer import char_tokenizer

from hf_distill.trainers.seqkd_config import SeqKDConfig
from hf_distill.trainers.seqkd_trainer import SeqKDTrainer

EOS = 2
ROWS = [
    {"prompt": "abc", "completion": "def", "reference": "xyz!"},
    {"prompt": "hello ", "completion": "world", "reference": "there"},
    {"prompt": "1+1=", "completion": "2", "reference": "two."},
]


def _config(tmp_path, **overrides) -> SeqKDConfig:
    values = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=6,
        report_to=[],
        use_cpu=True,
        learning_rate=1e-2,
        max_steps=1,
        logging_steps=1,
        save_strategy="no",
        seed=0,
    )
    values.update(overrides)
    return SeqKDConfig(**values)


@torch.no_grad()
def _ce_terms(model, prompt: str, completion: str, tok) -> list[torch.Tensor]:
    """Float64 per-token log-distributions over the completion (+ EOS), one unpadded sequence."""
    prompt_ids = tok(prompt)["input_ids"]
    targets = tok(completion, add_special_tokens=False)["input_ids"] + [EOS]
    logits = model(torch.tensor([prompt_ids + targets])).logits[0].double()
    start = len(prompt_ids) - 1
    return [(logits[start + i], t) for i, t in enumerate(targets)]


def _mean_ce(model, pairs, tok) -> float:
    total, count = 0.0, 0
    for prompt, completion in pairs:
        for logits, target in _ce_terms(model, prompt, completion, tok):
            total -= float(logits.log_softmax(-1)[target])
            count += 1
    return total / count


def _one_batch_loss(trainer):
    batch = next(iter(trainer.get_train_dataloader()))
    items = trainer._get_num_items_in_batch([batch], trainer.args.device)
    return trainer.compute_loss(trainer.model, batch, num_items_in_batch=items).detach()


def test_loss_is_cross_entropy_on_completion_tokens_only(tmp_path):
    tok, student = char_tokenizer(), make_tiny_llama(seed=1)
    trainer = SeqKDTrainer(student, _config(tmp_path), train_dataset=Dataset.from_list(ROWS), processing_class=tok)
    reference = _mean_ce(student, [(r["prompt"], r["completion"]) for r in ROWS], tok)
    assert float(_one_batch_loss(trainer)) == pytest.approx(reference, rel=1e-5)
    # Sanity of the reference itself: counting prompt tokens too would give a different number.
    everything = _mean_ce(student, [("", r["prompt"] + r["completion"]) for r in ROWS], tok)
    assert abs(everything - reference) > 1e-3


def test_beta_mix_equals_the_formula(tmp_path):
    tok, student = char_tokenizer(), make_tiny_llama(seed=1)
    beta = 0.3
    trainer = SeqKDTrainer(
        student,
        _config(tmp_path, beta=beta, ground_truth_column="reference"),
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tok,
    )
    seqkd = _mean_ce(student, [(r["prompt"], r["completion"]) for r in ROWS], tok)
    truth = _mean_ce(student, [(r["prompt"], r["reference"]) for r in ROWS], tok)
    assert float(_one_batch_loss(trainer)) == pytest.approx(beta * seqkd + (1 - beta) * truth, rel=1e-5)


def test_beta_mix_is_exact_under_gradient_accumulation(tmp_path):
    """Micro-batches of any composition sum to the formula of the whole accumulated batch."""
    tok, student = char_tokenizer(), make_tiny_llama(seed=1)
    beta = 0.7
    config = _config(
        tmp_path,
        beta=beta,
        ground_truth_column="reference",
        per_device_train_batch_size=2,
        gradient_accumulation_steps=3,
    )
    trainer = SeqKDTrainer(student, config, train_dataset=Dataset.from_list(ROWS), processing_class=tok)
    batches, items = trainer.get_batch_samples(iter(trainer.get_train_dataloader()), 3, trainer.args.device)
    assert len(batches) == 3
    total = sum(float(trainer.compute_loss(trainer.model, b, num_items_in_batch=items).detach()) for b in batches)
    seqkd = _mean_ce(student, [(r["prompt"], r["completion"]) for r in ROWS], tok)
    truth = _mean_ce(student, [(r["prompt"], r["reference"]) for r in ROWS], tok)
    assert total == pytest.approx(beta * seqkd + (1 - beta) * truth, rel=1e-5)


def test_token_level_kd_term_with_a_shared_vocabulary_teacher(tmp_path):
    tok, student, teacher = char_tokenizer(), make_tiny_llama(seed=1), make_tiny_llama(seed=2)
    beta, alpha, temperature = 0.6, 0.4, 2.0
    config = _config(tmp_path, beta=beta, ground_truth_column="reference", alpha=alpha, temperature=temperature)
    trainer = SeqKDTrainer(
        student,
        config,
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tok,
        teacher_model=teacher,
        teacher_processing_class=tok,
    )
    seq_total, seq_count = 0.0, 0
    for row in ROWS:
        teacher_terms = _ce_terms(teacher, row["prompt"], row["completion"], tok)
        for (s_logits, target), (t_logits, _) in zip(
            _ce_terms(student, row["prompt"], row["completion"], tok), teacher_terms
        ):
            p = (t_logits / temperature).softmax(-1)
            log_q = (s_logits / temperature).log_softmax(-1)
            kl = float((p * (p.log() - log_q)).sum())
            ce = -float(s_logits.log_softmax(-1)[target])
            seq_total += alpha * temperature**2 * kl + (1 - alpha) * ce
            seq_count += 1
    truth = _mean_ce(student, [(r["prompt"], r["reference"]) for r in ROWS], tok)
    expected = beta * seq_total / seq_count + (1 - beta) * truth
    # float32 KL terms (the loss's chunks) against float64: agree to ~1e-5 relative.
    assert float(_one_batch_loss(trainer)) == pytest.approx(expected, rel=1e-4)


def test_training_lowers_the_loss_on_teacher_completions(tmp_path):
    tok, student = char_tokenizer(), make_tiny_llama(seed=1)
    before = _mean_ce(student, [(r["prompt"], r["completion"]) for r in ROWS], tok)
    trainer = SeqKDTrainer(
        student, _config(tmp_path, max_steps=15), train_dataset=Dataset.from_list(ROWS), processing_class=tok
    )
    trainer.train()
    after = _mean_ce(trainer.model, [(r["prompt"], r["completion"]) for r in ROWS], tok)
    assert after < 0.5 * before
    assert "seqkd_ce" in trainer.state.log_history[0]


def test_lora_student_trains_only_adapters(tmp_path):
    from peft import LoraConfig

    tok, student = char_tokenizer(), make_tiny_llama(seed=1)
    base = {k: v.clone() for k, v in student.state_dict().items()}
    trainer = SeqKDTrainer(
        student,
        _config(tmp_path, max_steps=2),
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tok,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    trainer.train()
    named = dict(trainer.model.named_parameters())
    assert lora_before and any(not torch.equal(named[n], v) for n, v in lora_before.items())
    for name, param in trainer.model.get_base_model().state_dict().items():
        if "lora_" not in name:
            assert torch.equal(param, base[name.replace(".base_layer", "")]), name


def test_generation_output_and_conversations_are_accepted(tmp_path):
    tok, student = char_tokenizer(), make_tiny_llama(seed=1)
    generated = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": "hi"}],
                "completion": [{"role": "assistant", "content": "yo"}],
                "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
                "prompt_index": 0,
                "teacher_score": -1.0,
            }
        ]
    )
    trainer = SeqKDTrainer(student, _config(tmp_path / "a"), train_dataset=generated, processing_class=tok)
    row = trainer.train_dataset[0]
    assert tok.decode(row["input_ids"]) == "<u>hi\n<a>yo\n"
    assert tok.decode([t for t in row["labels"] if t != -100]) == "yo\n"

    only_messages = generated.select_columns(["messages"])
    trainer = SeqKDTrainer(student, _config(tmp_path / "b"), train_dataset=only_messages, processing_class=tok)
    assert trainer.train_dataset[0]["labels"] == row["labels"]


def test_bad_input_errors(tmp_path):
    tok, student = char_tokenizer(), make_tiny_llama(seed=1)
    data = Dataset.from_list(ROWS)
    with pytest.raises(ValueError, match="ground_truth_column"):
        _config(tmp_path, beta=0.5)
    with pytest.raises(ValueError, match="beta must be in"):
        _config(tmp_path, beta=1.5, ground_truth_column="reference")
    with pytest.raises(ValueError, match="completion_only_loss"):
        _config(tmp_path, completion_only_loss=False)
    with pytest.raises(ValueError, match="packing"):
        _config(tmp_path, beta=0.5, ground_truth_column="reference", packing=True, max_length=32)
    with pytest.raises(ValueError, match=r"needs columns \['completion'\]"):
        SeqKDTrainer(student, _config(tmp_path), train_dataset=data.remove_columns("completion"), processing_class=tok)
    with pytest.raises(ValueError, match="ground-truth column 'gold'"):
        SeqKDTrainer(
            student, _config(tmp_path, beta=0.5, ground_truth_column="gold"), train_dataset=data, processing_class=tok
        )
    with pytest.raises(ValueError, match="padding_free"):
        SeqKDTrainer(
            student,
            _config(tmp_path, beta=0.5, ground_truth_column="reference", padding_free=True),
            train_dataset=data,
            processing_class=tok,
        )
    mixed = Dataset.from_list([{"prompt": "a", "completion": "b", "reference": None}])
    with pytest.raises(ValueError, match="ground-truth completion is missing"):
        SeqKDTrainer(
            student,
            _config(tmp_path, beta=0.5, ground_truth_column="reference"),
            train_dataset=mixed,
            processing_class=tok,
        )
