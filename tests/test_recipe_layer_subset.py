"""Layer-subset student initialisation: the right teacher tensors end up in the right student places."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_llama

from hf_distill.recipe.layer_subset import layer_subset_student, spaced_layer_indices


def test_spaced_indices_keep_first_and_last_at_even_stride():
    # 30 layers, keep 10: stride 29/9 = 3.22 -> rounded positions computed by hand.
    assert spaced_layer_indices(30, 10) == [0, 3, 6, 10, 13, 16, 19, 23, 26, 29]
    assert spaced_layer_indices(30, 15) == [0, 2, 4, 6, 8, 10, 12, 14, 17, 19, 21, 23, 25, 27, 29]
    assert spaced_layer_indices(4, 4) == [0, 1, 2, 3]
    assert spaced_layer_indices(6, 2) == [0, 5]


@pytest.mark.parametrize("num_keep", [0, 7])
def test_spaced_indices_reject_impossible_counts(num_keep):
    with pytest.raises(ValueError, match="num_keep"):
        spaced_layer_indices(6, num_keep)


@pytest.mark.parametrize("tied", [False, True])
def test_student_holds_copies_of_the_chosen_teacher_layers(tied):
    teacher = make_tiny_llama(num_layers=6, num_kv_heads=2, tie_word_embeddings=tied, seed=3)
    indices = [0, 2, 5]
    student = layer_subset_student(teacher, indices)

    assert student.config.num_hidden_layers == 3
    assert teacher.config.num_hidden_layers == 6
    teacher_state = teacher.state_dict()
    for new, old in enumerate(indices):
        for name, tensor in student.model.layers[new].state_dict().items():
            torch.testing.assert_close(tensor, teacher_state[f"model.layers.{old}.{name}"], rtol=0, atol=0)
    # Layers that were not chosen are nowhere in the student.
    for new in range(3):
        q = student.model.layers[new].self_attn.q_proj.weight
        for dropped in (1, 3, 4):
            assert not torch.equal(q, teacher.model.layers[dropped].self_attn.q_proj.weight)
    torch.testing.assert_close(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight, rtol=0, atol=0)
    torch.testing.assert_close(student.model.norm.weight, teacher.model.norm.weight, rtol=0, atol=0)
    torch.testing.assert_close(student.lm_head.weight, teacher.lm_head.weight, rtol=0, atol=0)
    if tied:
        assert student.lm_head.weight.data_ptr() == student.model.embed_tokens.weight.data_ptr()
    # Copies: training the student leaves the teacher untouched; layer indices are renumbered for the KV cache.
    assert student.model.embed_tokens.weight.data_ptr() != teacher.model.embed_tokens.weight.data_ptr()
    assert [layer.self_attn.layer_idx for layer in student.model.layers] == [0, 1, 2]


def test_keeping_every_layer_reproduces_the_teacher_and_a_subset_runs_the_chosen_layers():
    teacher = make_tiny_llama(num_layers=4, seed=1).eval()
    ids = torch.randint(3, 64, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = layer_subset_student(teacher, [0, 1, 2, 3]).eval()
        torch.testing.assert_close(full(input_ids=ids).logits, teacher(input_ids=ids).logits)
        # Reference for a subset: run the teacher with layers 1 and 2 removed from its module list.
        subset = layer_subset_student(teacher, [0, 3]).eval()
        kept = teacher.model.layers
        teacher.model.layers = torch.nn.ModuleList([kept[0], kept[3]])
        teacher.config.num_hidden_layers = 2
        try:
            expected = teacher(input_ids=ids, use_cache=False).logits
        finally:
            teacher.model.layers = kept
            teacher.config.num_hidden_layers = 4
        torch.testing.assert_close(subset(input_ids=ids).logits, expected)


@pytest.mark.parametrize("indices", [[], [2, 1], [0, 0], [0, 6]])
def test_bad_indices_are_refused(indices):
    with pytest.raises(ValueError, match="layer indices"):
        layer_subset_student(make_tiny_llama(num_layers=6), indices)
