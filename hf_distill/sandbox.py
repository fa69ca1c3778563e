"""Run untrusted Python (model-generated code plus its tests) in a throw-away child process.

Used by pass@k evaluation and by the sequence-KD execution filter. Each program runs in a fresh
``python -I`` process, in its own temporary directory and process group, with a wall-clock timeout, an
address-space limit, a CPU-time backstop, a cap on file sizes and a preamble that disables process
creation, sockets and destructive file operations before the program starts.

This is best-effort containment, not a security boundary: a determined program can still get around an
in-process preamble. Real isolation needs a container or VM (no network, read-only filesystem, cgroup
limits). Executing anything therefore requires an explicit opt-in: ``allow_code_execution=True`` or the
environment variable ``HF_DISTILL_ALLOW_CODE_EXECUTION=1``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass

from tqdm.auto import tqdm

ALLOW_ENV_VAR = "HF_DISTILL_ALLOW_CODE_EXECUTION"
STATUSES = ("passed", "failed", "timeout", "error", "memory")


class CodeExecutionNotAllowedError(PermissionError):
    """Raised when code would be executed without the user's explicit opt-in."""


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one sandboxed run. ``status`` is one of ``STATUSES``; ``passed`` iff it is "passed"."""

    passed: bool
    status: str
    detail: str = ""
    duration_s: float = 0.0
    stdout: str = ""
    stderr: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def code_execution_allowed(allow_code_execution: bool = False) -> bool:
    """True when the caller or the environment (``HF_DISTILL_ALLOW_CODE_EXECUTION=1``) opted in."""
    return bool(allow_code_execution) or os.environ.get(ALLOW_ENV_VAR, "").strip() == "1"


def require_code_execution_opt_in(allow_code_execution: bool = False) -> None:
    """Refuse to go on unless the user explicitly accepted running model-generated code."""
    if not code_execution_allowed(allow_code_execution):
        raise CodeExecutionNotAllowedError(
            "Refusing to execute model-generated code. It runs in a separate process with time and memory "
            "limits and with process creation and sockets disabled, but that is not a security boundary: "
            "run it inside a container without network access. To opt in, pass allow_code_execution=True "
            f"or set the environment variable {ALLOW_ENV_VAR}=1."
        )


# The child's entry point. It reads a random nonce from stdin so that the program it runs cannot forge the
# "passed" report (it never sees the nonce in its own globals), installs limits and guards, then executes
# the program with exec(). Every outcome is reported as one JSON line on a private pipe.
_RUNNER = r"""
import builtins, io, json, os, resource, signal, sys, traceback

_report_fd = int(sys.argv[1])
_memory_bytes = int(sys.argv[2])
_cpu_seconds = int(sys.argv[3])
_file_bytes = int(sys.argv[4])


def _make_report(nonce, write=os.write, exit_now=os._exit, streams=(sys.stdout, sys.stderr)):
    def report(status, detail=""):
        for stream in streams:
            try:
                stream.flush()
            except Exception:
                pass
        line = json.dumps({"nonce": nonce, "status": status, "detail": str(detail)[-4000:]}) + "\n"
        try:
            write(_report_fd, line.encode("utf-8", "replace"))
        finally:
            exit_now(0)
    return report


_report = _make_report(sys.stdin.readline().strip())


def _limit(kind, value):
    if value > 0:
        try:
            resource.setrlimit(kind, (value, value))
        except (ValueError, OSError):
            pass


_limit(resource.RLIMIT_AS, _memory_bytes)
_limit(resource.RLIMIT_CPU, _cpu_seconds)
_limit(resource.RLIMIT_FSIZE, _file_bytes)
_limit(resource.RLIMIT_CORE, 0)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversized writes fail with OSError instead of killing us

import shutil, socket, subprocess  # noqa: E401  (imported so they can be disarmed below)
import _socket


def _blocker(name):
    def blocked(*args, **kwargs):
        _report("failed", "blocked call: " + name + " is disabled in the sandbox")
    return blocked


_BLOCKED = {
    "os": ("system", "popen", "fork", "forkpty", "vfork", "execv", "execve", "execl", "execle", "execlp",
           "execlpe", "execvp", "execvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve",
           "spawnvp", "spawnvpe", "posix_spawn", "posix_spawnp", "kill", "killpg", "remove", "unlink",
           "rmdir", "removedirs", "rename", "renames", "replace", "truncate", "chmod", "fchmod", "lchmod",
           "chown", "fchown", "lchown", "chroot", "setuid", "setgid", "link",
           "symlink", "mkfifo", "mknod", "setsid", "setpgid"),
    "subprocess": ("Popen", "run", "call", "check_call", "check_output", "getoutput", "getstatusoutput"),
    "shutil": ("rmtree", "move", "chown", "copytree", "disk_usage"),
    "socket": ("socket", "create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo",
               "gethostbyname", "gethostbyname_ex", "gethostbyaddr"),
    "_socket": ("socket", "socketpair", "getaddrinfo", "gethostbyname", "gethostbyname_ex",
                "gethostbyaddr"),
}
for _module_name, _names in _BLOCKED.items():
    _module = sys.modules[_module_name]
    for _name in _names:
        if hasattr(_module, _name):
            setattr(_module, _name, _blocker(_module_name + "." + _name))
for _name in _BLOCKED["os"]:  # os re-exports posix; disarm the originals too
    if hasattr(sys.modules["posix"], _name):
        setattr(sys.modules["posix"], _name, _blocker("posix." + _name))
# Modules that would give a way around the guards: importing them raises ImportError.
for _name in ("ctypes", "_ctypes", "_posixsubprocess", "pty", "resource", "multiprocessing", "_multiprocessing"):
    sys.modules[_name] = None

_cwd = os.path.realpath(os.getcwd())
_open = builtins.open


def _guarded_open(file, mode="r", *args, **kwargs):
    if isinstance(file, (str, bytes, os.PathLike)) and any(flag in mode for flag in "wax+"):
        path = os.path.realpath(os.fsdecode(file))
        if not (path == _cwd or path.startswith(_cwd + os.sep)):
            _report("failed", "blocked call: writing outside the sandbox directory (" + path + ")")
    return _open(file, mode, *args, **kwargs)


builtins.open = io.open = _guarded_open

with _open("program.py", encoding="utf-8") as _handle:
    _source = _handle.read()
_program_globals = {"__name__": "__main__", "__builtins__": builtins}
del _handle, _module, _names, _name, _module_name
try:
    exec(compile(_source, "program.py", "exec"), _program_globals)
except MemoryError:
    _report("memory", "MemoryError: the program exceeded the sandbox memory limit")
except SystemExit as exc:
    _report("failed", "the program called exit(" + repr(exc.code) + ") before its checks finished")
except BaseException:
    _type, _error, _trace = sys.exc_info()  # drop the runner's own frame from the traceback
    _report("failed", "".join(traceback.format_exception(_type, _error, _trace.tb_next if _trace else None)))
_report("passed")
"""


def _read_capped(path: str, max_chars: int) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read(max_chars + 1)
    except OSError:
        return ""
    return text if len(text) <= max_chars else text[:max_chars] + "\n[... output truncated]"


def run_program(
    program: str,
    test_code: str = "",
    *,
    timeout: float = 5.0,
    memory_mb: int = 1024,
    max_output_chars: int = 4000,
    max_file_mb: int = 16,
    allow_code_execution: bool = False,
) -> SandboxResult:
    """Execute ``program`` followed by ``test_code`` in a sandboxed child; "passed" means no exception.

    ``timeout`` is wall-clock seconds for the whole child (the process group is killed after it).
    ``memory_mb`` caps the child's address space; exceeding it is reported as status "memory".
    ``max_file_mb`` caps any file the child writes (its stdout/stderr included); only the first
    ``max_output_chars`` of stdout/stderr are returned.
    """
    require_code_execution_opt_in(allow_code_execution)
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    if memory_mb <= 0:
        raise ValueError(f"memory_mb must be positive, got {memory_mb}")
    source = program if not test_code else program.rstrip("\n") + "\n\n" + test_code
    nonce = secrets.token_hex(16)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hf_distill_sandbox_") as workdir:
        with open(os.path.join(workdir, "program.py"), "w", encoding="utf-8") as handle:
            handle.write(source)
        stdout_path = os.path.join(workdir, ".stdout")
        stderr_path = os.path.join(workdir, ".stderr")
        read_fd, write_fd = os.pipe()
        env = {
            "PATH": os.defpath,
            "HOME": workdir,
            "TMPDIR": workdir,
            "LANG": "C.UTF-8",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        argv = [
            sys.executable,
            "-I",
            "-c",
            _RUNNER,
            str(write_fd),
            str(memory_mb * 2**20),
            str(int(timeout) + 2),
            str(max_file_mb * 2**20),
        ]
        timed_out = False
        try:
            with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
                try:
                    proc = subprocess.Popen(
                        argv,
                        cwd=workdir,
                        env=env,
                        stdin=subprocess.PIPE,
                        stdout=out,
                        stderr=err,
                        pass_fds=(write_fd,),
                        start_new_session=True,
                    )
                except OSError as exc:
                    return SandboxResult(
                        False, "error", f"could not start the sandbox process: {exc}", time.monotonic() - started
                    )
                finally:
                    os.close(write_fd)
                try:
                    proc.stdin.write((nonce + "\n").encode())
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    _kill_group(proc)
            with os.fdopen(read_fd, "rb") as report_pipe:
                read_fd = -1
                raw_report = report_pipe.read(64 * 2**10)
        finally:
            if read_fd >= 0:
                os.close(read_fd)
        duration = time.monotonic() - started
        stdout = _read_capped(stdout_path, max_output_chars)
        stderr = _read_capped(stderr_path, max_output_chars)
    status, detail = _interpret(raw_report, nonce, proc.returncode, timed_out, timeout, stderr)
    return SandboxResult(status == "passed", status, detail, duration, stdout, stderr)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def _interpret(
    raw_report: bytes, nonce: str, returncode: int, timed_out: bool, timeout: float, stderr: str
) -> tuple[str, str]:
    """Turn the child's private report (or its absence) into a (status, detail) pair."""
    if timed_out:
        return "timeout", f"no result within {timeout:g} s (process group killed)"
    for line in raw_report.decode("utf-8", "replace").splitlines():
        try:
            report = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(report, dict) and report.get("nonce") == nonce and report.get("status") in STATUSES:
            return report["status"], report.get("detail", "")
    if returncode is not None and returncode < 0:
        signum = -returncode
        name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else str(signum)
        if signum == signal.SIGXCPU:
            return "timeout", "CPU time limit exceeded (SIGXCPU)"
        return "error", f"sandbox process killed by {name}. {stderr[-1000:]}".strip()
    if "MemoryError" in stderr:
        return "memory", stderr[-1000:]
    return "failed", f"the program exited (code {returncode}) before its checks finished. {stderr[-1000:]}".strip()


def run_programs(
    programs: Sequence[str],
    test_codes: Sequence[str] | None = None,
    *,
    timeout: float = 5.0,
    memory_mb: int = 1024,
    num_workers: int = 2,
    max_output_chars: int = 4000,
    allow_code_execution: bool = False,
    show_progress: bool = True,
    desc: str = "executing programs",
) -> list[SandboxResult]:
    """Run many programs concurrently (each in its own child process); results keep the input order.

    A thread per worker drives one child process at a time, so at most ``num_workers`` children run at once.
    """
    require_code_execution_opt_in(allow_code_execution)
    if test_codes is not None and len(test_codes) != len(programs):
        raise ValueError(f"got {len(programs)} programs but {len(test_codes)} test codes")
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    tests = list(test_codes) if test_codes is not None else [""] * len(programs)
    results: list[SandboxResult | None] = [None] * len(programs)

    def run_one(index: int) -> int:
        results[index] = run_program(
            programs[index],
            tests[index],
            timeout=timeout,
            memory_mb=memory_mb,
            max_output_chars=max_output_chars,
            allow_code_execution=True,
        )
        return index

    with (
        ThreadPoolExecutor(max_workers=num_workers) as pool,
        tqdm(total=len(programs), desc=desc, disable=not show_progress) as progress,
    ):
        for future in as_completed([pool.submit(run_one, index) for index in range(len(programs))]):
            future.result()
            progress.update(1)
    return [result for result in results if result is not None]
