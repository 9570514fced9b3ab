"""The output folder of a training run: checked before any work, checkpoints while it runs, the model when done.

Two rules hold together:

- Finished work is never lost, and nothing in the folder is replaced unasked. A folder that holds a finished
  model or files this package did not write is refused unless `overwrite` is set; even then the old content is
  replaced only once the new model is complete: the model is written to a temporary folder beside OUT and
  renamed over it, so OUT never holds a half-written model.
- An interrupted run continues. While training, OUT holds `checkpoints/` (one Trainer checkpoint per epoch,
  and `run.json`, the fingerprint of the run: data rows, configuration, base weights). Those checkpoints are
  ours and mean "resume": rerunning the same command finds them and continues from the last complete epoch.
  Checkpoints of a different run (other data or configuration) are refused unless `overwrite`, which starts over.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
RUN_FILE = "run.json"
TRAINER_STATE = "trainer_state.json"
_CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")


class OutputError(ValueError):
    """The output location cannot take this run; the message says what to change."""


@dataclass(frozen=True)
class Resume:
    """Where a run starts: the checkpoint to continue from (None: from scratch) and the run's seed."""

    checkpoint: Path | None
    seed: int


def latest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint with the most optimizer steps whose Trainer state was written (the last one is complete)."""
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT_NAME.fullmatch(p.name))
             and (p / TRAINER_STATE).is_file()] if folder.is_dir() else []
    return max(found)[1] if found else None


def read_run(folder: Path) -> dict | None:
    """The `run.json` of a checkpoints folder, or None when there is none (or it is unreadable: not ours)."""
    try:
        run = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ours = isinstance(run, dict) and isinstance(run.get("fingerprint"), str) and type(run.get("seed")) is int
    return run if ours else None


@dataclass(frozen=True)
class OutputFolder:
    path: Path
    overwrite: bool = False
    keep: tuple[Path, ...] = ()  # folders OUT must not contain, since its old content is replaced (the data)

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    def check(self) -> None:
        """Refuse, before any data is read, a location training could not write or would replace unasked."""
        path = self.path
        whole = path.resolve()
        for kept in (Path.cwd(), *self.keep):
            if kept.resolve().is_relative_to(whole):
                raise OutputError(f"output folder {str(path)!r} contains {str(kept)!r}, which a finished model would "
                                  "replace; choose a folder of its own")
        if path.exists() and not path.is_dir():
            raise OutputError(f"output folder {str(path)!r} is a file, not a folder")
        existing = path
        while not existing.exists():
            if existing.parent == existing:
                break
            existing = existing.parent
        if existing != path and not existing.is_dir():
            raise OutputError(f"output folder {str(path)!r} cannot be created: {str(existing)!r} is a file")
        # Checkpoints go into OUT; the finished model is renamed into place from beside it.
        needed = [path, path.parent] if path.exists() else [existing]
        for folder in needed:
            if not os.access(folder, os.W_OK | os.X_OK):
                raise OutputError(f"output folder {str(path)!r} cannot be written: no write permission on "
                                  f"{str(folder)!r}")
        foreign = self.foreign_entries()
        if foreign and not self.overwrite:
            what = "a finished model" if "config.json" in foreign else "files this run did not write"
            listed = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise OutputError(f"output folder {str(path)!r} holds {what} ({listed}); pass --overwrite to replace "
                              "its content once the new model is complete, or choose another folder")

    def foreign_entries(self) -> list[str]:
        """What OUT holds besides the checkpoints of an unfinished run of this package."""
        if not self.path.is_dir():
            return []
        ours = {CHECKPOINTS} if read_run(self.checkpoints) is not None else set()
        return sorted(p.name for p in self.path.iterdir() if p.name not in ours)

    def begin(self, fingerprint: str, seed: int, fallback: Path | None = None) -> Resume:
        """Claim `checkpoints/` for the run `fingerprint`: continue its checkpoints, or start a fresh folder.

        `fallback` is another checkpoints folder of the same run (the model's artifacts on the platform),
        copied in when OUT has none. Checkpoints of another run are an OutputError unless `overwrite`.
        """
        run = read_run(self.checkpoints)
        if (run is None or run["fingerprint"] != fingerprint) and fallback is not None:
            fallback_run = read_run(fallback)
            if fallback_run is not None and fallback_run["fingerprint"] == fingerprint \
                    and latest_checkpoint(fallback) is not None:
                logger.info("resuming from the checkpoints stored with the model (%s)", fallback)
                shutil.rmtree(self.checkpoints, ignore_errors=True)
                shutil.copytree(fallback, self.checkpoints)
                run = fallback_run
        if run is not None and run["fingerprint"] == fingerprint:  # this run: continue it, with its seed
            checkpoint = latest_checkpoint(self.checkpoints)
            if checkpoint is not None:
                _relocate_best(self.checkpoints)
                logger.warning("resuming the interrupted run from %s", checkpoint)
            return Resume(checkpoint, run["seed"])
        if self.checkpoints.exists():
            if not self.overwrite:
                raise OutputError(f"output folder {str(self.path)!r} holds checkpoints of a different run (other "
                                  "data, configuration or weights); pass --overwrite to start over, or choose "
                                  "another folder")
            logger.warning("removing checkpoints of a different run from %s", self.checkpoints)
            shutil.rmtree(self.checkpoints) if self.checkpoints.is_dir() else self.checkpoints.unlink()
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        (self.checkpoints / RUN_FILE).write_text(json.dumps({"fingerprint": fingerprint, "seed": seed}) + "\n",
                                                 encoding="utf-8")
        return Resume(None, seed)

    def publish(self, write: Callable[[Path], None]) -> None:
        """Run `write(folder)` into a temporary folder beside OUT, then put it in OUT's place in one rename.

        OUT's old content (the checkpoints, or what --overwrite replaces) is removed only after the rename.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}.partial-"))
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp's 0700 would become OUT's mode
        try:
            write(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        old = None
        if self.path.exists():
            old = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}.old-"))
            self.path.replace(old)  # an empty folder is replaced by the rename
        try:
            staging.replace(self.path)
        except OSError:
            if old is not None:
                old.replace(self.path)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _relocate_best(checkpoints: Path) -> None:
    """Trainer records the best checkpoint by path; after the folder moved (or was copied in), point it here."""
    for state_file in checkpoints.glob(f"checkpoint-*/{TRAINER_STATE}"):
        state = json.loads(state_file.read_text(encoding="utf-8"))
        best = state.get("best_model_checkpoint")
        if best and Path(best) != checkpoints / Path(best).name:
            state["best_model_checkpoint"] = str(checkpoints / Path(best).name)
            state_file.write_text(json.dumps(state, indent=2), encoding="utf-8")
