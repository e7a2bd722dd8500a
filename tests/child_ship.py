"""A training process for the shipper tests: steps flat out until a signal ends it.

Usage: ``python child_ship.py RUN_ID PROGRESS_FILE [STEPS [PACE_S]]``. The sinks come from the
environment (``RLOBS_SINKS``, ``MLFLOW_TRACKING_URI``, ``OTEL_…``). After each step the
child writes the index of the step that just returned into ``PROGRESS_FILE`` (8 bytes,
memory-mapped), so the test knows which steps had returned before it sent a signal.
With ``STEPS`` (0: no limit) it stops after that many and exits normally; with ``PACE_S``
it sleeps that long after each step (a training loop's pace rather than flat out).
"""

from __future__ import annotations

import mmap
import signal
import struct
import sys
import time

import rlobs


def main(run_id: str, progress: str, steps: int | None, pace_s: float) -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with open(progress, "r+b") as handle:
        shared = mmap.mmap(handle.fileno(), 8)
    pack = struct.Struct("<q").pack_into
    with rlobs.Hub.from_env(handle_signals=True) as hub, \
            hub.run("child-ship", run_id=run_id, params={"lr": 0.1}) as run:
        index = 0
        while steps is None or index < steps:
            run.step(1.0, {"loss": 1.0 / (index + 1), "index": float(index)},
                     done=index % 100 == 99)
            pack(shared, 0, index)
            index += 1
            if pace_s:
                time.sleep(pace_s)


if __name__ == "__main__":
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    main(sys.argv[1], sys.argv[2], limit or None, float(sys.argv[4]) if len(sys.argv) > 4 else 0.0)
