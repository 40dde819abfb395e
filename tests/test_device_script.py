"""The pure parts of ``scripts/device/train.py``, the training run on a lent GPU machine.

The whole script was dry-run on a CPU with ``--smoke`` (models/README.md); a run takes minutes,
so the suite checks only its config and the splitting of what comes back.
"""

import importlib.util
from argparse import Namespace
from pathlib import Path

import numpy as np

from tails.config import check_config, load_defaults
from tails.train import dataset_spec

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "device" / "train.py"


def _script():
    spec = importlib.util.spec_from_file_location("device_train", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_run_config_is_a_full_config_of_the_frames_simulated(tmp_path):
    script = _script()
    args = Namespace(first_seed=100000, first_val_seed=200000, val_frames=8, processes=16, batch_size=64,
                     learning_rate=3e-4, lr_constant_epochs=4, steps_per_epoch=100, pool=2000,
                     init_checkpoint="models/tails-20261125b/tails.weights.h5", min_snr_extended=5.0,
                     broad_seeing=0.25)
    config = script.run_config(tmp_path, args, n_train=48)
    check_config(config, load_defaults())  # every key, and no other
    spec, path = dataset_spec(config, "train")
    assert spec.seeds == list(range(100000, 100048)) and path == str(tmp_path / "train")
    assert spec.broad_seeing == 0.25 and tuple(spec.broad_seeing_range) == (3.6, 4.5)
    assert dataset_spec(config, "val")[0].seeds == list(range(200000, 200008))
    t = config["train"]
    assert t["init_checkpoint"] == "models/tails-20261125b/tails.weights.h5"
    assert t["output_dir"] == str(tmp_path / "run") and t["dataset"]["processes"] == 16
    assert t["jit_compile"] == "auto" and t["max_hours"] is None and t["min_snr_extended"] == 5.0


def test_weights_come_back_in_parts_that_join_to_the_file(tmp_path):
    script = _script()
    data = np.random.default_rng(0).bytes(2500)
    (tmp_path / "tails.weights.h5").write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    parts = script.split(tmp_path / "tails.weights.h5", out, part_bytes=1000)
    assert [p.name for p in parts] == [f"tails.weights.h5.part-a{c}" for c in "abc"]
    assert [p.stat().st_size for p in parts] == [1000, 1000, 500]
    assert b"".join(p.read_bytes() for p in sorted(out.iterdir())) == data  # as `cat part-*` joins them
    assert script.PART_BYTES < 16 * 2**20  # the device tool returns files of at most 16 MiB
