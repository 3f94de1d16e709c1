"""The probe's torchrun launcher stops what it started (docker/probe, tested on the host with
real processes): torchrun puts each worker in a session of its own, so a hung all_reduce must
be ended worker by worker, never left holding the GPUs."""

import os
import subprocess
import sys
import time
from pathlib import Path

from torchimg_probe import collectives

# A stand-in for torchrun: one worker in its own session that ignores SIGTERM, as a worker
# stuck in the driver would.
PARENT = """
import subprocess, sys, time
worker = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
child = subprocess.Popen([sys.executable, "-c", worker], start_new_session=True)
print(child.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()  # a zombie has exited
    return stat.split(")")[-1].split()[0] != "Z"


def test_stopping_torchrun_also_kills_workers_in_their_own_sessions() -> None:
    proc = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    worker = int(proc.stdout.readline())
    assert worker in collectives._descendants(proc.pid)
    start = time.monotonic()
    collectives._stop(proc)
    deadline = time.monotonic() + 10
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.returncode is not None and not _alive(worker)
    assert time.monotonic() - start < 30  # torchrun itself ended on SIGTERM: no 35 s wait
