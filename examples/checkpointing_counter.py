#!/usr/bin/env python3
"""A resumable counter: a handover `exec` job in Python.

The protocol (SPEC §6):
  * HANDOVER_CHECKPOINT holds the last checkpoint as JSON ("" on a first run): resume from it.
  * Each line written to the descriptor in HANDOVER_CHECKPOINT_FD (3) is one JSON checkpoint.
  * On SIGTERM (the worker is shutting down) write a checkpoint and exit 75 (EX_TEMPFAIL):
    "interrupted, resume me later". A child still running at its deadline gets SIGKILL.
  * Exit 0 when done: the tail of stdout becomes the job's result. Any other exit is a failed
    attempt (the tail of stderr becomes its error), retried with backoff.

    handover submit --kind exec -- python3 examples/checkpointing_counter.py 100 0.1
"""
import json
import os
import signal
import sys
import time

target = int(sys.argv[1]) if len(sys.argv) > 1 else 100
step_seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 0.1
checkpoint_fd = int(os.environ.get("HANDOVER_CHECKPOINT_FD", "3"))
resumed = json.loads(os.environ.get("HANDOVER_CHECKPOINT") or '{"i": 0}')
i = resumed["i"]


def checkpoint():
    # One unbuffered write per line: safe to call from the signal handler too.
    os.write(checkpoint_fd, (json.dumps({"i": i}) + "\n").encode())


def on_sigterm(signum, frame):
    checkpoint()  # the last finished step
    sys.exit(75)


signal.signal(signal.SIGTERM, on_sigterm)
while i < target:
    time.sleep(step_seconds)  # one step of real work
    i += 1
    checkpoint()
print(f"counted to {target} (resumed from {resumed['i']})")
