#!/usr/bin/env bash
# Pack what benchmarks/gpu_check.sh needs on a GPU machine that cannot reach a package registry:
# the wheels of the pure-Python dependencies such a machine lacks (torchdeq, torchattacks,
# pyautoattack: the installed versions) and the four MNIST files, gzip-compressed (11 MB instead
# of 55 MB). Everything goes to .gpu/ (git-ignored); carry it with the working tree.
#   bash benchmarks/gpu_prepare.sh [MNIST_ROOT]      # default ../shared/data
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:-../shared/data}
mkdir -p .gpu/wheels .gpu/data/MNIST/raw
for pkg in torchdeq torchattacks pyautoattack; do
    version=$(python -c "from importlib.metadata import version; print(version('$pkg'))")
    python -m pip download --quiet --no-deps -d .gpu/wheels "$pkg==$version"
done
# pyautoattack's wheel carries 45 MB of example models; the check needs none of them.
python - <<'PY'
import pathlib, zipfile
for wheel in pathlib.Path(".gpu/wheels").glob("pyautoattack-*.whl"):
    slim = wheel.with_suffix(".slim")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if "/examples/" not in item.filename:
                dst.writestr(item, src.read(item))
    slim.replace(wheel)
PY
for name in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    gzip -c "$root/MNIST/raw/$name" > ".gpu/data/MNIST/raw/$name.gz"
done
du -sh .gpu
