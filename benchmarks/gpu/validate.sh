#!/bin/sh
# GPU validation in one go, with this host's own torch (no Docker needed): every smoke check
# with the GPU required, the matmul bench beside a bare torch.matmul loop timed in the same
# run, and the doctor (driver, shm, MIG, ECC, PCIe, NCCL). Writes smoke/bench/doctor JSON to
# OUT (default: a temporary folder) and, when every check passed, benchmarks/gpu/<GPU>.json:
# the bench results with the smoke and doctor reports beside them, the regression baseline
# `nox -s test` reads. Then the goals: bf16 8192^3 >= 99 % of the bare loop, >= 780 TFLOP/s
# on an H100 SXM or H200 (a goal not met exits 1; its baseline is written all the same).
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
export CUFILE_LOGFILE_PATH="$out/cufile.log"
# torch.compile on a GPU builds Triton's launcher with the host's C compiler and Python.h (the
# image has both); without them those checks fail for the host's reason, not the image's
if ! command -v cc >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1; then
  echo "validate: this host has no C compiler: the torch.compile checks will fail here (install gcc)" >&2
fi
if ! "$python" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
  echo "validate: this host's Python has no Python.h: the torch.compile checks will fail here (install python3-dev)" >&2
fi
# a hang (a wedged GPU, an NCCL rendezvous) ends that probe, not the whole run
# (--foreground: Ctrl-C still reaches the probe)
limit=""
if timeout --foreground 1 true 2>/dev/null; then limit="timeout --foreground 1800"; fi
status=0
$limit "$python" -m torchimg_probe smoke --require-gpu --json "$out/smoke.json" || status=1
$limit "$python" -m torchimg_probe bench --require-gpu --json "$out/bench.json" || status=1
$limit "$python" -m torchimg_probe doctor --require-gpu --json "$out/doctor.json" || status=1
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
median, best, pct = row.get("median"), row.get("best"), ref.get("probe_pct")
goals = [(f"bf16 8192^3 median >= 99 % of a bare torch.matmul loop: {pct} % ({median} vs {ref.get('tflops')} TFLOP/s)",
          isinstance(pct, (int, float)) and pct >= 99)]
if bench.get("peak_key") in ("H100 SXM", "H200"):
    goals.append((f"bf16 8192^3 best >= 780 TFLOP/s on {bench['peak_key']}: {best}",
                  isinstance(best, (int, float)) and best >= 780))
for text, met in goals:
    print(f"goal {'met' if met else 'NOT MET'}: {text}")
name = bench.get("baseline")
if status != "0" or not isinstance(name, str):
    sys.exit(f"validate: no baseline written (a check failed, or no GPU: {name!r})")
(here / f"{name}.json").write_text(json.dumps(bench, indent=2) + "\n")
print(f"wrote {here / (name + '.json')}")
if not all(met for _, met in goals):
    sys.exit("validate: a goal was not met (the baseline is this GPU's measurement all the same)")
PY
echo "validate: exit $status (results in $out)"
exit $status
