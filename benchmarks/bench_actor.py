"""Compiled-actor latency: the SAC actor on every backend and batch size.

Same benchmark as ``rlobs bench actor`` (see ``rlobs/torch/_bench.py``), runnable from a
checkout::

    PYTHONPATH=. python benchmarks/bench_actor.py --threads 2
"""

from __future__ import annotations

import sys

from rlobs.torch._bench import main

if __name__ == "__main__":
    sys.exit(main())
