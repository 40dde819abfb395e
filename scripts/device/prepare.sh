#!/usr/bin/env bash
# Prepare, on this machine, what a training run on a lent GPU machine must carry (.device/):
#
#   .device/wheels/    the Python packages Tails needs that the machine lacks, as wheels for its
#                      Python 3.12 (the device tool's package list: it has numpy, scipy, pandas,
#                      h5py, matplotlib, PyYAML, tqdm, requests and JAX, but not these);
#   .device/swarp.tar.xz  Debian's SWarp with the shared libraries it loads, but glibc's, and a
#                      wrapper that points it at them (the machine has no SWarp, nor cfitsio).
#
# Then, with the device tool:
#   run(command="bash scripts/device/train.sh", carry=[".device"], timeout_s=590)
# and see models/README.md, "Training it further on a GPU", for what comes back and what to do
# with it.  Needs pip's registry (PyPI) and an installed SWarp (`make swarp`).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=.device
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3

# The same Keras as here, so that weights saved there load here.
keras_version=$("$python" -c "import importlib.metadata as m; print(m.version('keras'))")
packages=("keras==$keras_version" namex optree astropy pyerfa astropy-iers-data fire termcolor)

rm -rf "$out" && mkdir -p "$out/wheels"
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
    -d "$out/wheels" "${packages[@]}"

swarp=$(command -v SWarp || command -v swarp || true)
if [ -z "$swarp" ]; then
    echo "SWarp is not installed here: run 'make swarp' first" >&2
    exit 1
fi
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/swarp/bin" "$stage/swarp/libexec" "$stage/swarp/lib"
cp "$swarp" "$stage/swarp/libexec/SWarp"
# every library it loads but the C library's own, which the machine has in a newer version
ldd "$swarp" | awk '/=> \//{print $3}' | grep -v -E '/(libc|libm|libresolv|libdl|libpthread|librt)\.so' |
    while read -r lib; do cp -L "$lib" "$stage/swarp/lib/"; done
cat >"$stage/swarp/bin/SWarp" <<'EOF'
#!/bin/sh
# SWarp with the libraries carried beside it
here=$(dirname "$(readlink -f "$0")")
LD_LIBRARY_PATH="$here/../lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/../libexec/SWarp" "$@"
EOF
chmod +x "$stage/swarp/bin/SWarp"
tar -cJf "$out/swarp.tar.xz" -C "$stage" swarp

du -sh "$out"/wheels "$out"/swarp.tar.xz
echo "prepared $out: carry it with the device tool's run (carry=[\"$out\"])"
