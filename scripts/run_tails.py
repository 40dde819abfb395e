#!/usr/bin/env python
"""Run Tails on one ZTF frame or on a night of ZTF data.

    python scripts/run_tails.py --config=config.defaults.yaml --score_threshold=0.5 \
        --cleanup=none --single_image=ztf_20191014495961_000570_zr_c05_o_q3
    python scripts/run_tails.py --config=config.yaml --date=20201015 --twilight

Flags: --config, --checkpoint, --score_threshold, --cleanup=none|ref|sci|all,
--single_image=NAME | --date=YYYYMMDD [--twilight], --nthreads=N, --output_base_path=DIR.
A thin wrapper over ``tails.cli``; see ``python scripts/run_tails.py --help``.
"""

import sys

from tails.cli import run_main

if __name__ == "__main__":
    sys.exit(run_main())
