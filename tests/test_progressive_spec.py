"""The chain file: what parses into which stage settings, and the errors a bad file gets before anything trains."""

from __future__ import annotations

import copy

import pytest

from hf_distill.progressive.spec import ChainSpecError, load_chain_spec, parse_chain_spec, stage_arguments

BASE = {
    "teacher": "/models/teacher",
    "output_dir": "/tmp/chain",
    "max_length": 32,
    "temperature": 1.0,
    "alpha": 0.9,
    "use_cpu": True,
    "report_to": "none",
    "stages": [
        {"name": "half", "student": {"layers": 4}, "max_steps": 10, "stop": {"eval_steps": 5, "plateau_patience": 2}},
        {"name": "quarter", "student": {"layers": 2}, "max_steps": 6, "temperature": 2.0, "divergence": "jsd"},
    ],
}


def chain(**changes):
    raw = copy.deepcopy(BASE)
    raw.update(changes)
    return raw


def with_stage(index, **changes):
    raw = chain()
    raw["stages"][index].update(changes)
    return raw


def test_stages_get_the_shared_settings_under_their_own():
    spec = parse_chain_spec(chain())
    half, quarter = spec.stages
    assert (half.student.layers, quarter.student.layers) == (4, 2)
    assert half.stop.plateau_patience == 2 and quarter.stop.eval_steps is None
    recipe, args, model_args = stage_arguments(spec, quarter, teacher="/out/half", student_source="/out/half")
    assert (args.temperature, args.alpha, args.divergence, args.max_steps) == (2.0, 0.9, "jsd", 6)
    assert (recipe.student_init, recipe.student_num_layers) == ("layer_subset", 2)
    assert model_args.model_name_or_path == args.teacher_model_name_or_path == "/out/half"
    assert args.output_dir == "/tmp/chain/quarter" and args.eval_strategy == "no"
    _, args, _ = stage_arguments(spec, half, teacher="/models/teacher", student_source="/models/teacher")
    assert (args.temperature, args.eval_strategy, args.eval_steps) == (1.0, "steps", 5)


def test_a_stage_with_a_feature_term_trains_with_feature_kd():
    from hf_distill.trainers import FeatureKDConfig

    spec = parse_chain_spec(with_stage(1, hidden_loss_weight=0.5))
    _, args, _ = stage_arguments(spec, spec.stages[1], teacher="t", student_source="t")
    assert isinstance(args, FeatureKDConfig) and args.hidden_loss_weight == 0.5
    _, args, _ = stage_arguments(spec, spec.stages[0], teacher="t", student_source="t")
    assert not isinstance(args, FeatureKDConfig)


def test_a_model_student_is_loaded_as_it_is():
    spec = parse_chain_spec(with_stage(1, student={"model": "/models/small"}))
    recipe, _, model_args = stage_arguments(spec, spec.stages[1], teacher="/out/half", student_source="/out/half")
    assert recipe.student_init == "pretrained" and model_args.model_name_or_path == "/models/small"


def test_the_yaml_file_parses_with_overrides(tmp_path):
    import yaml

    path = tmp_path / "chain.yaml"
    path.write_text(yaml.safe_dump(chain()), encoding="utf-8")
    spec = load_chain_spec(path, {"output_dir": str(tmp_path / "elsewhere")})
    assert spec.output_dir == str(tmp_path / "elsewhere") and [s.name for s in spec.stages] == ["half", "quarter"]


@pytest.mark.parametrize(
    "raw, message",
    [
        (chain(teacher=None), "needs `teacher`"),
        (chain(stages=[]), "needs `stages`"),
        (chain(temprature=2.0), r"unknown key `temprature` \(did you mean `temperature`\?\)"),
        (chain(model_name_or_path="x"), "`model_name_or_path` is set by the chain"),
        (chain(mode="offline"), "only mode=logit"),
        (with_stage(1, max_length=64), r"stage 2 \(quarter\): `max_length` is shared by the whole chain"),
        (with_stage(1, student={"width": 0.5}), "width reduction is not supported"),
        (with_stage(1, student={"layers": 6}), "previous stage's student has only 4"),
        (with_stage(1, student={"layers": 0}), "must be a positive integer"),
        (with_stage(1, student={"layers": 2, "model": "x"}), "must be one of"),
        (with_stage(1, student={"depth": 2}), "unknown student kind `depth`"),
        (with_stage(1, name="half"), "two stages are named 'half'"),
        (with_stage(1, name="a/b"), "directory-safe"),
        (with_stage(1, temperature=0.0), r"stage quarter: .*temperature"),
        (with_stage(1, alpha=1.5), r"stage quarter: .*alpha"),
        (with_stage(1, stop={"patience": 2}), r"unknown `stop` key\(s\) \['patience'\]"),
        (with_stage(1, stop={"plateau_patience": 2}), "need stop.eval_steps"),
        (with_stage(1, stop={"eval_steps": 10}), "stop.eval_steps` = 10 > max_steps = 6"),
        (with_stage(1, max_steps=None), "needs `max_steps` > 0"),
        (with_stage(0, output_dir="x"), "`output_dir` is set by the chain"),
        (with_stage(0, student_layers=[0, 1]), "`student_layers` is set by the chain"),
    ],
)
def test_bad_chains_are_refused_with_the_stage_and_key(raw, message):
    with pytest.raises(ChainSpecError, match=message):
        parse_chain_spec(raw)


def test_a_stage_without_a_student_is_refused():
    raw = chain()
    del raw["stages"][0]["student"]
    with pytest.raises(ChainSpecError, match=r"stage 1 \(half\): needs `student`"):
        parse_chain_spec(raw)


def test_the_documented_chain_file_parses():
    import re
    from pathlib import Path

    import yaml

    doc = (Path(__file__).resolve().parents[1] / "docs" / "progressive.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n(.*?)```", doc, re.S).group(1)
    spec = parse_chain_spec({**yaml.safe_load(block), "use_cpu": True, "bf16": False})  # this machine has no GPU
    assert [s.student.layers for s in spec.stages] == [15, 8]
    assert spec.stages[1].stop.kl_below == 0.3 and spec.stages[1].settings["hidden_loss_weight"] == 0.5


@pytest.mark.parametrize("name", ["progressive_smollm2.yaml", "progressive_direct_smollm2.yaml"])
def test_the_cpu_configs_parse_with_the_same_total_steps(name):
    from pathlib import Path

    spec = load_chain_spec(Path(__file__).resolve().parents[1] / "recipes" / "configs" / name)
    assert sum(s.settings["max_steps"] for s in spec.stages) == 60
    assert spec.stages[-1].student.layers == 8 and spec.teacher == "pypi:smollm2-135m-instruct"
