"""make_triplet on real ZTF alert packets from ../shared/data/ztf_real/alerts."""

import numpy as np
import pandas as pd
import pytest
from real_data import ALERTS, avro_alerts

from tails.utils import make_triplet, plot_stack

pytestmark = pytest.mark.skipif(not (ALERTS / "alerts_index.csv").is_file(), reason="no real ZTF alerts here")


def test_triplets_of_real_alerts():
    alerts = avro_alerts(limit=40)
    assert len(alerts) >= 10
    for alert in alerts:
        t = make_triplet(alert)
        assert t.shape == (63, 63, 3) and t.dtype == np.float32
        assert np.isfinite(t).all()
        # the science cutout holds sky (positive counts); the template is not a copy of it
        assert np.median(t[..., 0]) > 0
        assert not np.array_equal(t[..., 0], t[..., 1])


def test_normalised_triplets_have_unit_norm_and_plot(tmp_path):
    alert = avro_alerts(limit=1)[0]
    t = make_triplet(alert, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(t.reshape(-1, 3), axis=0)[:1], 1.0, rtol=1e-4)
    plot_stack(t, reticles=[(31, 31)], save=tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 1000


def test_truncated_cutouts_are_padded():
    index = pd.read_csv(ALERTS / "alerts_index.csv")
    small = index[(index["cutout_shape"] != "63x63") & index["file"].str.endswith(".avro")]
    if small.empty:
        pytest.skip("no truncated cutout among the avro alerts")
    fastavro = pytest.importorskip("fastavro")
    row = small.iloc[0]
    with open(ALERTS.parent / row["file"], "rb") as fh:
        alert = next(r for r in fastavro.reader(fh) if r["candid"] == row["candid"])
    assert make_triplet(alert).shape == (63, 63, 3)
