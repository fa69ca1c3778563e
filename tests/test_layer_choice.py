"""Greedy layer choice for layer-subset students: it must find the layers that do nothing and drop them first."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_llama

from hf_distill.recipe.layer_choice import choose_layers_by_kl, subset_kl, teacher_log_probs


def _teacher_with_identity_layers(identity: set[int], num_layers: int = 5):
    """A tiny Llama whose layers in ``identity`` add nothing to the residual stream (zeroed output projections)."""
    model = make_tiny_llama(num_layers=num_layers, seed=11)
    with torch.no_grad():
        for i in identity:
            model.model.layers[i].self_attn.o_proj.weight.zero_()
            model.model.layers[i].mlp.down_proj.weight.zero_()
    return model.eval()


def _batches():
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(4, 64, (2, 12), generator=generator) for _ in range(2)]


def _reference_kl(teacher, layers, batches) -> float:
    """float64 KL(teacher || student), the student being the teacher run through ``layers`` only."""
    kept = torch.nn.ModuleList(teacher.model.layers[i] for i in layers)
    full = teacher.model.layers
    values = []
    with torch.no_grad():
        for batch in batches:
            p = teacher(input_ids=batch).logits.double().log_softmax(-1)
            teacher.model.layers, teacher.config.num_hidden_layers = kept, len(layers)
            try:
                q = teacher(input_ids=batch, use_cache=False).logits.double().log_softmax(-1)
            finally:
                teacher.model.layers, teacher.config.num_hidden_layers = full, len(full)
            values.append((p.exp() * (p - q)).sum(-1).flatten())
    return torch.cat(values).mean().item()


def test_identity_layers_are_dropped_and_cost_nothing():
    teacher = _teacher_with_identity_layers({1, 3})
    choice = choose_layers_by_kl(teacher, _batches(), num_keep=3, progress=False)
    assert choice.layers == [0, 2, 4]
    assert choice.kl == pytest.approx(0.0, abs=1e-5)
    assert [len(layers) for layers, _ in choice.history] == [4, 3]


def test_kl_matches_a_float64_reference_and_keep_is_honoured():
    teacher = _teacher_with_identity_layers(set())
    batches = _batches()
    teacher_lp = teacher_log_probs(teacher, batches)
    for layers in ([0, 4], [1, 2, 3], [4]):
        assert subset_kl(teacher, layers, batches, teacher_lp) == pytest.approx(
            _reference_kl(teacher, layers, batches), rel=1e-4, abs=1e-6
        )
    choice = choose_layers_by_kl(teacher, batches, num_keep=2, keep=[0, 4], progress=False)
    assert choice.layers == [0, 4]
    # Greedy: each removal is the cheapest one available, so the KL after it is the minimum over the candidates.
    three = choose_layers_by_kl(teacher, batches, num_keep=4, keep=[0, 4], progress=False)
    candidates = [[i for i in range(5) if i != drop] for drop in (1, 2, 3)]
    best = min(_reference_kl(teacher, layers, batches) for layers in candidates)
    assert three.kl == pytest.approx(best, rel=1e-4, abs=1e-6)


def test_bad_requests_are_refused():
    teacher = _teacher_with_identity_layers(set(), num_layers=3)
    with pytest.raises(ValueError, match="num_keep"):
        choose_layers_by_kl(teacher, _batches(), num_keep=0)
    with pytest.raises(ValueError, match="keep must"):
        choose_layers_by_kl(teacher, _batches(), num_keep=1, keep=[0, 2])
    with pytest.raises(ValueError, match="batch"):
        choose_layers_by_kl(teacher, [], num_keep=2)


def test_recipe_student_layers_set_the_kept_layers():
    from hf_distill.recipe.arguments import RecipeArguments
    from hf_distill.recipe.runner import kept_layer_indices

    recipe = RecipeArguments(student_init="layer_subset", student_layers=[0, 3, 4])
    assert recipe.student_num_layers == 3
    assert kept_layer_indices(recipe, 5) == [0, 3, 4]
    with pytest.raises(ValueError, match=r"in \[0, 4\)"):
        kept_layer_indices(recipe, 4)
    with pytest.raises(ValueError, match="student_num_layers"):
        RecipeArguments(student_init="layer_subset", student_layers=[0, 3], student_num_layers=3)
    with pytest.raises(ValueError, match="student_init=layer_subset"):
        RecipeArguments(student_init="pretrained", student_layers=[0, 3])
    with pytest.raises(ValueError, match="strictly increasing"):
        kept_layer_indices(RecipeArguments(student_init="layer_subset", student_layers=[3, 0]), 5)
