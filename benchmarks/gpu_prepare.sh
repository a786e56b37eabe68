#!/usr/bin/env bash
# Pack what benchmarks/gpu_check.sh needs on a GPU machine that cannot reach a package registry:
# the wheels of the dependencies such a machine lacks (torchdeq, torchattacks, pyautoattack, pydantic
# and the test suite's jsonschema, with their helpers: the installed versions; the compiled ones,
# pydantic-core and rpds-py, built for CPython 3.12 on x86-64, the GPU machine's Python) and the
# four MNIST files, gzip-compressed (11 MB instead of 55 MB). Everything goes to .gpu/ (git-ignored); carry it with the working tree.
#   bash benchmarks/gpu_prepare.sh [MNIST_ROOT]      # default ../shared/data
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:-../shared/data}
mkdir -p .gpu/wheels .gpu/data/MNIST/raw
version() { python -c "from importlib.metadata import version; print(version('$1'))"; }
pure="torchdeq torchattacks pyautoattack pydantic annotated-types typing-inspection typing-extensions
      jsonschema jsonschema-specifications referencing"
for pkg in $pure; do
    python -m pip download --quiet --no-deps -d .gpu/wheels "$pkg==$(version "$pkg")"
done
for pkg in pydantic-core rpds-py; do
    python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/wheels "$pkg==$(version "$pkg")"
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
