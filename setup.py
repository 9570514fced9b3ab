"""Build hook: the installed `adapters` package carries a copy of the app manifest (dataloop.json at the root of the
repository, which Dataloop reads there), so `hf-adapters` finds every model's defaults outside a clone too."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

MANIFEST = Path(__file__).resolve().parent / "dataloop.json"


class BuildWithManifest(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "adapters" / "dataloop.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(MANIFEST, target)


setup(cmdclass={"build_py": BuildWithManifest})
