"""MLPerf Inference LoadGen's run protocol: how a run's reported throughput relates to the steady state.

A performance model predicts a steady rate; LoadGen reports a finite run. Offline issues one query of
many samples and times it to the last completion; Server schedules Poisson arrivals for the run's
duration and divides the tokens by the time until the last sample is done. Both count the tail in which
the longest answers decode in a shrinking batch. Sources: mlcommons/inference ``loadgen/mlperf.conf``
(durations, per-benchmark ``min_query_count``), ``loadgen/test_settings_internal.cc`` (the Offline sample
count) and ``loadgen/results.cc`` (the reported rates).
"""

from __future__ import annotations

import math

MLPERF_OFFLINE_MIN_DURATION_S = 600.0  # mlperf.conf *.Offline.min_duration = 600000 (ms)
MLPERF_SERVER_MIN_DURATION_S = 600.0  # mlperf.conf *.Server.min_duration = 600000 (ms)
LOADGEN_OFFLINE_SLACK = 1.1  # loadgen/test_settings_internal.cc kSlack


def mlperf_server_completed_share(drain_s: float) -> float:
    """Share of the steady token rate an MLPerf Server run reports: LoadGen schedules Poisson arrivals for
    the run's duration (600 s) and divides the tokens by the time until the last sample is done
    (loadgen/results.cc, "Completed tokens per second" = token_count / final_query_all_samples_done_time),
    so the in-flight requests' drain after the last arrival counts: 600 / (600 + drain)."""
    return MLPERF_SERVER_MIN_DURATION_S / (MLPERF_SERVER_MIN_DURATION_S + drain_s)


def mlperf_offline_samples(row: dict | None, samples_per_s: float) -> int | None:
    """Samples in an MLPerf Offline run: LoadGen issues one query of max(min_query_count, 1.1 x 600 s x
    offline_expected_qps) samples and reports them over the time until the last completes, so the run
    ends with its longest answers decoding in a shrinking batch. The submitter's expected QPS is taken as
    the model's own steady-state rate. None when the benchmark's min_query_count is not recorded."""
    if not row or not row.get("offline_min_query_count"):
        return None
    return int(max(row["offline_min_query_count"],
                   math.ceil(LOADGEN_OFFLINE_SLACK * MLPERF_OFFLINE_MIN_DURATION_S * samples_per_s)))
