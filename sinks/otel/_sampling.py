"""Which steps get a span: every step up to a threshold, then every k-th.

A long run must not turn into millions of step spans: neither the exporter's queue nor a
trace viewer copes. Steps past ``first`` keep a span only when their index is a multiple
of ``every`` (``every=0``: none). A skipped step's spans are dropped and counted (the run
span's ``rlobs.steps_skipped``/``rlobs.spans_skipped``), so what is shown is always a
whole step with all its spans.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepSampling:
    """Args:
    first: steps ``0 .. first-1`` always get a span.
    every: afterwards, step ``k`` gets one when ``k % every == 0``; ``0`` keeps none.
    """

    first: int = 1000
    every: int = 100

    def keep(self, step: int, env_steps: int = 1) -> bool:
        """Whether step ``step`` gets a span (a record of ``env_steps`` env steps: when
        one of the indices it stands for would)."""
        if step - env_steps + 1 < self.first:
            return True
        every = self.every
        return every > 0 and step // every != (step - env_steps) // every
