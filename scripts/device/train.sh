#!/usr/bin/env bash
# On a lent GPU machine (the device tool), in the repository's root:
#   run(command="bash scripts/device/train.sh", carry=[".device"], timeout_s=590)
# Installs what scripts/device/prepare.sh put in .device/, then runs scripts/device/train.py
# (its flags may follow: bash scripts/device/train.sh --minutes=7).  What comes back is in $OUT.
# LIMIT_S (530) bounds train.py's run, whatever its --minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -d .device/wheels ] || [ ! -f .device/swarp.tar.xz ]; then
    echo ".device/ is missing: run scripts/device/prepare.sh here first, and carry .device" >&2
    exit 2
fi
out=${OUT:-device_out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .device/wheels/*.whl
tar -xJf .device/swarp.tar.xz -C /tmp
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PATH="/tmp/swarp/bin:$PATH"
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
# fail at once, not after minutes of simulating, when something carried does not work there
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    SWarp -v
    python3 -c "import astropy, jax, keras; print('astropy', astropy.__version__, 'jax', jax.__version__,
        'keras', keras.__version__, keras.backend.backend(), jax.devices())"
} >"$out/preflight.txt" 2>&1 || { cat "$out/preflight.txt"; exit 3; }
cat "$out/preflight.txt"
# train.py keeps to its --minutes; should an epoch overrun them, SIGINT stops it in time for the
# epochs already done to be returned (the call's limit is 600 s), and SIGKILL 20 s later
timeout --preserve-status -s INT -k 20 "${LIMIT_S:-530}" \
    python3 scripts/device/train.py --out="$out" "$@" 2>&1 | tee "$out/train.log"
