"""Kill a real generation process mid-run, rerun it, and get exactly what an uninterrupted run gives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conftest import make_tiny_llama
from test_generation_tokenizer import char_tokenizer

from hf_distill.teachers.generation import generate_teacher_completions
from hf_distill.teachers.generation.config import TeacherGenerationConfig

TESTS_DIR = Path(__file__).parent
PROMPTS = [{"prompt": f"item {i}: " + "ab" * (i % 4)} for i in range(16)]
SETTINGS = dict(strategy="sample", num_samples=2, selection="all", max_new_tokens=6, shard_size=2, batch_size=2)

# The child slows each shard down (sleep) so the parent can kill it part-way; the work itself is unchanged.
CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests_dir!r})
    from conftest import make_tiny_llama
    from test_generation_tokenizer import char_tokenizer
    import hf_distill.teachers.generation.pipeline as generation
    from hf_distill.teachers.generation.config import TeacherGenerationConfig

    real = generation.generate_candidates

    def slow(*args, **kwargs):
        time.sleep(0.4)
        return real(*args, **kwargs)

    generation.generate_candidates = slow
    generation.generate_teacher_completions(
        make_tiny_llama(seed=4), char_tokenizer(), {prompts!r}, {out!r},
        TeacherGenerationConfig(**{settings!r}), progress=False,
    )
    """
)


def _shard_files(out: Path) -> list[Path]:
    return sorted((out / "shards").glob("shard-*.parquet")) if (out / "shards").exists() else []


def test_kill_and_rerun_loses_and_duplicates_nothing(tmp_path):
    out = tmp_path / "killed"
    script = CHILD.format(tests_dir=str(TESTS_DIR), prompts=PROMPTS, out=str(out), settings=SETTINGS)
    child = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while len(_shard_files(out)) < 3:
            assert child.poll() is None, f"child exited early: {child.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "child produced no shards in time"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    num_shards = len(PROMPTS) // SETTINGS["shard_size"]
    assert len(_shard_files(out)) < num_shards, "the child finished before it was killed"
    assert json.loads((out / "metadata.json").read_text())["sharding"]["complete"] is False

    teacher, tok = make_tiny_llama(seed=4), char_tokenizer()
    config = TeacherGenerationConfig(**SETTINGS)
    resumed = generate_teacher_completions(teacher, tok, PROMPTS, out, config, progress=False)
    reference = generate_teacher_completions(teacher, tok, PROMPTS, tmp_path / "straight", config, progress=False)

    assert len(_shard_files(out)) == num_shards
    assert resumed["prompt_index"] == [i for i in range(len(PROMPTS)) for _ in range(2)]
    assert resumed.to_list() == reference.to_list()
