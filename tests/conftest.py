"""Shared pytest fixtures.  Keep them small and generic; add new fixtures below."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

# Import the checkout's `tails` even when the package is not installed (`pip install -e .`),
# and the helpers beside this file (fitsutil, irsa_server).
_TESTS = Path(__file__).resolve().parent
for _p in (str(_TESTS.parent), str(_TESTS)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from fitsutil import FRAME_NAME, SyntheticFrame, write_irsa_frame  # noqa: E402
from irsa_server import IrsaServer  # noqa: E402


@dataclass
class IrsaMirror:
    """A folder in IRSA's layout holding one synthetic frame."""

    root: Path
    name: str
    paths: dict[str, Path]
    frame: SyntheticFrame

    @property
    def url(self) -> str:
        """The folder as a ``file://`` base URL."""
        return self.root.resolve().as_uri() + "/"


@pytest.fixture
def irsa_mirror(tmp_path: Path) -> IrsaMirror:
    """One small synthetic frame (sci, diff .fz, ref) in IRSA's layout under ``tmp_path/irsa``."""
    root = tmp_path / "irsa"
    paths, frame = write_irsa_frame(root, FRAME_NAME)
    return IrsaMirror(root=root, name=FRAME_NAME, paths=paths, frame=frame)


@pytest.fixture
def irsa_server(irsa_mirror: IrsaMirror):
    """An :class:`irsa_server.IrsaServer` on 127.0.0.1 serving :func:`irsa_mirror`."""
    with IrsaServer(irsa_mirror.root) as server:
        yield server


@pytest.fixture(scope="session")
def fresh_checkpoint(tmp_path_factory) -> Path:
    """Weights of a freshly initialised Tails() model: for plumbing tests, not for scores."""
    import keras

    from tails.efficientdet import Tails

    keras.utils.set_random_seed(7)
    path = tmp_path_factory.mktemp("model") / "fresh.weights.h5"
    Tails().save_weights(path)
    return path


# Models converted to LiteRT (tails.litert) are cached under $XDG_CACHE_HOME: keep the tests'
# conversions out of the user's cache, in one folder for the session (a checkpoint is converted
# once).  Set at import so that subprocesses inherit it.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="tails-test-cache-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], ignore_errors=True)
