#!/bin/sh
# GPU validation in one go, with this host's own torch (no Docker needed): every smoke check
# with the GPU required, the matmul bench beside a bare torch.matmul loop timed in the same
# run, and the doctor (driver, shm, MIG, ECC, PCIe, NCCL). Writes smoke/bench/doctor JSON to
# OUT (default: a temporary folder) and benchmarks/gpu/<GPU>.json: the bench results with the
# smoke and doctor reports beside them, the regression baseline `nox -s test` reads.
# Exit 0 when every check passed, 1 when one failed, 2 on bad usage.
set -u
if [ $# -gt 1 ]; then
  echo "usage: $0 [OUT]" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-$(mktemp -d "${TMPDIR:-/tmp}/torchimg-validate.XXXXXX")}
python=${PYTHON:-python3}
mkdir -p "$out" || exit 2
export PYTHONPATH="$repo/docker/probe${PYTHONPATH:+:$PYTHONPATH}"
status=0
"$python" -m torchimg_probe smoke --require-gpu --json "$out/smoke.json" || status=1
"$python" -m torchimg_probe bench --json "$out/bench.json" || status=1
"$python" -m torchimg_probe doctor --require-gpu --json "$out/doctor.json" || status=1
"$python" - "$out" "$here" <<'PY' || status=1
import json, sys
from pathlib import Path

out, here = Path(sys.argv[1]), Path(sys.argv[2])
bench = json.loads((out / "bench.json").read_text())
for part in ("smoke", "doctor"):
    bench[part] = json.loads((out / f"{part}.json").read_text())
name = bench["baseline"]  # the probe's own name for this GPU: what `nox -s test` reads
(here / f"{name}.json").write_text(json.dumps(bench, indent=2) + "\n")
print(f"wrote {here / (name + '.json')}")
PY
echo "validate: exit $status (results in $out)"
exit $status
