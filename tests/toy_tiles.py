"""Shards of toy training tiles whose labels are known, for tests of the training plumbing.

Nothing here is a test; test modules import it (``from toy_tiles import blob_shards``).
"""

from __future__ import annotations

import numpy as np

from tails.dataset import _save_shard, _shard_name


def blob_shards(folder, seeds, size=128, per_seed=8, snr_extended=None):
    """Shards of preprocessed-looking tiles: half hold a Gaussian blob (a 'comet') in sci and diff.

    ``snr_extended``, if given, is the truth of the positives (tiles 0, 2, 4, ...) in the meta.
    """
    yy, xx = np.mgrid[:size, :size]
    for seed in seeds:
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(per_seed, size, size, 3)).astype(np.float32)
        y = np.zeros((per_seed, 3), np.float32)
        for i in range(0, per_seed, 2):
            cx, cy = rng.uniform(16, size - 16, 2)
            blob = 40.0 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 8.0)
            x[i, ..., 0] += blob
            x[i, ..., 2] += blob
            y[i] = [1.0, cx / size, cy / size]
        x /= np.sqrt((x**2).sum(axis=(1, 2), keepdims=True))  # unit L2 norm per channel, as preprocessed
        meta = [{"seed": seed} for _ in range(per_seed)]
        for m, snr in zip(meta[::2], snr_extended or []):
            m["snr_extended"] = snr
        _save_shard(folder / _shard_name(seed), x.astype(np.float16), y, meta)
