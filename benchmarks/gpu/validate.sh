#!/bin/sh
# GPU validation in one go, with this host's own torch (no Docker needed): every smoke check
# with the GPU required, the matmul bench beside a bare torch.matmul loop timed in the same
# run, and the doctor (driver, shm, MIG, ECC, PCIe, NCCL). Writes smoke/bench/doctor JSON to
# OUT (default: a temporary folder) and, when every check passed, benchmarks/gpu/<GPU>.json:
# the bench results with the smoke and doctor reports beside them, the regression baseline
# `nox -s test` reads. Then the goals: bf16 8192^3 >= 99 % of the bare loop, >= 780 TFLOP/s
# on an H100 SXM or H200.
# Exit 0 when every check passed, 1 when one failed, 2 on bad usage or a missing module.
set -u
usage="usage: $0 [OUT]   (PYTHON=/path/to/python to choose the interpreter)"
case "${1:-}" in
  -h | --help) echo "$usage"; exit 0 ;;
  -*) echo "$usage" >&2; exit 2 ;;
esac
if [ $# -gt 1 ]; then
  echo "$usage" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
python=${PYTHON:-python3}
if ! "$python" -c 'import torch, pynvml' 2>/dev/null; then
  echo "$python cannot import torch and pynvml: pip install torch nvidia-ml-py (or set PYTHON)" >&2
  exit 2
fi
out=${1:-$(mktemp -d "${TMPDIR:-/tmp}/torchimg-validate.XXXXXX")}
mkdir -p "$out" || exit 2
export PYTHONPATH="$repo/docker/probe${PYTHONPATH:+:$PYTHONPATH}"
status=0
"$python" -m torchimg_probe smoke --require-gpu --json "$out/smoke.json" || status=1
"$python" -m torchimg_probe bench --require-gpu --json "$out/bench.json" || status=1
"$python" -m torchimg_probe doctor --require-gpu --json "$out/doctor.json" || status=1
"$python" - "$out" "$here" "$status" <<'PY' || status=1
import json, sys
from pathlib import Path

out, here, status = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
try:
    bench = json.loads((out / "bench.json").read_text())
    for part in ("smoke", "doctor"):
        bench[part] = json.loads((out / f"{part}.json").read_text())
except (OSError, ValueError) as exc:
    sys.exit(f"validate: a probe wrote no readable result ({exc})")
ref = bench.get("reference") or {}
row = next((r for r in bench.get("results", []) if (r["dtype"], r["m"], r["n"], r["k"]) == ("bf16", 8192, 8192, 8192)), {})
best, pct = row.get("best"), ref.get("probe_pct")
print(f"goal: bf16 8192^3 >= 99 % of a bare torch.matmul loop: {pct} % ({best} vs {ref.get('tflops')} TFLOP/s)")
if bench.get("peak_key") in ("H100 SXM", "H200"):
    print(f"goal: bf16 8192^3 >= 780 TFLOP/s on {bench['peak_key']}: {best}")
name = bench.get("baseline")
if status != "0" or not isinstance(name, str):
    sys.exit(f"validate: no baseline written (a check failed, or no GPU: {name!r})")
(here / f"{name}.json").write_text(json.dumps(bench, indent=2) + "\n")
print(f"wrote {here / (name + '.json')}")
PY
echo "validate: exit $status (results in $out)"
exit $status
