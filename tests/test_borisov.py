"""The original's reference test, on a simulated 2I/Borisov frame, with the bundled model.

Exactly one detection, p > 0.9, within 5 px of (x, y) = (558, 2639) in
``ztf_20191014495961_000570_zr_c05_o_q3`` (ZTF.md, "The original Tails").  The frame is simulated
with seeds that differ from the demo's (scripts/demo.py), so that the demo's frame is not what
this test sees, and it goes through the whole CLI path: download from a loopback IRSA-layout
server, SWarp, tiles, model, merging.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from bundled import with_bundled_model
from irsa_server import IrsaServer

from tails.config import load_config

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from demo import BORISOV, NAME, SEED  # noqa: E402

TEST_SEED = SEED + 1000


@with_bundled_model
def test_borisov_is_found_once_where_it_is(tmp_path):
    from tails.simulate import simulate_frame, write_frame

    assert TEST_SEED != SEED
    write_frame(simulate_frame(NAME, seed=TEST_SEED, comets=[BORISOV]), tmp_path / "irsa")
    with IrsaServer(tmp_path / "irsa") as server:
        cfg = load_config()
        cfg["irsa"]["url"] = server.url
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
        r = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "run_tails.py"), f"--config={tmp_path / 'config.yaml'}",
             "--score_threshold=0.5", "--cleanup=none", f"--single_image={NAME}",
             f"--output_base_path={tmp_path / 'out'}"],
            capture_output=True, text=True, timeout=900,
        )
    assert r.returncode == 0, r.stderr
    det = pd.read_csv(tmp_path / "out" / "runs" / NAME[4:12] / f"{NAME}.csv")
    assert len(det) == 1, det
    assert det.loc[0, "p"] > 0.9
    assert np.hypot(det.loc[0, "x"] - 558, det.loc[0, "y"] - 2639) < 5


def test_the_demo_refuses_a_missing_config_before_it_simulates(tmp_path, capsys):
    from demo import main

    before = sorted((ROOT / "demo").rglob("*")) if (ROOT / "demo").exists() else []
    assert main([f"--config={tmp_path / 'missing.yaml'}"]) == 2
    assert "missing.yaml does not exist" in capsys.readouterr().err
    after = sorted((ROOT / "demo").rglob("*")) if (ROOT / "demo").exists() else []
    assert after == before
