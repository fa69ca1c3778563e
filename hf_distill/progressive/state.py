"""`output_dir/chain_state.json`: which stages are finished and where their results are.

Written atomically (a temporary file renamed over the old one), so a kill leaves either the old or the new state,
never a torn file. A resumed chain skips every finished stage and refuses to continue if a finished stage's
settings changed since (its result would no longer be what the file says it is).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

STATE_FILE = "chain_state.json"


class ChainStateError(RuntimeError):
    """The state on disk does not match the chain being run."""


class ChainState:
    def __init__(self, output_dir: str | os.PathLike, fingerprint: list[dict[str, Any]]) -> None:
        self.path = Path(output_dir) / STATE_FILE
        fingerprint = json.loads(json.dumps(fingerprint, default=str))  # compare as the file will store it
        self.data: dict[str, Any] = {"stages": fingerprint, "finished": {}}
        if self.path.is_file():
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            self._check_compatible(saved, fingerprint)
            self.data["finished"] = saved.get("finished", {})

    @staticmethod
    def _check_compatible(saved: dict[str, Any], fingerprint: list[dict[str, Any]]) -> None:
        for index, old in enumerate(saved.get("stages", [])):
            if old["name"] not in saved.get("finished", {}):
                continue
            new = fingerprint[index] if index < len(fingerprint) else None
            if new != old:
                raise ChainStateError(
                    f"stage {index + 1} ({old['name']}) is finished in {STATE_FILE} with other settings than the "
                    f"chain file now gives it:\n  then: {old}\n  now:  {new}\nUse another output_dir, or delete "
                    "the stage directories from that stage on and their entries in the state file."
                )

    def finished(self, name: str) -> dict[str, Any] | None:
        return self.data["finished"].get(name)

    def mark_finished(self, name: str, **record: Any) -> None:
        self.data["finished"][name] = record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str), encoding="utf-8")
        os.replace(tmp, self.path)
