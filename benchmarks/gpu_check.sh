#!/usr/bin/env bash
# On a GPU machine (after benchmarks/gpu_prepare.sh here, with .gpu/ carried along): install the
# carried wheels into the machine's own Python (the one holding its CUDA torch), then run the
# staged check; results go to benchmarks/results/gpu.md and gpu.json, stage by stage.
#   bash benchmarks/gpu_check.sh [extra gpu_check.py options]
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
# pydantic needs a typing-extensions at least as new as the carried one: upgrade, never downgrade.
carried=$(ls .gpu/wheels/typing_extensions-*.whl)
"$python" - "$carried" <<'PY' || "$python" -m pip install --quiet --no-deps --no-index "$carried"
import sys
from importlib.metadata import version
from packaging.version import Version
carried = sys.argv[1].split("/")[-1].split("-")[1]
sys.exit(Version(version("typing_extensions")) < Version(carried))
PY
for pkg in torchdeq torchattacks pyautoattack pydantic_core annotated_types typing_inspection pydantic \
    rpds referencing jsonschema_specifications jsonschema; do
    if ! "$python" -c "import $pkg" 2>/dev/null; then
        "$python" -m pip install --quiet --no-deps --no-index .gpu/wheels/"${pkg/rpds/rpds_py}"-*.whl
    fi
done
"$python" -c "import torch; print('torch', torch.__version__, 'CUDA available:', torch.cuda.is_available())"
exec "$python" benchmarks/gpu_check.py --device cuda --data-dir .gpu/data "$@"
