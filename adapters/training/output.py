"""The output folder of a training run: checked before any work, checkpoints while it runs, the model when done.

Two rules hold together:

- Finished work is never lost, and nothing in the folder is replaced unasked. A folder that holds a finished
  model or files this package did not write is refused unless `overwrite` is set; even then the old content is
  replaced only once the new model is complete: the model is written to a temporary folder beside OUT and
  renamed over it, so OUT never holds a half-written model.
- An interrupted run continues. While training, OUT holds `checkpoints/` (one Trainer checkpoint per epoch,
  and `run.json`, the fingerprint of the run: data rows, configuration, base weights). Those checkpoints are
  ours and mean "resume": rerunning the same command finds them and continues from the last complete epoch.
  Checkpoints of a different run (other data or configuration), a damaged checkpoint (a file cut short or
  unreadable) and one of another architecture are refused unless `overwrite`, which starts the run over (said in
  one line); `fresh` (the CLI's --overwrite) always starts a new run.

One run at a time: `lock()` holds a lock file beside OUT (`.OUT.lock`, holding the pid of its holder) for the whole
run, so that a second run into the same folder is refused at once, naming that pid, instead of resuming the live
run's checkpoints under it. The lock is the operating system's (flock): it goes when its process does.

OUT is checked where it really is: a symbolic link is resolved first, and a system folder, the filesystem root,
or a folder holding the home folder, the current folder, the data or Python's installation is refused even with
`overwrite`, since its content would be replaced.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
RUN_FILE = "run.json"
TRAINER_STATE = "trainer_state.json"
_CHECKPOINT_NAME = re.compile(r"checkpoint-([0-9]+)")
MAX_SEED = 2**32 - 1
# Folders whose content training must never replace, whatever the flags (and everything below them).
SYSTEM_FOLDERS = tuple(Path(p) for p in ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32",
                                          "/proc", "/sbin", "/sys", "/usr", "/System", "/Library"))


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
    except (OSError, ValueError, RecursionError):
        return None
    ours = isinstance(run, dict) and isinstance(run.get("fingerprint"), str) and type(run.get("seed")) is int
    return run if ours else None


def run_damage(folder: Path) -> str | None:
    """Why the run.json of a checkpoints folder cannot be used, or None when it can (or there is none)."""
    if not (folder / RUN_FILE).exists():
        return None
    run = read_run(folder)
    if run is None:
        return f"{CHECKPOINTS}/{RUN_FILE} is not a run's fingerprint and seed"
    if not 0 <= run["seed"] <= MAX_SEED:
        return f"{CHECKPOINTS}/{RUN_FILE} holds a seed out of range (0 to {MAX_SEED})"
    return None


def checkpoint_damage(checkpoint: Path) -> str | None:
    """Why `checkpoint` cannot be resumed from (a file cut short or unreadable), or None: checked before Trainer
    reads it, which would fail with a traceback on every run."""
    try:
        state = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:
        return f"its {TRAINER_STATE} cannot be read ({type(error).__name__})"
    if not isinstance(state, dict) or type(state.get("global_step")) is not int:
        return f"its {TRAINER_STATE} is not a Trainer state"
    weights = sorted(checkpoint.glob("*.safetensors"))
    if not weights:
        return "it holds no safetensors weights"
    try:
        for path in weights:
            tensor_shapes(path)
        for path in sorted([*checkpoint.glob("*.pt"), *checkpoint.glob("*.pth")]):
            with zipfile.ZipFile(path):  # torch.save writes a zip archive; cut short, it has no directory
                pass
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        return f"its {path.name} is cut short or unreadable ({type(error).__name__})"
    return None


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape, from a safetensors file's header; ValueError when the file is shorter (or longer) than
    its header says."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if size < 8 or length > size - 8:
            raise ValueError(f"{path.name} is cut short")
        header = json.loads(handle.read(length))
    tensors = {name: value for name, value in header.items() if name != "__metadata__"} \
        if isinstance(header, dict) else None
    try:
        end = max((int(value["data_offsets"][1]) for value in tensors.values()), default=0)
        shapes = {name: tuple(int(d) for d in value["shape"]) for name, value in tensors.items()}
    except (AttributeError, KeyError, TypeError, IndexError):
        raise ValueError(f"{path.name} has no safetensors header") from None
    if 8 + length + end != size:
        raise ValueError(f"{path.name} is cut short")
    return shapes


def other_architecture(checkpoint: Path, model: Any) -> str | None:
    """Why `checkpoint`'s weights do not fit `model` (weights it does not have, or of other shapes), as
    `load_weights` refuses another architecture's weights, or None. Trainer would load them with a warning."""
    state = model.state_dict()
    expected = {}
    for name, tensor in state.items():  # peft saves LoRA and modules_to_save weights without the adapter's name
        for saved in (name, name.replace(".modules_to_save.default.", "."), name.replace(".default.", ".")):
            expected[saved] = tuple(tensor.shape)
    found: dict[str, tuple[int, ...]] = {}
    for path in checkpoint.glob("*.safetensors"):
        found.update(tensor_shapes(path))
    unexpected = sorted(name for name in found if name not in expected)
    reshaped = sorted(name for name in found if name in expected and found[name] != expected[name])
    missing: list[str] = []
    if not (checkpoint / "adapter_config.json").is_file():  # a whole model (a LoRA checkpoint holds only LoRA's)
        shared: dict[int, list[str]] = {}  # tied weights share storage, and only one of them is saved
        for name, tensor in state.items():
            shared.setdefault(tensor.untyped_storage().data_ptr(), []).append(name)
        missing = sorted(names[0] for names in shared.values() if not any(name in found for name in names))
    if not unexpected and not reshaped and not missing:
        return None
    problems = [f"{len(names)} {kind} weight(s) ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
                for kind, names in (("unexpected", unexpected), ("reshaped", reshaped), ("missing", missing))
                if names]
    return f"{' and '.join(problems)}: weights of another architecture"


@dataclass(frozen=True)
class OutputFolder:
    path: Path
    overwrite: bool = False
    keep: tuple[Path, ...] = ()  # folders OUT must not contain, since its old content is replaced (the data)
    fresh: bool = False  # start a new run whatever checkpoints OUT holds (the CLI's --overwrite)

    def __post_init__(self) -> None:
        # Where OUT really is: a symbolic link is resolved, so that checks, checkpoints and the final rename all
        # act on the folder it points to (renaming over the link itself failed with IsADirectoryError).
        object.__setattr__(self, "path", Path(os.path.realpath(Path(self.path).expanduser())))

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    def check(self) -> None:
        """Refuse, before any data is read, a location training could not write or would replace unasked."""
        path = self.path
        whole = path
        system = next((folder for folder in SYSTEM_FOLDERS if whole == folder or whole.is_relative_to(folder)), None)
        if system is not None:
            raise OutputError(f"output folder {str(path)!r} is a system folder ({system}); choose a folder of its own")
        installed = (Path(sys.prefix), Path(sys.base_prefix), Path(__file__).parents[2])
        for kept in (Path.cwd(), Path.home(), *installed, *self.keep):
            if Path(os.path.realpath(kept)).is_relative_to(whole):
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

    @property
    def lock_path(self) -> Path:
        return self.path.parent / f".{self.path.name}.lock"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold OUT for this process while the block runs; OutputError at once, naming the holder's pid, when
        another process holds it. The lock file stays (a later run takes it again); the pid beside it is ours."""
        from filelock import FileLock, Timeout

        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.lock_path))
        holder = self.lock_path.with_name(self.lock_path.name + ".pid")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            try:
                pid = holder.read_text(encoding="ascii").strip()
            except OSError:
                pid = ""
            who = f"process {pid}" if pid.isdigit() else "another process"
            raise OutputError(f"output folder {str(self.path)!r} is in use: {who} is training into it (lock "
                              f"{str(self.lock_path)!r}); wait for it to finish, stop it, or choose another "
                              "folder") from None
        try:
            holder.write_text(f"{os.getpid()}\n", encoding="ascii")
            yield
        finally:
            holder.unlink(missing_ok=True)
            lock.release()

    def foreign_entries(self) -> list[str]:
        """What OUT holds besides the checkpoints of an unfinished run of this package."""
        if not self.path.is_dir():
            return []
        ours = {CHECKPOINTS} if (self.checkpoints / RUN_FILE).is_file() else set()
        return sorted(p.name for p in self.path.iterdir() if p.name not in ours)

    def begin(self, fingerprint: str, seed: int, fallback: Path | None = None) -> Resume:
        """Claim `checkpoints/` for the run `fingerprint`: continue its checkpoints, or start a fresh folder.

        `fallback` is another checkpoints folder of the same run (the model's artifacts on the platform),
        copied in when OUT has none. Checkpoints of another run, or damaged ones, are an OutputError unless
        `overwrite`, which starts over; with `fresh` the run starts over whatever is there.
        """
        if self.fresh:
            return self.start_over(fingerprint, seed, "--overwrite starts a new run" if self.checkpoints.exists()
                                   else None)
        damage = run_damage(self.checkpoints)
        run = None if damage else read_run(self.checkpoints)
        if (run is None or run["fingerprint"] != fingerprint) and fallback is not None:
            fallback_run = None if run_damage(fallback) else read_run(fallback)
            if fallback_run is not None and fallback_run["fingerprint"] == fingerprint \
                    and latest_checkpoint(fallback) is not None:
                logger.info("resuming from the checkpoints stored with the model (%s)", fallback)
                shutil.rmtree(self.checkpoints, ignore_errors=True)
                shutil.copytree(fallback, self.checkpoints)
                run, damage = fallback_run, None
        if damage:
            return self.refuse_or_start_over(fingerprint, seed, damage)
        if run is not None and run["fingerprint"] == fingerprint:  # this run: continue it, with its seed
            checkpoint = latest_checkpoint(self.checkpoints)
            if checkpoint is not None:
                problem = checkpoint_damage(checkpoint)
                if problem:
                    return self.refuse_or_start_over(fingerprint, seed, f"{CHECKPOINTS}/{checkpoint.name}: {problem}")
                _relocate_best(self.checkpoints)
                logger.warning("resuming the interrupted run from %s", checkpoint)
            return Resume(checkpoint, run["seed"])
        if self.checkpoints.exists():
            if not self.overwrite:
                raise OutputError(f"output folder {str(self.path)!r} holds checkpoints of a different run (other "
                                  "data, configuration or weights); pass --overwrite to start over, or choose "
                                  "another folder")
            logger.warning("removing checkpoints of a different run from %s", self.checkpoints)
        return self.start_over(fingerprint, seed)

    def refuse_or_start_over(self, fingerprint: str, seed: int, problem: str) -> Resume:
        """A checkpoint that cannot be resumed (damaged, or of another architecture): refused, in one line, unless
        `overwrite`, which starts the run over (said in one line)."""
        if not self.overwrite:
            raise OutputError(f"output folder {str(self.path)!r}: the checkpoint cannot be resumed: {problem} "
                              "(damaged or not this model's); pass --overwrite to start a new run, or choose another "
                              "folder")
        return self.start_over(fingerprint, seed, f"{problem} (damaged or not this model's)")

    def start_over(self, fingerprint: str, seed: int, reason: str | None = None) -> Resume:
        """An empty `checkpoints/` holding this run's fingerprint and seed; `reason` is logged when any was there."""
        if reason is not None:
            logger.warning("output folder %s: %s; starting the run over", self.path, reason)
        if self.checkpoints.is_dir() and not self.checkpoints.is_symlink():
            shutil.rmtree(self.checkpoints)
        elif self.checkpoints.exists() or self.checkpoints.is_symlink():
            self.checkpoints.unlink()
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
