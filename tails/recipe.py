"""A model's training from scratch, stage by stage, as one resumable command.

A bundled model is the last of several training stages, each starting where an earlier one
left off (models/README.md tells each one's story).  Its folder holds the **recipe**,
``recipe.yaml``: the stages in order, what each starts from and the ``train:`` keys it ran
with.  ``tails reproduce models/<name> --output_dir=DIR`` runs them all with :func:`tails.train.train`::

    DIR/recipe.yaml             the recipe being reproduced (a folder holds one recipe only)
    DIR/data/train, data/val    the simulated tiles, shared by the stages (built when missing)
    DIR/<stage>/                each stage's run folder (tails.train); the last one's
                                best.weights.h5 is the model

A stage starts in one of three ways:

``scratch``
    from random weights;
``{weights: S}``
    from stage ``S``'s ``best.weights.h5``, with a fresh optimizer (``train.init_checkpoint``);
``{resume: S}``
    as a continuation of stage ``S``'s run: a copy of its folder, so that the optimizer's
    state, the epoch count, the log and the best epoch so far carry over, and the stage's keys
    apply from the next epoch on.

A recipe's top-level ``train:`` keys apply to every stage, a stage's own on top of them, both
on top of the ``train`` section of the config given (config.defaults.yaml by default).  Stages
end by their ``epochs`` (a count of epochs in the run, resumed ones included), never by
``max_hours``, so that a recipe means the same on any machine.  The folders' paths
(``output_dir``, ``dataset.path``, ``dataset.val_path``), ``init_checkpoint`` and ``max_hours``
are the command's to set (:data:`RESERVED`); a recipe that sets them is refused.

Running the command again resumes: a finished stage is skipped and an interrupted one goes on
from its last checkpoint.  Runs on CPU threads are not bit-reproducible, and the frames are
those of the simulator as it is now, so a reproduction follows the recipe rather than
recovering the shipped weights to the bit.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .atomic import atomic_path
from .config import ConfigError, load_config, load_defaults
from .train import check_train_config, checkpoint_state, train

__all__ = ["RECIPE_FILENAME", "Stage", "Recipe", "recipe_file", "load_recipe", "parse_recipe", "stage_configs",
           "reproduce", "reproduce_command"]

log = logging.getLogger(__name__)

#: Name of the recipe file in a model's folder, and in a reproduction's.
RECIPE_FILENAME = "recipe.yaml"

#: ``train`` keys that the command sets for every stage, and a recipe may not.
RESERVED = ("output_dir", "dataset.path", "dataset.val_path", "init_checkpoint", "max_hours")

#: A stage's name is its folder's.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Stage:
    """One training run of a recipe.

    Attributes
    ----------
    name : str
        Its run folder's name.
    start : {"scratch", "weights", "resume"}
        What it starts from (module docstring).
    source : str or None
        The earlier stage it starts from, for ``weights`` and ``resume``.
    train : dict
        Its ``train:`` keys, on top of the recipe's.
    note : str
        Where its story is told (free text).
    """

    name: str
    start: str
    source: str | None = None
    train: dict = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class Recipe:
    """A model's stages in order, and the ``train:`` keys they share."""

    model: str
    stages: tuple[Stage, ...]
    train: dict = field(default_factory=dict)


def _check_keys(overrides: Any, defaults: dict, where: str, prefix: str = "") -> None:
    """Refuse keys that ``config.defaults.yaml``'s ``train`` section lacks, or reserved ones."""
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: train{'.' + prefix.rstrip('.') if prefix else ''} must be a mapping of keys")
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if dotted in RESERVED:
            raise ConfigError(
                f"{where}: train.{dotted} is set by `tails reproduce` for every stage; remove it from the recipe"
            )
        if key not in defaults:
            raise ConfigError(f"{where}: train.{dotted} is unknown: check its spelling against config.defaults.yaml")
        if isinstance(defaults[key], dict):
            _check_keys(value, defaults[key], where, f"{dotted}.")


def _merge(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` laid over it, mappings merged key by key (copies)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _parse_start(value: Any, where: str) -> tuple[str, str | None]:
    if value == "scratch":
        return "scratch", None
    if isinstance(value, dict) and len(value) == 1:
        (how, source), = value.items()
        if how in ("weights", "resume") and isinstance(source, str):
            return how, source
    raise ConfigError(f"{where}: start must be scratch, {{weights: STAGE}} or {{resume: STAGE}}, got {value!r}")


def parse_recipe(doc: Any, origin: str = "recipe") -> Recipe:
    """A :class:`Recipe` from a recipe file's content, checked.

    Parameters
    ----------
    doc : dict
        The YAML document: ``model``, optional ``train``, and ``stages``, a list of mappings
        with ``name``, ``start``, and optional ``train`` and ``note``.
    origin : str
        What to call it in errors (its path).

    Raises
    ------
    tails.config.ConfigError
        Naming what is wrong: a missing or unknown key, an unknown ``train`` key or one the
        command sets, a stage that starts from itself, a later stage or one not in the recipe,
        a name used twice, or a ``resume`` across a change of ``localisation``.
    """
    if not isinstance(doc, dict):
        raise ConfigError(f"{origin} must hold a mapping with model, train and stages")
    unknown = sorted(set(doc) - {"model", "train", "stages"})
    if unknown:
        raise ConfigError(f"{origin}: unknown key {unknown[0]!r} (a recipe has model, train and stages)")
    if not isinstance(doc.get("model"), str) or not doc["model"]:
        raise ConfigError(f"{origin}: model must name the model the recipe makes")
    defaults = load_defaults()["train"]
    common = doc.get("train") or {}
    _check_keys(common, defaults, origin)
    entries = doc.get("stages")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{origin}: stages must be a non-empty list")
    stages: list[Stage] = []
    for i, entry in enumerate(entries):
        where = f"{origin}, stage {i + 1}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a mapping with name, start, train and note")
        unknown = sorted(set(entry) - {"name", "start", "train", "note"})
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r} (a stage has name, start, train and note)")
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME.match(name) or name == "data":
            raise ConfigError(f"{where}: name must be a folder name of letters, digits, '_', '.' or '-' "
                              f"(and not 'data'), got {name!r}")
        where = f"{origin}, stage {name}"
        if name in {s.name for s in stages}:
            raise ConfigError(f"{where}: the name is used by an earlier stage")
        start, source = _parse_start(entry.get("start"), where)
        if i == 0 and start != "scratch":
            raise ConfigError(f"{where}: the first stage must start from scratch")
        if source is not None and source not in {s.name for s in stages}:
            raise ConfigError(f"{where}: starts from {source!r}, which is not an earlier stage")
        own = entry.get("train") or {}
        _check_keys(own, defaults, where)
        stages.append(Stage(name, start, source, own, str(entry.get("note", ""))))
    recipe = Recipe(doc["model"], tuple(stages), common)
    # a run's checkpoint holds one model: resuming it as another fails on its optimizer's variables
    localisation = {s.name: c["train"]["localisation"]
                    for s, c in zip(recipe.stages, stage_configs(recipe, {"train": defaults}, "."))}
    for stage in recipe.stages:
        if stage.start == "resume" and localisation[stage.source] != localisation[stage.name]:
            raise ConfigError(f"{origin}, stage {stage.name}: resumes {stage.source} with another localisation; "
                              "start it from its weights instead ({weights: ...})")
    return recipe


def recipe_file(path: str | Path) -> Path:
    """A recipe file's path: ``path`` itself, or the ``recipe.yaml`` of the model's folder it names."""
    path = Path(path).expanduser()
    return path / RECIPE_FILENAME if path.is_dir() else path


def load_recipe(path: str | Path) -> Recipe:
    """Read and check a recipe file, or the ``recipe.yaml`` of a model's folder."""
    path = recipe_file(path)
    if not path.is_file():
        raise ConfigError(
            f"recipe {path} does not exist: give a model's folder (models/<name>) or its {RECIPE_FILENAME}"
        )
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe {path} is not valid YAML: {e}") from e
    return parse_recipe(doc, str(path))


def stage_configs(recipe: Recipe, config: dict, output_dir: str | Path) -> list[dict]:
    """Each stage's full configuration, in order: ``config`` with the stage's ``train`` section.

    Parameters
    ----------
    recipe : Recipe
    config : dict
        The configuration the stages build on (its ``train`` section is the base).
    output_dir : str or Path
        The reproduction's folder.

    Returns
    -------
    list of dict
        One configuration per stage, for :func:`tails.train.train`.
    """
    out = Path(output_dir)
    configs = []
    for stage in recipe.stages:
        c = copy.deepcopy(config)
        t = _merge(_merge(config["train"], recipe.train), stage.train)
        t["output_dir"] = str(out / stage.name)
        t["dataset"]["path"] = str(out / "data" / "train")
        t["dataset"]["val_path"] = str(out / "data" / "val")
        t["max_hours"] = None
        t["init_checkpoint"] = str(out / stage.source / "best.weights.h5") if stage.start == "weights" else None
        c["train"] = t
        configs.append(c)
    return configs


def _epoch(run_dir: Path) -> int:
    """The epochs a run folder has trained (0 when it has no checkpoint)."""
    state = checkpoint_state(run_dir)
    return int(json.loads(state.read_text())["epoch"]) if state.is_file() else 0


def _copy_run(source: Path, run_dir: Path) -> None:
    """``run_dir`` as a copy of ``source``'s run, unfinished; whole or not at all."""
    tmp = run_dir.with_name(f".{run_dir.name}.copying")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("DONE"))
    shutil.rmtree(run_dir, ignore_errors=True)  # a folder a refused start left empty
    tmp.rename(run_dir)


def _claim(output_dir: Path, recipe_path: Path, recipe: Recipe) -> None:
    """Mark ``output_dir`` as this recipe's reproduction; refuse one of another recipe, or a folder
    that holds anything but a data set (``data``, which may be built beforehand)."""
    mark = output_dir / RECIPE_FILENAME
    text = recipe_path.read_text()
    if mark.is_file():
        if parse_recipe(yaml.safe_load(mark.read_text()), str(mark)) != recipe:
            raise FileExistsError(
                f"{output_dir} holds the reproduction of another recipe ({mark}); choose another --output_dir"
            )
        return
    if output_dir.is_dir() and any(p.name != "data" for p in output_dir.iterdir()):
        raise FileExistsError(
            f"{output_dir} holds files of something other than a reproduction; choose another --output_dir"
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(mark) as tmp:
        tmp.write_text(text)


def reproduce(recipe_path: str | Path, output_dir: str | Path, config: dict | None = None,
              max_epochs: int | None = None) -> Path:
    """Train a recipe's stages in order, resuming what an earlier call left.

    Parameters
    ----------
    recipe_path : str or Path
        A recipe file, or a model's folder holding one.
    output_dir : str or Path
        The reproduction's folder (module docstring).
    config : dict, optional
        The configuration the stages build on; config.defaults.yaml by default.
    max_epochs : int, optional
        Train at most this many epochs now, over all stages (run again to go on).

    Returns
    -------
    Path
        The last stage's ``best.weights.h5``; it exists only once the last stage has trained.

    Raises
    ------
    tails.config.ConfigError
        For a malformed recipe, or a stage whose ``train`` section is malformed (all are
        checked before anything is trained).
    FileExistsError
        If ``output_dir`` holds a finished reproduction, one of another recipe, or anything else
        but a ``data`` folder.
    ValueError
        For a ``max_epochs`` that is not a positive integer.
    """
    if max_epochs is not None and (isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1):
        raise ValueError(f"max_epochs must be a whole number of epochs, 1 or more, got {max_epochs!r}")
    recipe_path = recipe_file(recipe_path)
    recipe = load_recipe(recipe_path)
    configs = stage_configs(recipe, config if config is not None else load_config(), output_dir)
    for stage, c in zip(recipe.stages, configs):
        try:
            check_train_config(c["train"])
        except ConfigError as e:
            raise ConfigError(f"{recipe_path}, stage {stage.name}: {e}") from e
    out = Path(output_dir)
    final = out / recipe.stages[-1].name
    if (final / "DONE").exists():
        raise FileExistsError(
            f"{out} holds a finished reproduction of {recipe.model} ({final / 'best.weights.h5'}); "
            "choose another --output_dir"
        )
    _claim(out, recipe_path, recipe)

    trained = 0  # epochs trained by this call, over all stages
    t0 = time.time()
    for i, (stage, c) in enumerate(zip(recipe.stages, configs)):
        run_dir = Path(c["train"]["output_dir"])
        if (run_dir / "DONE").exists():
            log.info("stage %d of %d, %s: finished before, skipped", i + 1, len(configs), stage.name)
            continue
        if max_epochs is not None and trained >= max_epochs:
            break
        if stage.start == "resume" and not checkpoint_state(run_dir).is_file():
            _copy_run(out / stage.source, run_dir)
        log.info("stage %d of %d, %s (%s%s): to epoch %d", i + 1, len(configs), stage.name, stage.start,
                 f" {stage.source}" if stage.source else "", c["train"]["epochs"])
        before = _epoch(run_dir)
        train(c, max_epochs=None if max_epochs is None else max_epochs - trained)
        trained += _epoch(run_dir) - before
        if not (run_dir / "DONE").exists():
            break
    if (final / "DONE").exists():
        log.info("%s reproduced in %.1f hours: %s", recipe.model, (time.time() - t0) / 3600, final / "best.weights.h5")
    else:
        log.info("stopped before the end of the recipe; run the same command again to go on")
    return final / "best.weights.h5"


def reproduce_command(recipe: str, output_dir: str | None = None, config: str | None = None,
                      max_epochs: int | None = None) -> str:
    """Train a bundled model from scratch, all its stages in order; resumes an unfinished one.

    Parameters
    ----------
    recipe : str
        A model's folder (``models/tails-20261203``) or a recipe file.
    output_dir : str, optional
        The reproduction's folder; ``train_runs/<model>`` by default.
    config : str, optional
        A YAML config whose ``train`` section the stages build on (config.defaults.yaml).
    max_epochs : int, optional
        Train at most this many epochs now, over all stages (run again to go on).

    Returns
    -------
    str
        The last stage's ``best.weights.h5``.
    """
    if output_dir is None:
        output_dir = str(Path("train_runs") / load_recipe(recipe).model)
    cfg = load_config(config) if config is not None else None
    return str(reproduce(recipe, output_dir, config=cfg, max_epochs=max_epochs))
