#!/usr/bin/env bash
# On a GPU machine (after benchmarks/gpu_prepare.sh here, with .gpu/ carried along): install the
# carried wheels into the machine's own Python (the one holding its CUDA torch), then run the
# staged check; results go to benchmarks/results/gpu.md and gpu.json, stage by stage.
#   bash benchmarks/gpu_check.sh [extra gpu_check.py options]
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
for pkg in torchdeq torchattacks pyautoattack; do
    if ! "$python" -c "import $pkg" 2>/dev/null; then
        "$python" -m pip install --quiet --no-deps --no-index .gpu/wheels/"$pkg"-*.whl
    fi
done
"$python" -c "import torch; print('torch', torch.__version__, 'CUDA available:', torch.cuda.is_available())"
exec "$python" benchmarks/gpu_check.py --device cuda --data-dir .gpu/data "$@"
