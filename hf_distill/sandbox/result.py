"""The outcome of one sandboxed run."""

from __future__ import annotations

from dataclasses import asdict, dataclass

STATUSES = ("passed", "failed", "timeout", "error", "memory")
# Strongest first: "bubblewrap" is OS-level isolation, "guard" the in-process fallback.
ISOLATION_LEVELS = ("bubblewrap", "guard")


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one sandboxed run. ``status`` is one of ``STATUSES``; ``passed`` iff it is "passed".

    ``isolation`` is the level the program ran under (one of ``ISOLATION_LEVELS``).
    """

    passed: bool
    status: str
    detail: str = ""
    duration_s: float = 0.0
    stdout: str = ""
    stderr: str = ""
    isolation: str = ""

    def to_dict(self) -> dict:
        return asdict(self)
