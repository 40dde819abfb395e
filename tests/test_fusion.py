"""Fusion (:mod:`tails.fusion`): trees fitted on evaluated candidates, stored as arrays, scored with numpy.

The candidates here are drawn in the test: comets, which vetting measures as extended, and round
asteroids, which the model scores as highly but which are no more extended than a star, with a
few of each measured near enough to the noise that only the two together tell them apart.
"""

import json

import numpy as np
import pandas as pd
import pytest

from tails import fusion as fu
from tails.config import load_config
from tails.detect import detector_scores, lowest_model_score
from tails.vet import check_vet_config

N_FRAMES = 120


def _candidates(seed=0, n_frames=N_FRAMES):
    """Per frame 3 comets, 3 round asteroids and 20 faint sources of nothing in particular."""
    rng = np.random.default_rng(seed)
    rows = []
    for f in range(n_frames):
        seeing = rng.uniform(1.2, 3.5)
        for kind, n in (("comet", 3), ("asteroid", 3), ("other", 20)):
            for _ in range(n):
                if kind == "comet":
                    p, sig, frac, width = rng.beta(8, 2), rng.lognormal(1.5, 1.0), rng.uniform(0.1, 0.7), rng.normal(1.3, 0.15)
                elif kind == "asteroid":
                    p, sig, frac, width = rng.beta(6, 3), rng.normal(0.5, 1.0), rng.normal(0.05, 0.08), rng.normal(0.97, 0.06)
                else:
                    p, sig, frac, width = rng.beta(1, 8), rng.normal(0, 1.5), rng.normal(0, 0.2), rng.normal(1.0, 0.3)
                rows.append({"frame": f"f{f}", "p_model": p, "ext_sigma": sig, "ext_fraction": frac, "ext_width": width,
                             "ext_elongation": rng.uniform(1.0, 1.4), "seeing": seeing, "true": kind == "comet"})
    c = pd.DataFrame(rows)
    c.loc[c.sample(frac=0.03, random_state=seed).index, "ext_width"] = np.nan  # unmeasured near an edge
    return c


@pytest.fixture(scope="module")
def fitted():
    return fu.fit_fusion(_candidates(), N_FRAMES, fp_per_frame=0.05, min_model_score=0.02, folds=4)


def test_the_exported_trees_score_as_scikit_learn_does(fitted):
    # fit_fusion checks its export against scikit-learn's own scores; here, against a fresh draw
    from sklearn.ensemble import HistGradientBoostingClassifier

    c = _candidates()
    c = c[c["p_model"] >= 0.02]
    x = c[list(fu.FEATURES)].to_numpy(float)
    ref = HistGradientBoostingClassifier(**fu.TREE_SETTINGS, random_state=0).fit(x, c["true"].to_numpy())
    other = _candidates(seed=1)[list(fu.FEATURES)].to_numpy(float)
    np.testing.assert_allclose(fitted.log_odds(other), ref.decision_function(other), atol=1e-9)


def test_half_is_the_operating_point_out_of_fold(fitted):
    oof = fitted.meta["out_of_fold"]
    assert oof["candidates_kept_false"] <= 0.05 * N_FRAMES
    assert oof["candidates_kept_true"] > 0.8 * 3 * N_FRAMES


def test_at_the_rules_false_positives_it_finds_at_least_their_comets(fitted):
    c = _candidates(seed=2)
    p = np.concatenate([fitted.score(g, g["seeing"].iloc[0]) for _, g in c.groupby("frame", sort=False)])
    true = c["true"].to_numpy()
    assert ((p > 0.5) & ~true).sum() <= 0.1 * N_FRAMES  # the operating point holds on other frames
    # the rules' excess test at 2 sigma, with the model's score at 0.5, on the same candidates
    rule = ((c["ext_sigma"] >= 2) & (c["ext_fraction"] >= 0.1) & (c["p_model"] > 0.5)).to_numpy()
    n_false = int((rule & ~true).sum())
    at = np.sort(p[~true])[::-1][n_false]  # the fusion's threshold for as many false positives
    assert ((p > at) & true).sum() >= (rule & true).sum()


def test_a_candidate_under_the_least_model_score_scores_nothing(fitted):
    c = pd.DataFrame({"p_model": [0.01, 0.9], "ext_sigma": [50.0, 50.0], "ext_fraction": [0.5, 0.5],
                      "ext_width": [1.4, 1.4], "ext_elongation": [1.1, 1.1]})
    p = fitted.score(c, seeing=2.0)
    assert p[0] == 0 and p[1] > 0.5


def test_a_fusion_file_reads_back_as_it_was_written(fitted, tmp_path):
    path = fu.save_fusion(fitted, tmp_path / "fusion.json")
    again = fu.load_fusion(path)
    x = _candidates(seed=3)[list(fu.FEATURES)].to_numpy(float)
    np.testing.assert_array_equal(again.log_odds(x), fitted.log_odds(x))
    assert (again.offset, again.min_model_score, again.meta) == (fitted.offset, fitted.min_model_score, fitted.meta)
    assert not list(tmp_path.glob(".fusion.json*"))  # written atomically


def test_a_missing_or_foreign_fusion_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="tails fit-fusion"):
        fu.load_fusion(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text(json.dumps({"format": 1, "features": ["p"], "trees": []}))
    with pytest.raises(ValueError, match="not a fusion file of this version"):
        fu.load_fusion(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="not a fusion file"):
        fu.load_fusion(tmp_path / "broken.json")


def test_the_config_picks_the_models_own_fusion_a_path_or_none(fitted, tmp_path):
    cfg = load_config()
    weights = tmp_path / "m" / "tails.weights.h5"
    weights.parent.mkdir()
    weights.write_bytes(b"")
    assert fu.fusion_from_config(cfg, weights) is None  # auto, and none beside the model
    fu.save_fusion(fitted, weights.parent / fu.FUSION_FILENAME)
    assert fu.fusion_from_config(cfg, weights).offset == fitted.offset
    cfg["tails"]["vet"]["fusion"] = None
    assert fu.fusion_from_config(cfg, weights) is None
    cfg["tails"]["vet"]["fusion"] = str(weights.parent / fu.FUSION_FILENAME)
    assert fu.fusion_from_config(cfg, tmp_path / "other.weights.h5").offset == fitted.offset
    cfg["tails"]["vet"]["enabled"] = False
    assert fu.fusion_from_config(cfg, weights) is None
    cfg["tails"]["vet"].update(enabled=True, fusion=3)
    with pytest.raises(ValueError, match="tails.vet.fusion must be"):
        fu.fusion_from_config(cfg, weights)
    cfg["tails"]["vet"]["fusion"] = str(tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        fu.fusion_from_config(cfg, weights)


def test_the_detector_scores_by_the_fusion_only_where_vetting_measured(fitted):
    vet = check_vet_config(load_config()["tails"]["vet"])
    measured = pd.DataFrame({"p": [0.9, 0.9], "ext_sigma": [30.0, 0.1], "ext_fraction": [0.4, 0.0],
                             "ext_width": [1.4, 0.97], "ext_elongation": [1.1, 1.1], "trailed": [False, False],
                             "extended": [True, False], "compact": [False, False]})
    fused, by_fusion = detector_scores(measured, vet, fitted, seeing=2.0)
    assert by_fusion and fused["kept"].all() and fused["p_model"].tolist() == [0.9, 0.9]
    assert fused.loc[0, "p"] > 0.5 > fused.loc[1, "p"]
    # what the trail test takes for a trailed asteroid is not kept, whatever the fusion scores it
    trail = measured.assign(trailed=[True, False], extended=[False, False])
    fused, _ = detector_scores(trail, vet, fitted, seeing=2.0)
    assert fused.loc[0, "p"] > 0.5 and fused["kept"].tolist() == [False, True]
    ruled, by_fusion = detector_scores(measured, vet, None, seeing=2.0)
    assert not by_fusion and ruled["kept"].tolist() == [True, False] and ruled["p"].tolist() == [0.9, 0.9]
    unmeasured = measured.assign(ext_sigma=np.nan, ext_width=np.nan, extended=True)
    for seeing in (2.0, None, "n/a"):  # no measures, or no seeing: the model's score
        out, by_fusion = detector_scores(unmeasured if seeing == 2.0 else measured, vet, fitted, seeing=seeing)
        assert not by_fusion and out["p"].tolist() == [0.9, 0.9]
    assert lowest_model_score(0.5, vet, fitted) == fitted.min_model_score
    assert lowest_model_score(0.0, vet, fitted) == 0.0
    assert lowest_model_score(0.5, vet, None) == pytest.approx(0.05)


def _report(folder, candidates, model="tails-x"):
    folder.mkdir()
    candidates.to_csv(folder / "candidates.csv", index=False)
    frames = candidates["frame"].nunique()
    (folder / "metrics.json").write_text(json.dumps({"model": model, "counts": {"frames": frames}, "seeds": [0, frames]}))
    return folder


def test_fit_fusion_reads_reports_and_refuses_what_it_cannot_fit(tmp_path):
    a = _report(tmp_path / "a", _candidates(seed=4, n_frames=60))
    b = _report(tmp_path / "b", _candidates(seed=5, n_frames=60))
    out = tmp_path / "fusion.json"
    assert fu.fit_fusion_command(str(a), str(b), output=str(out), fp_per_frame=0.05) == str(out)
    meta = fu.load_fusion(out).meta
    assert meta["frames"] == 120 and meta["model"] == "tails-x" and meta["seeds"] == [[0, 60], [0, 60]]
    with pytest.raises(FileExistsError, match="--overwrite"):
        fu.fit_fusion_command(str(a), output=str(out))
    with pytest.raises(ValueError, match="give the evaluate.output_dir"):
        fu.fit_fusion_command(output=str(tmp_path / "f2.json"))
    with pytest.raises(ValueError, match="--fp_per_frame must be a number between 0 and 1"):
        fu.fit_fusion_command(str(a), output=str(tmp_path / "f2.json"), fp_per_frame=0)
    c = _report(tmp_path / "c", _candidates(seed=6, n_frames=10), model="tails-y")
    with pytest.raises(ValueError, match="different models"):
        fu.fit_fusion_command(str(a), str(c), output=str(tmp_path / "f2.json"))
    old = _report(tmp_path / "old", _candidates(seed=7, n_frames=10).drop(columns=["ext_width", "seeing"]))
    pd.DataFrame({"frame": ["f0"], "seeing": [2.0]}).to_csv(old / "comets.csv", index=False)
    with pytest.raises(ValueError, match="lacks ext_width"):
        fu.fit_fusion_command(str(old), output=str(tmp_path / "f2.json"))
    with pytest.raises(ValueError, match="not a `tails evaluate` report folder"):
        fu.fit_fusion_command(str(tmp_path / "nothing"), output=str(tmp_path / "f2.json"))
    no_comets = _report(tmp_path / "d", _candidates(seed=8, n_frames=10).assign(true=False))
    with pytest.raises(ValueError, match="comets and other sources both"):
        fu.fit_fusion_command(str(no_comets), output=str(tmp_path / "f2.json"))
    assert not (tmp_path / "f2.json").exists()


def _positioned_report(folder, seed, n_frames=40):
    """A report of drawn candidates with positions, the rules' verdicts and the comets they lie on."""
    c = _candidates(seed=seed, n_frames=n_frames)
    rng = np.random.default_rng(seed)
    c["x"], c["y"] = rng.uniform(0, 3000, len(c)), rng.uniform(0, 3000, len(c))
    c["extended"] = (c["ext_sigma"] >= 2) & (c["ext_fraction"] >= 0.1)
    c["compact"] = False
    comets = c[c["true"]].assign(mag=rng.uniform(14, 20, int(c["true"].sum())))[["frame", "x", "y", "mag", "seeing"]]
    _report(folder, c)
    comets.to_csv(folder / "comets.csv", index=False)
    metrics = json.loads((folder / "metrics.json").read_text())
    (folder / "metrics.json").write_text(json.dumps({**metrics, "match_radius_pix": 10.0}))
    return c


def test_compare_scores_puts_the_rules_and_the_fusion_side_by_side(fitted, tmp_path, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from compare_scores import main

    import dataclasses

    path = fu.save_fusion(dataclasses.replace(fitted, meta={**fitted.meta, "model": "tails-x"}), tmp_path / "fusion.json")
    a = _positioned_report(tmp_path / "a", seed=11)
    _positioned_report(tmp_path / "b", seed=12)
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), f"--fusion={path}", "--fp=0.05"]) == 0
    out = capsys.readouterr().out
    rules_row = next(line for line in out.splitlines() if line.startswith("| rules | ") and "px" in line)
    # the rules' false positives, counted here from report a and b's candidates directly
    b = pd.read_csv(tmp_path / "b" / "candidates.csv")
    both = pd.concat([a, b])
    n_fp = int((both["extended"] & (both["p_model"] > 0.5) & ~both["true"]).sum())
    assert f"({n_fp}; " in rules_row
    assert "| the fusion alone |" in out and "at most ... false positives" in out
    assert "above the frame's limit" not in out  # these comets do not record their frame's depth
    # where they do, the recall by how far above its frame's limit each comet is, of those that have it
    comets = pd.read_csv(tmp_path / "a" / "comets.csv")
    comets.assign(depth=np.where(comets["mag"] < 17, 5.5, 2.5)).to_csv(tmp_path / "a" / "comets.csv", index=False)
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), f"--fusion={path}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = next(i for i, line in enumerate(lines) if "above the frame's limit" in line)
    assert f"above the frame's limit ({len(comets)} comets) | <1 | 1-2 |" in lines[head]
    rules = lines[head + 2]  # after the header's rule; empty bins show "-", the others their count
    assert rules.startswith("| rules | -") and f"({int((comets['mag'] < 17).sum())}) |" in rules
    assert main([str(tmp_path / "nothing"), f"--fusion={path}"]) == 2
    assert "not a `tails evaluate` report folder" in capsys.readouterr().err
    assert main([str(tmp_path / "a"), f"--fusion={path}", "--fp=few"]) == 2
    assert "--fp takes false positives" in capsys.readouterr().err
    other = _report(tmp_path / "c", _candidates(seed=13, n_frames=5), model="tails-y")
    assert main([str(other), f"--fusion={path}"]) == 2
    assert "the fusion weighs the scores of tails-x, the reports are of tails-y" in capsys.readouterr().err
