"""Where the real ZTF data of ``../shared/data/ztf_real`` are (README there), and their alert packets.

Nothing here is a test; test modules import it (``from real_data import ZTF_REAL, avro_alerts``)
and skip themselves where the folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

ZTF_REAL = Path(os.environ.get("TAILS_ZTF_REAL", Path(__file__).resolve().parents[2] / "shared" / "data" / "ztf_real"))
ALERTS = ZTF_REAL / "alerts"


def avro_alerts(limit: int | None = None) -> list[dict]:
    """The real Avro alert packets, in the order of ``alerts_index.csv`` (at most ``limit``)."""
    pytest.importorskip("fastavro")
    from tails.alerts import read_alerts

    index = pd.read_csv(ALERTS / "alerts_index.csv")
    out = []
    for f in index["file"].unique():
        if f.endswith(".avro"):
            out.extend(read_alerts(ZTF_REAL / f))
            if limit is not None and len(out) >= limit:
                return out[:limit]
    return out


def known_asteroid_candids() -> set[int]:
    """Alerts within 2" of a known solar-system object (``ssnamenr`` set, ``0 <= ssdistnr <= 2``)."""
    index = pd.read_csv(ALERTS / "alerts_index.csv")
    near = index["ssnamenr"].notna() & index["ssdistnr"].between(0, 2)
    return set(index.loc[near, "candid"].astype(int))
