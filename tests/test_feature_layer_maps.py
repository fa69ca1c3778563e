"""Layer maps against the published examples (seed 003 section 3.2, seed 002 section 4.2) and bad input."""

import pytest

from hf_distill.features import build_layer_map, format_layer_map, last_k_map, top_heavy_map, uniform_map


def test_uniform_reproduces_32_to_80_example():
    mapping = dict(uniform_map(32, 80))
    assert (mapping[0], mapping[15], mapping[31]) == (0, 38, 78)
    assert len(mapping) == 32


def test_uniform_reproduces_12_to_60_example():
    # Seed 002: 0->0, 1->5, 2->10, ..., 11->55 (every fifth teacher layer).
    assert uniform_map(12, 60) == tuple((s, 5 * s) for s in range(12))


def test_uniform_rounds_ties_up_and_stays_in_range():
    # 1 * 80 / 32 = 2.5 -> 3 (ties up, unlike Python's banker's round which gives 2).
    assert dict(uniform_map(32, 80))[1] == 3
    # More student than teacher layers: repeats teacher layers, never leaves the teacher.
    mapping = uniform_map(5, 2)
    assert [t for _, t in mapping] == [0, 0, 1, 1, 1]


def test_top_heavy_reproduces_seed_002_anchor_pairs():
    mapping = dict(top_heavy_map(12, 60))
    assert (mapping[0], mapping[6], mapping[7], mapping[11]) == (0, 20, 30, 59)
    teacher_layers = [mapping[s] for s in range(12)]
    assert teacher_layers == sorted(teacher_layers)
    # Upper student layers are spaced further apart than lower ones.
    assert teacher_layers[11] - teacher_layers[10] > teacher_layers[1] - teacher_layers[0]


def test_last_k_pairs_the_top_layers_in_order():
    assert last_k_map(4, 10, 3) == ((1, 7), (2, 8), (3, 9))
    with pytest.raises(ValueError, match="last_k"):
        last_k_map(4, 10, 5)


def test_explicit_map_accepts_dict_pairs_and_strings():
    expected = ((0, 1), (2, 5))
    assert build_layer_map("explicit", 3, 6, pairs={0: 1, 2: 5}) == expected
    assert build_layer_map("explicit", 3, 6, pairs=[(0, 1), (2, 5)]) == expected
    assert build_layer_map("explicit", 3, 6, pairs=["0:1", "2:5"]) == expected


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ([(0, 1), (3, 2)], r"Layer pair \(3, 2\): student layer 3 is outside the student's layers 0..2"),
        ([(1, 6)], r"Layer pair \(1, 6\): teacher layer 6 is outside the teacher's layers 0..5"),
        ([(-1, 0)], r"Layer pair \(-1, 0\)"),
        ([(0, 1), (0, 1)], "listed twice"),
        ([], "at least one"),
        (["1-2"], "student:teacher"),
    ],
)
def test_bad_explicit_pairs_name_the_offender(pairs, message):
    with pytest.raises(ValueError, match=message):
        build_layer_map("explicit", 3, 6, pairs=pairs)


def test_unknown_strategy_and_missing_arguments():
    with pytest.raises(ValueError, match="Unknown layer map strategy"):
        build_layer_map("diagonal", 3, 6)
    with pytest.raises(ValueError, match="needs k"):
        build_layer_map("last_k", 3, 6)
    with pytest.raises(ValueError, match="needs pairs"):
        build_layer_map("explicit", 3, 6)


def test_format_lists_every_pair():
    text = format_layer_map(((0, 0), (1, 38)), 2, 80)
    assert "2-layer student / 80-layer teacher" in text
    assert "student 0 -> teacher 0" in text and "student 1 -> teacher 38" in text
