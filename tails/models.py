"""Bundled models and ``fetch-models``: download model folders from a base URL, verified.

A model is a folder ``models/{name}/`` holding ``tails.weights.h5``, a card ``MODEL.md`` and a
``MANIFEST.json`` that lists every file with its size and SHA-256::

    {"name": "tails-20261124", "status": "experimental",
     "files": {"tails.weights.h5": {"size": 15937536, "sha256": "..."}}}

``status`` says whether the model has met the targets of its card on held-out data
(``validated``) or not yet (``experimental``); the CLI warns when it runs an experimental model.

``fetch_models`` reads ``{models.url}{name}/MANIFEST.json``, downloads each file that is missing
or whose checksum differs, verifies it, and moves it into place only then.  Files already present
and verified are skipped, so it can run at every start-up.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Iterable

import requests

from .atomic import atomic_path

__all__ = [
    "MANIFEST",
    "STATUSES",
    "sha256sum",
    "write_manifest",
    "verify_model",
    "model_status",
    "warn_if_experimental",
    "package_model",
    "fetch_models",
]

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
#: A model's status: ``validated`` when its evaluation met the targets in its card.
STATUSES = ("validated", "experimental")
REPO_ROOT = Path(__file__).resolve().parent.parent


class ModelFetchError(RuntimeError):
    """A model could not be downloaded or failed its checksum."""


def sha256sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(folder: str | os.PathLike, status: str = "experimental") -> Path:
    """Write ``MANIFEST.json`` for every file in a model folder (but itself).

    Parameters
    ----------
    folder : path
        The model folder.
    status : str
        ``validated`` only when the model's evaluation met the targets in its card.
    """
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    folder = Path(folder)
    files = {
        p.name: {"size": p.stat().st_size, "sha256": sha256sum(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    }
    path = folder / MANIFEST
    path.write_text(json.dumps({"name": folder.name, "status": status, "files": files}, indent=1) + "\n")
    return path


def model_status(checkpoint: str | os.PathLike) -> str | None:
    """The status in the manifest beside a checkpoint, or None when it has no manifest."""
    manifest = Path(checkpoint).parent / MANIFEST
    if not manifest.is_file():
        return None
    return json.loads(manifest.read_text()).get("status", "experimental")


def warn_if_experimental(checkpoint: str | os.PathLike | None) -> None:
    """Log a warning when a model (None: the bundled one) has not met the targets of its card."""
    from .efficientdet import find_bundled_checkpoint

    path = find_bundled_checkpoint() if checkpoint is None else Path(checkpoint)
    if model_status(path) == "experimental":
        log.warning(
            "model %s is experimental: it has not met the targets of its card (%s); "
            "treat its detections with care", path.parent.name, path.parent / "MODEL.md"
        )


def verify_model(folder: str | os.PathLike) -> list[str]:
    """Names of the files of a model folder that are missing or fail their checksum."""
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    return [
        name
        for name, meta in manifest["files"].items()
        if not (folder / name).is_file() or sha256sum(folder / name) != meta["sha256"]
    ]


def package_model(
    run_dir: str | os.PathLike,
    name: str,
    eval_dir: str | os.PathLike | None = None,
    status: str = "experimental",
    models_dir: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
) -> Path:
    """Make a bundled model folder from a training run (and its evaluation).

    Saves the weights of the run's ``best.weights.h5``, or of ``weights`` when given (an average
    of checkpoints, :func:`tails.efficientdet.average_checkpoints`), as ``tails.weights.h5`` (the
    model's variables only: a training checkpoint also holds the optimizer's, twice as many),
    copies the run's ``log.csv`` and ``train.json`` as ``training_log.csv`` and
    ``training_config.json``, and the evaluation's ``metrics.json`` as ``evaluation.json``; then
    writes the manifest.  The card, ``MODEL.md``, is written by a person:
    it must say what the evaluation showed.

    Returns
    -------
    Path
        The model folder, ``models/{name}``.
    """
    import shutil

    run_dir = Path(run_dir)
    folder = Path(models_dir) if models_dir is not None else REPO_ROOT / "models"
    folder = folder / name
    folder.mkdir(parents=True, exist_ok=True)
    from .efficientdet import load_model

    source = run_dir / "best.weights.h5" if weights is None else Path(weights)
    model = load_model(source)  # a fresh, uncompiled Tails(): no optimizer
    with atomic_path(folder / "tails.weights.h5") as tmp:
        model.save_weights(tmp)
    shutil.copyfile(run_dir / "log.csv", folder / "training_log.csv")
    shutil.copyfile(run_dir / "train.json", folder / "training_config.json")
    if eval_dir is not None:
        shutil.copyfile(Path(eval_dir) / "metrics.json", folder / "evaluation.json")
    write_manifest(folder, status=status)
    return folder


def _download(session: requests.Session, url: str, dest: Path, sha256: str, timeout: float) -> None:
    """Stream ``url`` into ``dest``, moved into place only when its checksum is right."""
    with atomic_path(dest) as tmp, session.get(url, stream=True, timeout=timeout) as r:
        if r.status_code != 200:
            raise ModelFetchError(f"{url} answered HTTP {r.status_code}: check models.url and the model name")
        h = hashlib.sha256()
        with open(tmp, "wb") as f:
            for block in r.iter_content(1 << 20):
                f.write(block)
                h.update(block)
        if h.hexdigest() != sha256:
            raise ModelFetchError(f"{url}: checksum mismatch (corrupt or truncated download); try again")


def fetch_models(
    names: str | Iterable[str] | None = None,
    config: str | None = None,
    url: str | None = None,
    path: str | None = None,
    timeout: float = 60.0,
) -> list[str]:
    """Make sure the named models are present and verified, downloading what is missing.

    Parameters
    ----------
    names : str or list of str, optional
        Model folder names, e.g. ``tails-20261124``; default: every folder under ``path`` that has
        a manifest (which then only verifies them).
    config : str, optional
        YAML config for ``models.url`` and ``models.path``; default: config.defaults.yaml.
    url, path : str, optional
        Override ``models.url`` and ``models.path``.
    timeout : float
        Seconds per request.

    Returns
    -------
    list of str
        One line per model: fetched, or already present.

    Raises
    ------
    ModelFetchError
        When a download fails or a file fails its checksum (nothing partial is left behind).
    """
    from .config import load_config

    cfg = load_config(config)["models"]
    base = (url or cfg["url"]).rstrip("/") + "/"
    root = Path(path or cfg["path"])
    if not root.is_absolute():
        root = REPO_ROOT / root
    if names is None:
        names = sorted(p.parent.name for p in root.glob(f"*/{MANIFEST}"))
    elif isinstance(names, str):
        names = [n for n in names.split(",") if n]
    report = []
    with requests.Session() as session:
        for name in names:
            folder = root / name
            folder.mkdir(parents=True, exist_ok=True)
            r = session.get(f"{base}{name}/{MANIFEST}", timeout=timeout)
            if r.status_code != 200:
                if (folder / MANIFEST).is_file() and not verify_model(folder):
                    report.append(f"{name}: present and verified (server answered HTTP {r.status_code})")
                    continue
                raise ModelFetchError(f"no manifest for model {name!r} at {base}{name}/{MANIFEST} (HTTP {r.status_code})")
            manifest = r.json()
            fetched = 0
            for fname, meta in manifest["files"].items():
                dest = folder / fname
                if dest.is_file() and sha256sum(dest) == meta["sha256"]:
                    continue
                log.info("fetching %s/%s (%d bytes)", name, fname, meta.get("size", -1))
                _download(session, f"{base}{name}/{fname}", dest, meta["sha256"], timeout)
                fetched += 1
            (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
            report.append(f"{name}: {'fetched ' + str(fetched) + ' file(s)' if fetched else 'already present, verified'}")
    return report
