"""The harness that runs inside the sandbox: limits, exit interception, then the program and its tests.

This file is never imported by hf_distill. Its source is handed to ``python -I -S -c`` in the child, so it
may use the standard library only. The verdict is the child's exit status, read by the parent: the program
has no report channel to write to, and the status that means "passed" is a random number the parent picks
per run. The program's own ways to end the process early (``sys.exit``, ``os._exit``, ``exec*``) are
intercepted and reported as an early exit, never as a pass.
"""

import builtins
import marshal
import os
import sys

FAILED, MEMORY, EXITED_EARLY, BLOCKED = 10, 11, 12, 13
NOTICE = "hf_distill-sandbox: "
BLOCKED_EVENT = "hf_distill.sandbox.blocked"  # raised with a description; the policy ends the process

# The interpreter's own callables, bound before the program can replace the builtins.
_exec, _compile = exec, compile


def _print_exception(error, skip_frames):
    """Print a traceback (imported only on failure: it costs more than a passing run's whole harness)."""
    import traceback

    trace = error.__traceback__
    for _ in range(skip_frames):
        trace = trace.tb_next if trace is not None else None
    traceback.print_exception(type(error), error, trace)


class SandboxViolation(BaseException):
    """Raised by the guard's blocked calls if the policy did not end the process first."""


class _Intercepted(BaseException):
    """Raised instead of ending the process when the program calls ``os._exit`` or ``exec*``."""


_events = []  # what the program tried: ("exit", text) or ("blocked", text)


def _notice(text):
    try:
        sys.stderr.write("\n" + NOTICE + text + "\n")
        sys.stderr.flush()
    except Exception:
        pass


def _apply_limits(config):
    import resource

    limits = (
        (resource.RLIMIT_AS, config["memory_bytes"]),
        (resource.RLIMIT_CPU, config["cpu_seconds"]),
        (resource.RLIMIT_FSIZE, config["file_bytes"]),
        (resource.RLIMIT_NPROC, config["max_processes"]),
        (resource.RLIMIT_NOFILE, 256),
        (resource.RLIMIT_CORE, 0),
    )
    for kind, value in limits:
        if value >= 0:
            try:
                resource.setrlimit(kind, (value, value))
            except (ValueError, OSError):
                pass
    import _signal  # not `signal`: its enum import costs more than the rest of the harness

    _signal.signal(_signal.SIGXFSZ, _signal.SIG_IGN)  # oversized writes fail with OSError instead of killing us


def _drop_privileges(uid):
    """Become an unprivileged user: root ignores RLIMIT_NPROC and can read any root-owned file."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise RuntimeError("could not drop privileges")


def _seal_builtin_modules():
    """Import every built-in module now, then make creating fresh copies impossible.

    A fresh ``posix`` (``del sys.modules['posix']; import posix``) would bring back the original
    ``_exit``. Refusing ``_imp.create_builtin`` without keeping a reference to it leaves nothing to recover.
    """
    for name in sys.builtin_module_names:
        if name not in sys.modules:
            try:
                __import__(name)
            except ImportError:
                pass
    import _imp

    audit = sys.audit

    def create_builtin(spec):
        text = "re-creating the built-in module " + repr(getattr(spec, "name", spec))
        audit(BLOCKED_EVENT, text)  # the policy ends the process here
        raise ImportError(text + " is disabled in the sandbox")

    _imp.create_builtin = create_builtin


def _replace(module_names, function_names, make):
    for module_name in module_names:
        module = sys.modules.get(module_name)
        for name in function_names:
            if module is not None and hasattr(module, name):
                setattr(module, name, make(module_name + "." + name, getattr(module, name)))


_EXITS = ("_exit", "execv", "execve", "execl", "execle", "execlp", "execlpe", "execvp", "execvpe", "fexecve")


def _intercept_exits():
    def make(name, original):
        def intercepted(*args, **kwargs):
            _events.append(("exit", name))
            raise _Intercepted(name)

        return intercepted

    _replace(("os", "posix"), _EXITS, make)


def _refuse_signal_handlers():
    """A signal handler runs between any two bytecodes of the harness, so it could raise the "passed" exit
    status itself once the tests have failed. Installing handlers and timers is therefore refused."""
    audit = sys.audit

    def make(name, original):
        def refused(*args, **kwargs):
            audit(BLOCKED_EVENT, name + " (signal handlers and timers)")
            raise OSError(name + " is disabled in the sandbox")

        return refused

    _replace(("_signal",), ("signal", "setitimer", "alarm", "set_wakeup_fd", "siginterrupt"), make)


def _run(program_code, test_code):
    """Run the program, then its tests; None when the tests ran to their end, else the failure status.

    Everything this decides with is bound in locals before the program starts, and the statuses are
    literals: the program can rebind this module's globals and the builtins, but not a running frame's locals.
    """
    run, intercepted, memory_error, system_exit = exec, _Intercepted, MemoryError, SystemExit
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    try:
        run(program_code, namespace)
        run(test_code, namespace)
    except memory_error:
        _notice("MemoryError: the program exceeded the sandbox memory limit")
        return 11  # MEMORY
    except (system_exit, intercepted) as exc:
        _notice("the program ended the process (" + type(exc).__name__ + ") before its checks finished")
        return 12  # EXITED_EARLY
    except BaseException as exc:
        _print_exception(exc, 1)
        return 10  # FAILED
    if _events:
        _notice("the program ended the process (" + str(_events[0][1]) + ") before its checks finished")
        return 12  # EXITED_EARLY: it caught the interception and went on
    return None


def main():
    # Locals bound before the program runs: the end of this function cannot be redirected by it.
    end_process, catch_all = SystemExit, BaseException
    config = marshal.loads(sys.stdin.buffer.read())  # marshal: built in, so nothing to import
    sys.stdin.close()
    pass_code = config.pop("pass_code")
    _apply_limits(config)
    if config["drop_to_uid"] >= 0:
        _drop_privileges(config["drop_to_uid"])
    codes = []
    for name in ("program.py", "tests.py"):
        with open(os.path.join(config["inputs"], name), encoding="utf-8") as handle:
            source = handle.read()
        try:  # compiled separately: an unterminated string in the program cannot swallow the tests
            codes.append(_compile(source, name, "exec", dont_inherit=True, optimize=0))
        except (SyntaxError, ValueError) as exc:
            _print_exception(exc, 99)
            raise end_process(FAILED) from None
    _seal_builtin_modules()
    policy = {"__name__": "hf_distill_policy"}
    _exec(config["policy_source"], policy)
    policy["install_policy"](config["guard"], os.path.realpath(os.getcwd()), BLOCKED)
    del policy
    _intercept_exits()
    _refuse_signal_handlers()
    if config["guard"]:
        guard = {"__name__": "hf_distill_guard"}
        _exec(config["guard_source"], guard)
        guard["install_guard"](_events, SandboxViolation)
        del guard
    status = 10  # FAILED unless _run returns normally
    try:
        status = _run(*codes)
    except catch_all:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except catch_all:
            pass
    raise end_process(pass_code if status is None else status)


if __name__ == "__main__":
    main()
