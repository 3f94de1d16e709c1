"""`torchimg-probe smoke|bench|doctor [--json PATH]`: run in the image by `nox -s test` and
`inv doctor`, or directly with a host's torch (`python -m torchimg_probe ...`).

Exit status: 0 every check passed (warnings included), 1 a check failed, 2 bad usage (an
--json that cannot be written, no torch), 3 the results could not be written after all, 130
interrupted.
"""

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(prog="torchimg-probe")
    p.add_argument("what", choices=("smoke", "bench", "doctor"))
    p.add_argument("--json", type=Path, help="write the results here as JSON")
    p.add_argument(
        "--require-gpu", action="store_true", help="a GPU check that cannot run (CUDA did not start) fails"
    )
    p.add_argument("--quick", action="store_true", help="bench: fewer shapes and repeats")
    p.add_argument(
        "--emulated",
        action="store_true",
        help="smoke: under CPU emulation (skips max-autotune and extra compiles)",
    )
    args = p.parse_args()
    if args.json is not None and (why := _cannot_write(args.json)):
        p.error(f"--json {args.json}: {why}")  # said now, not after minutes of checks
    if importlib.util.find_spec("torch") is None:
        p.error(f"torch is not importable by {sys.executable} (pip install torch, or run it in the image)")
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("torchimg-probe: interrupted", file=sys.stderr)
        return 130


def _cannot_write(path: Path) -> str:
    """Why the results could not be written there ('' when they can)."""
    if path.is_dir():
        return "is a folder: name a file"
    folder = path.parent
    if not folder.is_dir():
        return f"{folder} is not a folder" if folder.exists() else f"no folder {folder}"
    if path.exists() and not os.access(path, os.W_OK):
        return "is not writable"
    if not path.exists() and not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder} is not writable"
    return ""


def _run(args: argparse.Namespace) -> int:
    if args.what == "bench":
        from torchimg_probe import bench, cuda_state

        error = cuda_state.start()
        if error is not None and (args.require_gpu or cuda_state.gpus_given()):
            result, ok = (
                {"kind": "bench", "error": f"--require-gpu: CUDA did not start: {error}", "results": []},
                False,
            )
            print(result["error"], file=sys.stderr)
        else:
            result = bench.run(args.quick)
            problems = bench.problems(result)
            for problem in problems:
                print(f"bench: {problem}", file=sys.stderr)
            ok = not problems
        text = json.dumps(result, indent=2)
    else:
        if args.what == "smoke":
            from torchimg_probe import smoke

            report = smoke.run(args.require_gpu, args.emulated)
        else:
            from torchimg_probe import doctor

            report = doctor.run(args.require_gpu)
        text, ok = report.to_json(), report.ok
        print(report.summary(), flush=True)
    if args.json:
        try:
            args.json.write_text(text + "\n")
        except OSError as exc:  # a full disk, a link to nowhere: said, after all that work
            print(f"torchimg-probe: cannot write {args.json}: {exc.strerror or exc}", file=sys.stderr)
            print(text)
            return 3
    elif args.what == "bench":
        print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
