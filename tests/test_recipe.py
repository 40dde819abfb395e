"""A model's training from scratch as one command: the recipe, its checks, and its stages run in order."""

import copy
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tails.config import ConfigError, load_config
from tails.recipe import load_recipe, parse_recipe, reproduce, stage_configs
from toy_tiles import blob_shards

MODELS = Path(__file__).resolve().parents[1] / "models"

#: The ``train`` keys that make a run what it is (not where it writes, nor how long it may take).
RECIPE_KEYS = (
    "seed", "localisation", "batch_size", "positive_fraction", "curriculum", "min_snr_extended", "hard_negatives",
    "augment", "steps_per_epoch", "learning_rate", "lr_constant_epochs", "lr_decay", "loss_weight_p",
    "loss_weight_xy", "early_stopping_patience",
)
DATASET_KEYS = ("seeds", "val_seeds", "comets_per_frame", "negatives_per_frame")


def test_the_bundled_models_recipe_ends_with_the_run_that_made_it():
    """The recipe's last stage is the shipped model's training run, as its training_config.json
    and training_log.csv recorded it; every stage is a valid training run."""
    folder = MODELS / "tails-20261203"
    recipe = load_recipe(folder)
    assert recipe.model == folder.name and recipe.stages[0].start == "scratch"
    configs = stage_configs(recipe, load_config(), "out")
    last = configs[-1]["train"]
    recorded = json.loads((folder / "training_config.json").read_text())
    for key in RECIPE_KEYS:
        assert last[key] == recorded[key], key
    for key in DATASET_KEYS:
        assert last["dataset"][key] == recorded["dataset"][key], key
    # the run was stopped by max_hours after the epochs its log holds; the recipe runs those
    assert last["epochs"] == len(pd.read_csv(folder / "training_log.csv")) and last["max_hours"] is None
    assert last["init_checkpoint"] == str(Path("out") / recipe.stages[-2].name / "best.weights.h5")
    from tails.train import check_train_config

    for c in configs:
        check_train_config(c["train"])


def _doc():
    return {
        "model": "toy",
        "train": {"batch_size": 2, "steps_per_epoch": 1, "dataset": {"seeds": [1, 3], "val_seeds": [3, 4]}},
        "stages": [
            {"name": "a", "start": "scratch", "train": {"epochs": 1}},
            {"name": "b", "start": {"weights": "a"}, "train": {"epochs": 1, "learning_rate": 5.0e-4}},
            {"name": "c", "start": {"resume": "b"}, "train": {"epochs": 2, "hard_negatives": {"fraction": 0.5}}},
        ],
    }


def _edit(path, value):
    def edit(doc):
        *parents, last = path
        node = doc
        for key in parents:
            node = node[key]
        node[last] = value
        return doc
    return edit


@pytest.mark.parametrize("edit, message", [
    (_edit(["stages"], []), "stages must be a non-empty list"),
    (_edit(["stages", 0, "start"], {"weights": "b"}), "the first stage must start from scratch"),
    (_edit(["stages", 1, "start"], {"weights": "c"}), "stage b: starts from 'c', which is not an earlier stage"),
    (_edit(["stages", 2, "start"], {"resume": "c"}), "stage c: starts from 'c', which is not an earlier stage"),
    (_edit(["stages", 1, "start"], "pretrained"), r"start must be scratch, \{weights: STAGE\} or \{resume: STAGE\}"),
    (_edit(["stages", 2, "name"], "a"), "stage a: the name is used by an earlier stage"),
    (_edit(["stages", 2, "name"], "../up"), "name must be a folder name"),
    (_edit(["stages", 0, "train", "learning_rat"], 1e-3), r"stage a: train\.learning_rat is unknown"),
    (_edit(["train", "dataset", "path"], "elsewhere"), r"train\.dataset\.path is set by `tails reproduce`"),
    (_edit(["stages", 1, "train", "init_checkpoint"], "x.weights.h5"), r"train\.init_checkpoint is set by"),
    (_edit(["stages", 1, "train", "max_hours"], 1.0), r"train\.max_hours is set by"),
    (_edit(["stages", 2, "train", "localisation"], "dense"), "stage c: resumes b with another localisation"),
    (_edit(["stages", 0, "epochs"], 3), "stage 1: unknown key 'epochs'"),
    (_edit(["version"], 2), "unknown key 'version'"),
])
def test_a_malformed_recipe_is_refused_with_what_is_wrong(edit, message):
    with pytest.raises(ConfigError, match=message):
        parse_recipe(edit(_doc()), "toy.yaml")


def test_a_stage_with_a_bad_train_key_is_refused_before_anything_is_trained(tmp_path):
    doc = _edit(["stages", 2, "train", "epochs"], 0)(_doc())
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=r"stage c: train\.epochs must be a positive integer, got 0"):
        reproduce(tmp_path / "recipe.yaml", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match=r"recipe .*nowhere.* does not exist: give a model's folder"):
        load_recipe(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="max_epochs must be a whole number of epochs, 1 or more, got 0"):
        reproduce(tmp_path / "recipe.yaml", tmp_path / "out", max_epochs=0)
    assert not (tmp_path / "out").exists()


def test_the_stages_run_in_order_each_from_where_its_recipe_says_and_resume(tmp_path):
    """scratch, then the weights of the first with a fresh optimizer, then a continuation of the
    second's run; stopped after one epoch, the same call goes on where it stopped; a finished
    reproduction, or a folder of another recipe, is refused."""
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(_doc()))
    out = tmp_path / "out"
    blob_shards(out / "data" / "train", [1, 2], per_seed=4)  # the data are there: nothing is simulated
    blob_shards(out / "data" / "val", [3], per_seed=4)
    cfg = copy.deepcopy(load_config())
    cfg["train"]["dataset"]["processes"] = 1

    final = reproduce(tmp_path / "recipe.yaml", out, config=cfg, max_epochs=1)
    assert final == out / "c" / "best.weights.h5" and not final.exists()
    assert (out / "a" / "DONE").exists() and not (out / "b").exists()
    assert yaml.safe_load((out / "recipe.yaml").read_text()) == _doc()
    a_log = (out / "a" / "log.csv").read_text()

    assert reproduce(tmp_path / "recipe.yaml", out, config=cfg) == final and final.is_file()
    assert (out / "a" / "log.csv").read_text() == a_log  # finished: not trained again
    b = json.loads((out / "b" / "train.json").read_text())
    assert b["init_checkpoint"] == str(out / "a" / "best.weights.h5") and b["learning_rate"] == 5.0e-4
    assert b["output_dir"] == str(out / "b") and b["dataset"]["path"] == str(out / "data" / "train")
    c = json.loads((out / "c" / "train.json").read_text())
    assert c["init_checkpoint"] is None and c["hard_negatives"]["fraction"] == 0.5
    # c went on from b's run: b's epoch, then its own, in one log and one epoch count
    assert pd.read_csv(out / "c" / "log.csv")["epoch"].tolist() == [1, 2]
    assert json.loads((out / "c" / "DONE").read_text())["epoch"] == 2
    assert pd.read_csv(out / "b" / "log.csv")["epoch"].tolist() == [1]

    with pytest.raises(FileExistsError, match="holds a finished reproduction of toy"):
        reproduce(tmp_path / "recipe.yaml", out, config=cfg)
    other = _edit(["stages", 2, "name"], "d")(_doc())
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    with pytest.raises(FileExistsError, match="holds the reproduction of another recipe"):
        reproduce(tmp_path / "other.yaml", out, config=cfg)
    assert not (out / "d").exists()
    (tmp_path / "busy" / "notes").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="holds files of something other than a reproduction"):
        reproduce(tmp_path / "recipe.yaml", tmp_path / "busy", config=cfg)


def test_tails_reproduce_names_a_missing_recipe_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from tails.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", "models/tails-19990101"]) == 2
    assert "recipe models/tails-19990101 does not exist: give a model's folder" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
