"""Files a runtime derives from the weights (an ONNX export, a CTranslate2 conversion): where they live, when they
are stale, and how they are published.

A derived folder is keyed by what it was made from: the content of a local `model_path` folder (a SHA-256 of each
file, so weights replaced in place with files of the same size and time, as `cp -p` or `tar` leave them, make a
new key), or a hub id; the `transformers` class it was made for; and a variant. The digest of a file is computed
once and remembered with its size, times and inode in the cache (`.digests/`), so later loads only `stat` the
files. A folder is built in a private staging folder and renamed into place whole: readers never see half of
one. Concurrent first builds of one folder wait for the first (a lock file beside it) and then use its result;
a folder in the cache that is incomplete or was not written here is rebuilt, never blamed on the user.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..core.errors import ConfigurationError
from ..core.loading import PICKLE_SUFFIXES, check_local_weights

logger = logging.getLogger(__name__)

DIGESTS = ".digests"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class DerivedKind:
    """One kind of derived folder (ONNX exports, CTranslate2 conversions) and its cache."""

    variable: str  # the environment variable naming its cache folder
    cache_name: str  # the cache folder's name under $HF_HOME otherwise
    info_file: str  # what was derived from what; written last, so a folder holding it is complete
    main_file: str  # what the runtime loads; a model_path holding it is such a folder already
    config_folder: str = ""  # where the `transformers` config is, inside the folder

    def complete(self, folder: Path) -> bool:
        return (folder / self.info_file).is_file() and (folder / self.main_file).is_file()

    def folder(self, model_class: Any, model_path: str, build: Callable[[Path], Any], variant: str = "") -> Path:
        """`model_path` itself when it is such a folder, else its cached build (made by `build(folder)` once);
        either way one of weights `model_class` can run."""
        given = Path(model_path).expanduser()
        if (given / self.main_file).is_file():
            folder = given
        else:
            check_local_weights(model_path)  # refused sources (pickles, missing folders) leave nothing in the cache
            cached = derived_folder(model_path, model_class, cache_root(self.variable, self.cache_name), variant)
            folder = built_once(cached, self.complete, build)
        refuse_other_architecture(model_class, folder, folder / self.config_folder, self.info_file, model_path)
        return folder


def cache_root(variable: str, cache_name: str) -> Path:
    """`$<variable>`, else `$HF_HOME/<cache_name>` (HF_HOME defaulting to ~/.cache/huggingface)."""
    return Path(os.environ.get(variable) or os.path.join(
        os.environ.get("HF_HOME") or os.path.expanduser("~/.cache/huggingface"), cache_name))


def derived_folder(model_path: str, model_class: Any, root: Path, variant: str = "") -> Path:
    """The folder under `root` for what is derived from `model_path` for `model_class` (and `variant`)."""
    source = Path(model_path).expanduser()
    origin = source_digest(source, root) if source.is_dir() else f"hub:{model_path}"
    key = json.dumps([origin, getattr(model_class, "__name__", str(model_class)), variant])
    name = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return root / (f"{name}-{variant}" if variant else name)


def source_digest(folder: Path, root: Path) -> str:
    """A SHA-256 of the files a loader may read from `folder` (every plain file but hidden ones and pickles, which
    are never loaded), by name and content; each file's digest is remembered under `root` by its stat."""
    memo_file = root / DIGESTS / (hashlib.sha256(str(folder.resolve()).encode("utf-8", "surrogateescape"))
                                  .hexdigest()[:32] + ".json")
    try:
        remembered = json.loads(memo_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        remembered = {}
    remembered = remembered if isinstance(remembered, dict) else {}
    files: dict[str, list[Any]] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix in PICKLE_SUFFIXES or not path.is_file():
            continue
        stat = path.stat()
        stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]
        known = remembered.get(path.name)
        same = isinstance(known, list) and len(known) == 6 and known[:5] == stamp
        files[path.name] = [*stamp, known[5] if same else _file_digest(path)]
    if files != remembered:
        _write_atomically(memo_file, json.dumps(files))
    whole = hashlib.sha256(json.dumps([[name, entry[5]] for name, entry in files.items()]).encode("utf-8",
                                                                                                   "surrogateescape"))
    return whole.hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename; a cache that cannot be written only costs a digest next time."""
    staging = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(staging, path)
    except OSError as error:
        logger.debug("could not remember file digests in %s: %s", path, error)
        if staging is not None:
            with contextlib.suppress(OSError):
                os.unlink(staging)


def built_once(folder: Path, complete: Callable[[Path], bool], build: Callable[[Path], Any]) -> Path:
    """`folder`, built by `build(folder)` unless `complete(folder)`; concurrent first builds (threads or processes)
    wait for the first one and use its result."""
    if complete(folder):
        return folder
    from filelock import FileLock

    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{folder}.lock"):
        if not complete(folder):
            build(folder)
    return folder


@contextlib.contextmanager
def written_folder(output_dir: Path, info_file: str, info: dict[str, Any], cache: bool = False) -> Iterator[Path]:
    """Build a derived folder in a private staging folder beside `output_dir`, then rename it into place whole.

    A folder a user named (`cache` false) replaces only an earlier folder of the same kind (it holds
    `info_file`); anything else there is refused. In a runtime's cache, a complete folder already there (another
    process finished first) wins and this build is dropped, and anything else there is replaced. `info_file` is
    written last: a folder that has it is complete. A failed build leaves nothing behind.
    """
    if not cache and output_dir.exists() and any(output_dir.iterdir()) and not (output_dir / info_file).is_file():
        raise FileExistsError(f"{output_dir} exists and is not an earlier {info_file.split('.')[0]} folder; "
                              "choose a new or empty folder")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=output_dir.parent))
    try:
        yield staging
        (staging / info_file).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        _publish(staging, output_dir, keep_complete=(output_dir / info_file).is_file if cache else None)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, output_dir: Path, keep_complete: Callable[[], bool] | None) -> None:
    """Rename `staging` to `output_dir`, moving what is there aside first (a rename cannot replace a folder that
    has files); with `keep_complete`, a complete folder that another writer published first is kept instead."""
    while True:
        try:
            staging.rename(output_dir)
            return
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise
        if keep_complete is not None and keep_complete():
            logger.info("%s was completed by another process first; using it", output_dir)
            return
        aside = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old-", dir=output_dir.parent))
        try:
            output_dir.replace(aside) if output_dir.is_dir() and not output_dir.is_symlink() else output_dir.unlink()
        except FileNotFoundError:
            pass  # another writer moved it: try again
        finally:
            shutil.rmtree(aside, ignore_errors=True)


def refuse_other_architecture(model_class: Any, folder: Path, config_folder: Path, info_file: str,
                              model_path: str) -> None:
    """Refuse a derived folder made from weights `model_class` cannot run (DialoGPT's conversion given to the T5
    email writer), as `load_weights` refuses such weights for the torch runtime."""
    from transformers import AutoConfig

    mapping = getattr(model_class, "_model_mapping", None)
    if mapping is None:  # a concrete class, not an Auto class: nothing to compare against
        return
    try:
        config = AutoConfig.from_pretrained(config_folder, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"model_path {model_path!r}: {folder} has no readable config.json "
                                 f"({type(error).__name__}); point model_path at the original weights") from None
    try:
        info = json.loads((folder / info_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = None  # a folder derived elsewhere: its config names the architecture it was saved from
    made = info.get("architecture") if isinstance(info, dict) else (config.architectures or [None])[0]
    expected = mapping[type(config)].__name__ if type(config) in mapping else None
    if expected is None or made != expected:
        raise ConfigurationError(f"model_path {model_path!r} holds a {config.model_type!r} model ({made}), which "
                                 f"{model_class.__name__} cannot run")
