"""Environment variables the MLflow sink reads. Explicit constructor arguments win.

Bad values are reported with a :class:`~rlobs.ConfigWarning` and the default is used.
"""

from __future__ import annotations

MLFLOW_TRACKING_URI = "MLFLOW_TRACKING_URI"
"""MLflow's own variable: the tracking server (``http://host:5000``) or store
(``sqlite:///path/mlflow.db``). Setting it selects the sink when ``RLOBS_SINKS`` is unset.
Unset: the embedded default ``sqlite:///<RLOBS_JSONL_DIR>/mlflow.db``."""

RLOBS_MLFLOW_EXPERIMENT = "RLOBS_MLFLOW_EXPERIMENT"
"""Experiment runs go to. Which experiment a run goes to, first that applies: the run's
own (``Hub.run(experiment=…)``, ``log_result(experiment=…)``); its parent's; the sink's
``experiment`` argument; this variable; ``MLFLOW_EXPERIMENT_NAME``; ``rlobs``."""

MLFLOW_EXPERIMENT_NAME = "MLFLOW_EXPERIMENT_NAME"
"""MLflow's own variable, read after ``RLOBS_MLFLOW_EXPERIMENT``."""

RLOBS_MLFLOW_SCORE_EPISODES = "RLOBS_MLFLOW_SCORE_EPISODES"
"""A run's ``score`` metric (for compare views), when the run does not log its own
``score`` (``run.log_summary({"score": …})``): the mean of its last N episode returns.
Default ``10``."""

RLOBS_MLFLOW_DOWNSAMPLE = "RLOBS_MLFLOW_DOWNSAMPLE"
"""How step metrics are thinned before they are sent: ``every:N`` (steps whose index is a
multiple of N, plus each run's last step) or ``window:SECONDS`` (per window of event time:
``<key>`` = mean, and ``<key>.min``, ``<key>.max``, ``<key>.last``). Episode metrics,
summaries and the JSONL log keep full resolution. Default: every step."""

RLOBS_MLFLOW_SPAN_INTERVAL_S = "RLOBS_MLFLOW_SPAN_INTERVAL_S"
"""Seconds of event time between span statistics (p50/p95/p99/mean/count per span name).
Default ``10``."""

RLOBS_MLFLOW_MAX_BUFFER = "RLOBS_MLFLOW_MAX_BUFFER"
"""Metric values held while MLflow is unreachable; beyond it new values are dropped,
counted and the run tagged ``rlobs.mlflow.gaps`` (``rlobs sync`` fills it later). In the
shipper the sink stops reading the log when half of it is used, so nothing is lost there.
Default ``2000000`` (~300 MB at worst)."""

RLOBS_MLFLOW_END_WAIT_S = "RLOBS_MLFLOW_END_WAIT_S"
"""Closing the sink waits for the sender's last requests while they keep succeeding,
giving up after this many seconds without progress (1 s while MLflow is unreachable). In
the shipper the sink closes once every run settled; how long a run's end may wait for
MLflow is ``RLOBS_SHIPPER_LINGER_S``. Default ``4``."""

RLOBS_MLFLOW_REQUEST_TIMEOUT_S = "RLOBS_MLFLOW_REQUEST_TIMEOUT_S"
"""Seconds one HTTP request may take (sets ``MLFLOW_HTTP_REQUEST_TIMEOUT`` when that is
unset). Default ``15``."""
