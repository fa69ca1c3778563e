"""The record of a multi-stage job's finished stages, so a killed job resumes in the stage it was in.

``output_dir/job_state.json`` holds the settings the job was started with and, for each finished stage, what it
left behind (rows written, final checkpoint, report paths). It is rewritten atomically (temporary file + rename)
after each stage, so a kill leaves either the old record or the new one, never half of one. A rerun with other
settings is refused: resuming would silently mix two different jobs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..teachers.resumable import _write_json_atomically

JOB_STATE_FILE = "job_state.json"


class JobSettingsChanged(ValueError):
    """The output directory holds a job started with other settings."""


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _differences(stored: Any, now: Any, prefix: str = "") -> list[str]:
    if isinstance(stored, dict) and isinstance(now, dict):
        found = []
        for key in sorted(set(stored) | set(now)):
            found += _differences(stored.get(key), now.get(key), f"{prefix}{key}.")
        return found
    return [] if stored == now else [f"{prefix.rstrip('.')}: {stored!r} -> {now!r}"]


class JobState:
    """Finished stages of the job in ``directory``; only the ``writer`` process (rank 0) writes the file."""

    def __init__(self, directory: str | os.PathLike, settings: dict[str, Any], writer: bool = True) -> None:
        self.path = Path(directory) / JOB_STATE_FILE
        self.settings = _jsonable(settings)
        self.writer = writer
        self.stages: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            stored = json.loads(self.path.read_text(encoding="utf-8"))
            changed = _differences(stored.get("settings"), self.settings)
            if changed:
                shown = "\n  ".join(changed[:12]) + ("\n  ..." if len(changed) > 12 else "")
                raise JobSettingsChanged(
                    f"{self.path} records a job started with other settings; rerun it with the same settings to "
                    f"resume, or use a fresh output_dir. Changed:\n  {shown}"
                )
            self.stages = stored.get("stages", {})
        else:
            self._write()

    def finished(self, stage: str) -> bool:
        return stage in self.stages

    def info(self, stage: str) -> dict[str, Any]:
        """What the finished ``stage`` recorded (empty when it has not finished)."""
        return dict(self.stages.get(stage, {}))

    def finish(self, stage: str, **info: Any) -> None:
        """Record ``stage`` as finished, with ``info``; a finished stage is never recorded twice."""
        if stage in self.stages:
            raise RuntimeError(f"stage {stage!r} already finished in {self.path}")
        self.stages[stage] = _jsonable(info)
        self._write()

    def _write(self) -> None:
        if self.writer:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _write_json_atomically(self.path, {"settings": self.settings, "stages": self.stages})
