"""Escape attempts against the sandbox, one test per class, under each isolation level.

Classes (issue 13): forging the verdict, outliving the timeout, writing outside the work directory,
getting blocked modules back, opening network connections, reading secrets; plus own finds: fork bombs,
filling the disk, signalling or debugging the harness. Targets are always inside the test's own tmp_path or
loopback; every fork is bounded by ``max_processes`` and a timeout.
"""

from __future__ import annotations

import ast
import os
import re
import select
import shutil
import socket

import pytest
from sandbox_levels import (
    LEVELS,
    SPAWN_FRESH_PYTHON,
    host_processes_with,
    needs_bubblewrap,
    run,
    unique_sleep_seconds,
)

# Finds the harness's "passed" exit status in its frames: the strongest position a forger can be in.
FIND_PASS_CODE = """
import sys
def _find_pass_code():
    frame = sys._getframe()
    while frame is not None:
        if "pass_code" in frame.f_locals:
            return frame.f_locals["pass_code"]
        frame = frame.f_back
    return 0
CODE = _find_pass_code()
print("pass code", CODE, flush=True)
"""

FORGERIES = {
    "raise SystemExit": "raise SystemExit(CODE)\n",
    "os._exit": "import os\nos._exit(CODE)\n",
    "re-imported posix": "del sys.modules['posix']\nimport posix\nposix._exit(CODE)\n",
    "re-created builtin": (
        "import _imp, importlib.machinery\n"
        "_imp.create_builtin(importlib.machinery.ModuleSpec('posix', None))._exit(CODE)\n"
    ),
    "reloaded posix": "import importlib, posix\nimportlib.reload(posix)._exit(CODE)\n",
    "exec a new image": "import os\nos.execv(sys.executable, [sys.executable, '-c', f'raise SystemExit({CODE})'])\n",
    "ctypes": "import ctypes\nctypes.CDLL(None)._exit(CODE)\n",
    "sub-interpreter": (
        "import _xxsubinterpreters as interpreters\n"
        "interpreters.run_string(interpreters.create(), f'import os; os._exit({CODE})')\n"
    ),
    "/proc/self/mem": "open('/proc/self/mem', 'r+b')\n",
    "gc search for a reporter": (
        "import gc\n"
        "for obj in gc.get_objects():\n"
        "    if callable(obj) and 'report' in getattr(obj, '__name__', ''):\n"
        "        obj('passed')\n"
    ),
    "trace that skips assertions": (
        "def tracer(frame, event, arg):\n"
        "    if event == 'line' and frame.f_code.co_filename == 'tests.py':\n"
        "        frame.f_lineno = frame.f_lineno + 1\n"
        "    return tracer\n"
        "sys.settrace(tracer)\n"
        "sys._getframe().f_trace = tracer\n"
    ),
    "replaced exec builtin": "import builtins\nbuiltins.exec = lambda *args, **kwargs: None\n",
    "atexit handler": "import atexit, os\natexit.register(os._exit, CODE)\n",
    "unterminated string swallowing the tests": 'x = """\n',
    "rebound harness statuses": "harness = sys.modules['__main__']\n"
    "for name in ('FAILED', 'MEMORY', 'EXITED_EARLY', 'BLOCKED'):\n    setattr(harness, name, CODE)\n",
    "rebound harness helpers": "harness = sys.modules['__main__']\n"
    "harness._exec = lambda *args, **kwargs: None\nharness._events = []\n",
    "replaced SystemExit": "import builtins\nreal = SystemExit\nbuiltins.SystemExit = lambda code=None: real(CODE)\n",
    "fake traceback module": "import types\nfake = types.ModuleType('traceback')\n"
    "def print_exception(*args, **kwargs):\n    raise SystemExit(CODE)\n"
    "fake.print_exception = print_exception\nsys.modules['traceback'] = fake\n",
    "signal handler raising the status": "import signal\n"
    "def handler(signum, frame):\n    if frame is not None and frame.f_code.co_name == 'main':\n"
    "        raise SystemExit(CODE)\n"
    "signal.signal(signal.SIGALRM, handler)\nsignal.setitimer(signal.ITIMER_REAL, 0.00005, 0.00005)\n",
    "audit hook raising the status": "def hook(event, args):\n"
    "    if sys._getframe(1).f_code.co_name == 'main':\n        raise SystemExit(CODE)\n"
    "sys.addaudithook(hook)\n",
    "stderr that exits": "class Exiting:\n    def write(self, text):\n        raise SystemExit(CODE)\n"
    "    def flush(self):\n        raise SystemExit(CODE)\nsys.stderr = sys.stdout = Exiting()\n",
}


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("technique", sorted(FORGERIES))
def test_a_program_cannot_forge_a_pass(level, technique):
    result = run(level, FIND_PASS_CODE + FORGERIES[technique], "assert False, 'the tests ran and failed'\n")
    assert not result.passed, (technique, result)
    assert result.status in ("failed", "error"), result
    found = re.search(r"pass code (\d+)", result.stdout)
    if found:  # the attacker knew the status that means "passed" and still could not produce it
        assert 64 <= int(found.group(1)) < 114


@pytest.mark.parametrize("level", LEVELS)
def test_blocked_call_fails_even_when_caught(level, tmp_path):
    marker = tmp_path / "shell_ran"
    program = f"import os\ntry:\n    os.system('touch {marker}')\nexcept BaseException:\n    pass\n"
    result = run(level, program, "assert True\n")
    assert (result.status, marker.exists()) == ("failed", False)
    assert "blocked" in result.detail


# --- outliving the timeout --------------------------------------------------------------------------------


@needs_bubblewrap
@pytest.mark.parametrize("loop_forever", [False, True], ids=["returns", "times-out"])
def test_detached_children_die_with_the_sandbox(loop_forever):
    seconds = unique_sleep_seconds()
    program = SPAWN_FRESH_PYTHON + (
        "import os\n"
        "child = \"import os, time\\nos.setsid()\\ntime.sleep(float(__import__('sys').argv[1]))\"\n"
        f"for _ in range(3):\n    spawn(child, {seconds!r})\n" + ("while True:\n    pass\n" if loop_forever else "")
    )
    result = run("bubblewrap", program, "assert True\n", timeout=3.0, max_processes=16)
    assert result.status == ("timeout" if loop_forever else "passed"), result
    assert result.duration_s < 30  # the children hold stdout/stderr open for 600 s: nothing waits for them
    assert host_processes_with(seconds) == []


def test_guard_known_bypass_still_ends_with_the_run():
    """Documented limit: digging the original loader out of the guard's closure brings back process
    creation. The backstop still holds: a detached child carries the run's marker and is killed."""
    seconds = unique_sleep_seconds()
    program = (
        "import sys, _imp\n"
        "_imp.create_dynamic = _imp.create_dynamic.__closure__[0].cell_contents\n"
        "sys.meta_path.pop(0)\n" + SPAWN_FRESH_PYTHON + "spawn('import os, sys, time\\nos.setsid()\\n"
        "time.sleep(float(sys.argv[1]))', " + repr(seconds) + ")\nwhile True:\n    pass\n"
    )
    result = run("guard", program, "assert True\n", timeout=3.0)
    assert result.status == "timeout", result
    assert host_processes_with(seconds) == []


def test_guard_refuses_to_spawn_and_kills_the_session_on_timeout():
    program = SPAWN_FRESH_PYTHON + "spawn('import time; time.sleep(600)')\n"
    result = run("guard", program, "assert True\n", timeout=3.0)
    assert result.status == "failed" and "blocked" in result.detail
    looping = run("guard", "while True:\n    pass\n", timeout=1.0)
    assert looping.status == "timeout"


# --- writing outside the work directory -------------------------------------------------------------------

WRITES = {
    "open": "open(TARGET, 'w').write('x')\n",
    "os.open": "import os\nos.write(os.open(TARGET, os.O_WRONLY | os.O_CREAT), b'x')\n",
    "original FileIO": "import sys\ntype(sys.stdout.buffer.raw)(TARGET, 'w').write(b'x')\n",
    "_io.FileIO": "import _io\n_io.FileIO(TARGET, 'w').write(b'x')\n",
    "pathlib": "import pathlib\npathlib.Path(TARGET).write_text('x')\n",
    "symlink in the work directory": "import os\nos.symlink(os.path.dirname(TARGET), 'link')\n"
    "open(os.path.join('link', os.path.basename(TARGET)), 'w').write('x')\n",
    "directory descriptor": "import os\nfd = os.open(os.path.dirname(TARGET), os.O_RDONLY)\n"
    "os.write(os.open(os.path.basename(TARGET), os.O_WRONLY | os.O_CREAT, dir_fd=fd), b'x')\n",
    "rename out": "open('local', 'w').write('x')\nimport os\nos.rename('local', TARGET)\n",
    "mkdir": "import os\nos.mkdir(TARGET)\n",
    "shutil.copyfile": "open('local', 'w').write('x')\nimport shutil\nshutil.copyfile('local', TARGET)\n",
    "sqlite3": "import sqlite3\nsqlite3.connect(TARGET).execute('create table t (x)')\n",
}


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("technique", sorted(WRITES))
def test_writing_outside_the_work_directory_fails(level, technique, tmp_path):
    target = tmp_path / "escaped"
    result = run(level, f"TARGET = {str(target)!r}\n" + WRITES[technique], "assert True\n")
    assert not target.exists(), (technique, result)
    if level == "guard":  # the guard refuses by rule; under bubblewrap the host path simply is not there
        assert result.status == "failed" and "blocked" in result.detail, result


@needs_bubblewrap
def test_a_fresh_interpreter_in_bubblewrap_cannot_write_to_the_host(tmp_path):
    target = tmp_path / "escaped"
    child = f"import os\nos.makedirs({str(tmp_path)!r}, exist_ok=True)\nopen({str(target)!r}, 'w').write('x')\n"
    program = SPAWN_FRESH_PYTHON + f"import os\nos.waitpid(spawn({child!r}), 0)\n"
    result = run("bubblewrap", program, "assert True\n")
    assert result.status == "passed", result  # it wrote, but into the sandbox's private /tmp
    assert not target.exists()


@pytest.mark.parametrize("level", LEVELS)
def test_inside_the_work_directory_writes_work(level):
    program = "import os\nopen('scratch.txt', 'w').write('x')\nos.mkdir('d')\nos.rename('scratch.txt', 'd/s.txt')\n"
    result = run(level, program, "assert open('d/s.txt').read() == 'x'\n")
    assert result.passed, result


# --- getting blocked modules back -------------------------------------------------------------------------

REIMPORTS = {
    "deleted os and posix": "import sys\ndel sys.modules['os'], sys.modules['posix']\nimport os\nos.system(CMD)\n",
    "reloaded os": "import importlib, os\nimportlib.reload(os).system(CMD)\n",
    "meta_path cleared": "import sys\nsys.meta_path[:] = sys.meta_path[-2:]\nimport subprocess\n"
    "subprocess.run(CMD, shell=True)\n",
    "extension loader": "import _imp, importlib.util\n"
    "spec = importlib.util.find_spec('_posixsubprocess')\n_imp.create_dynamic(spec)\n"
    "import os\nos.system(CMD)\n",
    "posix.system": "import posix\nposix.system(CMD)\n",
}


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("technique", sorted(REIMPORTS))
def test_blocked_modules_stay_blocked(level, technique, tmp_path):
    marker = tmp_path / "shell_ran"
    result = run(level, f"CMD = 'touch {marker}'\n" + REIMPORTS[technique], "assert True\n")
    assert result.status == "failed" and "blocked" in result.detail, (technique, result)
    assert not marker.exists()


# --- network ----------------------------------------------------------------------------------------------


@pytest.fixture
def loopback_listener():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


def _was_contacted(server: socket.socket) -> bool:
    readable, _, _ = select.select([server], [], [], 0.5)
    return bool(readable)


CONNECTS = {
    "socket": "import socket\nsocket.create_connection(('127.0.0.1', PORT), timeout=2)\n",
    "_socket": "import _socket\ns = _socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', PORT))\n",
    "re-imported _socket": "import sys\nsys.modules.pop('_socket', None)\nimport _socket\n"
    "_socket.socket().connect(('127.0.0.1', PORT))\n",
}


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("technique", sorted(CONNECTS))
def test_no_network_connection(level, technique, loopback_listener):
    port = loopback_listener.getsockname()[1]
    result = run(level, f"PORT = {port}\n" + CONNECTS[technique], "assert True\n")
    assert result.status == "failed" and "blocked" in result.detail, result
    assert not _was_contacted(loopback_listener)


@needs_bubblewrap
def test_a_fresh_interpreter_in_bubblewrap_has_no_network(loopback_listener):
    port = loopback_listener.getsockname()[1]
    child = (
        "import socket\ntry:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('CONNECTED', flush=True)\n"
        "except OSError as exc:\n    print('refused:', exc, flush=True)\n"
    )
    program = SPAWN_FRESH_PYTHON + f"import os\nos.waitpid(spawn({child!r}), 0)\n"
    result = run("bubblewrap", program, "assert True\n")
    assert "refused" in result.stdout and "CONNECTED" not in result.stdout, result
    assert not _was_contacted(loopback_listener)


# --- secrets ----------------------------------------------------------------------------------------------

READ_ENVIRONMENTS = """
import os
found = [value for value in os.environ.values() if SECRET in value]
for pid in os.listdir('/proc'):
    if pid.isdigit():
        try:
            with open('/proc/' + pid + '/environ', 'rb') as handle:
                found.append(handle.read().decode(errors='replace'))
        except OSError:
            pass
print('\\n'.join(found), flush=True)
"""


@pytest.mark.parametrize("level", LEVELS)
def test_parent_environment_is_not_readable(level, monkeypatch):
    secret = "hf_distill_secret_" + unique_sleep_seconds()
    monkeypatch.setenv("HF_DISTILL_TEST_SECRET", secret)
    result = run(level, f"SECRET = {secret!r}\n" + READ_ENVIRONMENTS, "assert True\n")
    assert secret not in result.stdout + result.stderr + result.detail
    if level == "guard":
        assert result.status == "failed" and "/proc" in result.detail, result


@needs_bubblewrap
def test_a_fresh_interpreter_in_bubblewrap_sees_only_the_sandbox(monkeypatch):
    secret = "hf_distill_secret_" + unique_sleep_seconds()
    monkeypatch.setenv("HF_DISTILL_TEST_SECRET", secret)
    child = (
        f"SECRET = {secret!r}\n"
        + READ_ENVIRONMENTS
        + "print('pids', [p for p in os.listdir('/proc') if p.isdigit()])\n"
    )
    program = SPAWN_FRESH_PYTHON + f"import os\nos.waitpid(spawn({child!r}), 0)\n"
    result = run("bubblewrap", program, "assert True\n")
    assert result.passed and "pids" in result.stdout, result
    assert secret not in result.stdout
    pids = ast.literal_eval(result.stdout.split("pids", 1)[1].strip())  # the harness, bwrap's init and the child
    assert len(pids) <= 4


@pytest.mark.parametrize("level", LEVELS)
def test_files_readable_by_path(level, tmp_path):
    secret = "hf_distill_secret_" + unique_sleep_seconds()
    (tmp_path / "token").write_text(secret)
    result = run(level, f"print(open({str(tmp_path / 'token')!r}).read())\n", "assert True\n")
    if level == "bubblewrap":
        assert secret not in result.stdout and not result.passed, result
    else:  # documented limit of the guard: any file the user can read stays readable by path
        assert secret in result.stdout


# --- own finds: fork bombs, disk, signals, debuggers ------------------------------------------------------


@needs_bubblewrap
def test_process_count_is_bounded_and_nothing_survives():
    seconds = unique_sleep_seconds()
    program = (
        "from multiprocessing.util import spawnv_passfds\nstarted = 0\n"
        "try:\n    for _ in range(500):\n"
        f"        spawnv_passfds(b'/bin/sleep', [b'sleep', b'{seconds}'], [])\n        started += 1\n"
        "except OSError as exc:\n    print('stopped:', exc)\n"
        "print('started', started, flush=True)\n"
    )
    result = run("bubblewrap", program, "assert True\n", max_processes=16)
    started = int(re.search(r"started (\d+)", result.stdout).group(1))
    assert started < 16 and "stopped" in result.stdout, result
    assert host_processes_with(seconds) == []


@pytest.mark.parametrize("level", LEVELS)
def test_file_size_is_capped(level):
    result = run(level, "open('big', 'wb').write(b'0' * (64 * 2**20))\n", "assert True\n", max_file_mb=4)
    assert result.status == "failed" and "File too large" in result.detail, result


@needs_bubblewrap
def test_the_work_directory_and_tmp_cannot_fill_the_disk():
    program = (
        "import os\nfor directory in ('.', '/tmp'):\n    for index in range(40):\n"
        "        with open(os.path.join(directory, f'part{index}'), 'wb') as handle:\n"
        "            handle.write(b'0' * (4 * 2**20))\n"
    )
    result = run("bubblewrap", program, "assert True\n", max_file_mb=8)
    assert result.status == "failed" and "No space left on device" in result.detail, result


@pytest.mark.parametrize("level", LEVELS)
def test_signals_are_refused(level):
    result = run(level, f"import os, signal\nos.kill({os.getpid()}, 0)\n", "assert True\n")
    assert result.status == "failed" and "os.kill" in result.detail, result


@needs_bubblewrap
def test_host_processes_are_invisible_to_a_fresh_interpreter():
    child = f"import os\ntry:\n    os.kill({os.getpid()}, 0)\n    print('SEEN')\n"
    child += "except OSError as exc:\n    print('unseen', exc)\n"
    program = SPAWN_FRESH_PYTHON + f"import os\nos.waitpid(spawn({child!r}), 0)\n"
    result = run("bubblewrap", program, "assert True\n")
    assert "unseen" in result.stdout and "SEEN" not in result.stdout, result


@needs_bubblewrap
@pytest.mark.skipif(shutil.which("gdb") is None, reason="needs gdb to attempt the attach")
def test_a_debugger_cannot_attach_to_the_harness():
    program = (
        "import os\nfrom multiprocessing.util import spawnv_passfds\n"
        "pid = spawnv_passfds(b'/usr/bin/gdb', [b'gdb', b'-batch', b'-p', b'2', b'-ex', b'call (void)_exit(77)'], [])\n"
        "os.waitpid(pid, 0)\n"
    )
    result = run("bubblewrap", program, "assert False, 'the tests ran'\n", timeout=30)
    assert result.status == "failed" and "the tests ran" in result.detail, result
