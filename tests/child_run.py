"""A child process for lifecycle tests: logs a run to JSONL until a signal ends it.

Usage: ``python child_run.py MODE`` where MODE is ``loop`` (step until signalled) or
``exit-open`` (start a run, never end it, let the interpreter exit).
"""

from __future__ import annotations

import signal
import sys
import time

import rlobs


def main(mode: str) -> None:
    # A launcher without job control (a background CI step) starts us with SIGINT
    # ignored; Ctrl-C reaches an interactive program, which is what this child stands for.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    hub = rlobs.Hub(["jsonl"], handle_signals=True, heartbeat_s=0.05, end_timeout_s=5)
    if mode == "exit-open":
        run = hub.run("child-open").start()
        run.step(1.0)
        print("ready", run.run_id, flush=True)
        return  # the atexit hook must end the run `killed`
    with hub, hub.run("child-loop") as run:
        t = 0
        while True:
            run.step(1.0, {"t": float(t)})
            if t == 100:
                print("ready", run.run_id, flush=True)
            if t >= 100:
                time.sleep(0.0005)
            t += 1


if __name__ == "__main__":
    main(sys.argv[1])
