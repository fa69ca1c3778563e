"""Layer-output capture hooks, eager switching, GQA head grouping and projection files on tiny Llamas."""

import pytest
import torch

from hf_distill.features import PROJECTIONS_FILE, FeatureProjections, LayerCapture, ensure_eager_attention
from hf_distill.losses.attention import match_head_counts


def test_captures_only_mapped_layers_matching_output_hidden_states(tiny_llama):
    model = tiny_llama(num_layers=3)
    capture = LayerCapture(model, layers=[0, 1])
    input_ids = torch.randint(3, 64, (2, 5))
    with capture.capturing():
        model(input_ids)
    reference = model(input_ids, output_hidden_states=True).hidden_states  # [embeddings, layer 0, layer 1, ...]
    assert set(capture._hidden) == {0, 1}
    assert torch.allclose(capture.hidden_state(0), reference[1])
    assert torch.allclose(capture.hidden_state(1), reference[2])
    with pytest.raises(RuntimeError, match="No hidden state was captured for layer 2"):
        capture.hidden_state(2)


def test_nothing_is_recorded_outside_capturing_and_removal_detaches_hooks(tiny_llama):
    model = tiny_llama(num_layers=2)
    capture = LayerCapture(model, layers=[1])
    model(torch.randint(3, 64, (1, 4)))
    assert not capture._hidden
    capture.remove()
    with capture.capturing():
        model(torch.randint(3, 64, (1, 4)))
    assert not capture._hidden


def test_micro_batches_are_joined_along_the_batch(tiny_llama):
    model = tiny_llama(num_layers=3)
    capture = LayerCapture(model, layers=[1])
    input_ids = torch.randint(3, 64, (4, 5))
    with capture.capturing():
        model(input_ids[:2])
        model(input_ids[2:])
    whole = model(input_ids, output_hidden_states=True).hidden_states[2]
    assert torch.allclose(capture.hidden_state(1), whole, atol=1e-6)


def test_attention_capture_needs_eager_and_matches_output_attentions(tiny_llama):
    model = tiny_llama(num_layers=2, attn_implementation="sdpa")
    with pytest.raises(ValueError, match="returns no attention weights"):
        ensure_eager_attention(model, switch=False, role="student")
    capture = LayerCapture(model, layers=[1], hidden=False, attention=True)
    with pytest.raises(RuntimeError, match="Layer 1's attention returned no weights"), capture.capturing():
        model(torch.randint(3, 64, (1, 4)))
    ensure_eager_attention(model, switch=True, role="student")
    assert model.config._attn_implementation == "eager"
    input_ids = torch.randint(3, 64, (2, 6))
    attention_mask = torch.tensor([[1] * 6, [0, 0, 1, 1, 1, 1]])
    with capture.capturing():
        model(input_ids, attention_mask=attention_mask)
    reference = model(input_ids, attention_mask=attention_mask, output_attentions=True).attentions[1]
    assert capture.attention(1).shape == (2, 4, 6, 6)
    assert torch.allclose(capture.attention(1), reference)


def test_contiguous_head_groups_follow_the_teachers_kv_groups(tiny_llama):
    # GQA teacher: 4 query heads, 2 KV heads; query heads (0, 1) share KV head 0 and (2, 3) share KV head 1.
    teacher = tiny_llama(num_layers=1, num_heads=4, num_kv_heads=2, attn_implementation="eager")
    head_dim = teacher.config.hidden_size // 4
    with torch.no_grad():
        q = teacher.model.layers[0].self_attn.q_proj.weight
        q[1 * head_dim : 2 * head_dim] = q[0:head_dim]  # head 1 asks what head 0 asks, of the same keys
        q[3 * head_dim : 4 * head_dim] = q[2 * head_dim : 3 * head_dim]
    capture = LayerCapture(teacher, layers=[0], hidden=False, attention=True)
    with capture.capturing():
        teacher(torch.randint(3, 64, (1, 6)))
    maps = capture.attention(0)
    assert not torch.allclose(maps[:, 0], maps[:, 2])  # the two KV groups really differ
    _, grouped = match_head_counts(torch.zeros(1, 2, 6, 6), maps)
    # Averaging within each KV group reproduces that group's (shared) map exactly.
    assert torch.allclose(grouped, maps[:, [0, 2]], atol=1e-6)


def test_projections_round_trip_and_refuse_a_different_map(tmp_path):
    projections = FeatureProjections(((0, 1), (1, 3)), student_width=8, teacher_width=12)
    assert set(projections.projections) == {"s0_t1", "s1_t3"}
    out = projections(0, 1, torch.randn(2, 3, 8, dtype=torch.bfloat16))
    assert out.shape == (2, 3, 12) and out.dtype == torch.float32
    projections.save(str(tmp_path))
    assert (tmp_path / PROJECTIONS_FILE).is_file()
    restored = FeatureProjections(((0, 1), (1, 3)), student_width=8, teacher_width=12)
    restored.load(str(tmp_path))
    for key, value in projections.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value)
    other = FeatureProjections(((0, 2), (1, 3)), student_width=8, teacher_width=12)
    with pytest.raises(ValueError, match="were saved for"):
        other.load(str(tmp_path))


def test_equal_widths_pass_through_unless_forced_then_start_as_identity():
    states = torch.randn(1, 2, 8)
    assert len(FeatureProjections(((0, 0),), 8, 8).projections) == 0
    forced = FeatureProjections(((0, 0),), 8, 8, always=True)
    assert torch.allclose(forced(0, 0, states), states)
