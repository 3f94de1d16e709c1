"""`torchimg-probe smoke|bench [--json PATH]`: run in the image by `nox -s test`."""

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(prog="torchimg-probe")
    p.add_argument("what", choices=("smoke", "bench"))
    p.add_argument("--json", type=Path, help="write the results here as JSON")
    p.add_argument("--require-gpu", action="store_true", help="no GPU visible is a failure")
    p.add_argument("--quick", action="store_true", help="bench: fewer shapes and repeats")
    args = p.parse_args()
    if args.what == "smoke":
        from torchimg_probe import smoke

        report = smoke.run(args.require_gpu)
        text, ok = report.to_json(), report.ok
        counts = json.loads(text)["counts"]
        print(f"smoke: {counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped")
    else:
        from torchimg_probe import bench

        text, ok = json.dumps(bench.run(args.quick), indent=2), True
    if args.json:
        args.json.write_text(text + "\n")
    else:
        print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
