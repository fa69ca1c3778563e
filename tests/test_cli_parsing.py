"""`hf-distill precompute` / `generate` parse straight into their config dataclasses: every field is an option
with help text, a YAML `--config` gives the same result as the flags, and flags override the file."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from hf_distill.teachers.generation.cli import (
    ExecutionCheckArguments,
    GenerationRunArguments,
    decode_escapes,
)
from hf_distill.teachers.generation.cli import parse_args as parse_generate
from hf_distill.teachers.generation.config import TeacherGenerationConfig
from hf_distill.teachers.precompute import PrecomputeConfig
from hf_distill.teachers.precompute_cli import PrecomputeRunArguments
from hf_distill.teachers.precompute_cli import parse_args as parse_precompute

COMMANDS = {
    "precompute": (parse_precompute, (PrecomputeRunArguments, PrecomputeConfig)),
    "generate": (parse_generate, (GenerationRunArguments, TeacherGenerationConfig, ExecutionCheckArguments)),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_documents_every_field(command, capsys):
    parse, types = COMMANDS[command]
    with pytest.raises(SystemExit) as exit_info:
        parse(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--config file.yaml" in text
    for dataclass_type in types:
        for f in dataclasses.fields(dataclass_type):
            assert f"--{f.name}" in text, f"{command} --help lacks {f.name}"
            assert f.metadata.get("help"), f"{dataclass_type.__name__}.{f.name} has no help text"


def test_precompute_flags_fill_both_dataclasses():
    run, config = parse_precompute(
        "--teacher t --dataset d --out o --mode sampled --num-samples 32 --temperature 1.5 --batch-size 2 "
        "--shard-size 3 --dtype float32 --device cpu --no-progress --load-in-4bit --max-length 64".split()
    )
    assert config == PrecomputeConfig(
        mode="sampled", num_samples=32, temperature=1.5, batch_size=2, shard_size=3, max_length=64
    )
    assert run == PrecomputeRunArguments(
        teacher="t", dataset="d", out="o", dtype="float32", device="cpu", progress=False, load_in_4bit=True
    )


def test_precompute_reads_yaml_and_flags_override_it(tmp_path):
    config_file = tmp_path / "precompute.yaml"
    config_file.write_text(
        yaml.safe_dump({"teacher": "t", "dataset": "d", "out": "o", "mode": "sampled", "num_samples": 8, "seed": 3})
    )
    run, config = parse_precompute(["--config", str(config_file), "--num-samples", "16"])
    assert config == PrecomputeConfig(mode="sampled", num_samples=16, seed=3)
    assert (run.teacher, run.dataset, run.out) == ("t", "d", "o")


def test_precompute_rejects_an_unknown_mode(capsys):
    with pytest.raises(SystemExit):
        parse_precompute("--teacher t --dataset d --out o --mode logits".split())
    assert "invalid choice: 'logits'" in capsys.readouterr().err


def test_generate_yaml_config_equals_flags_and_flags_override_it(tmp_path):
    settings = {
        "teacher": "t",
        "dataset": "prompts.jsonl",
        "out": "o",
        "strategy": "sample",
        "num_samples": 3,
        "top_p": 0.9,
        "stop_sequences": ["\\n\\n", "def "],
        "require_finished": True,
        "limit": 5,
        "execution_check": True,
        "exec_timeout": 2.5,
    }
    config_file = tmp_path / "generate.yaml"
    config_file.write_text(yaml.safe_dump(settings))
    flags = (
        "--teacher t --dataset prompts.jsonl --out o --strategy sample --num-samples 3 --top-p 0.9 "
        "--stop \\n\\n --stop def_ --require-finished --limit 5 --execution-check --exec-timeout 2.5"
    ).split()
    flags[flags.index("def_")] = "def "
    expected_config = TeacherGenerationConfig(
        strategy="sample", num_samples=3, top_p=0.9, stop_sequences=["\n\n", "def "], require_finished=True
    )
    from_yaml = parse_generate(["--config", str(config_file)])
    from_flags = parse_generate(flags)
    assert from_yaml == from_flags
    run, config, check = from_flags
    assert config == expected_config
    assert run == GenerationRunArguments(teacher="t", dataset="prompts.jsonl", out="o", limit=5)
    assert check == ExecutionCheckArguments(execution_check=True, exec_timeout=2.5)

    _, overridden, _ = parse_generate(["--config", str(config_file), "--num-samples", "2", "--strategy", "beam"])
    assert (overridden.strategy, overridden.num_samples, overridden.top_p) == ("beam", 2, 0.9)


def test_generate_settings_are_validated_by_the_config():
    with pytest.raises(ValueError, match="greedy decoding yields one candidate"):
        parse_generate("--teacher t --dataset d --out o --num-samples 2".split())


def test_execution_check_is_built_only_when_asked():
    assert ExecutionCheckArguments().build("prompt") is None
    check = ExecutionCheckArguments(
        execution_check=True, allow_code_execution=True, entry_point_column="", exec_memory_mb=256
    ).build("question")
    assert (check.prompt_column, check.entry_point_column, check.memory_mb) == ("question", None, 256)


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("\\n", "\n"), ("\\ndef ", "\ndef "), ("tab\\there", "tab\there"), ("é\\n", "é\n"), ("日本", "日本"), ("x", "x")],
)
def test_command_line_escapes_are_decoded(typed, meant):
    assert decode_escapes(typed) == meant
