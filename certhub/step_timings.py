"""Issuance step timings, counted in Redis by the worker that ran each step and shown by /metrics.

Apart from certhub.metrics (which reads every app's models) so the issuance workflow can record
into it without importing the apps that depend on it.
"""

import logging
from bisect import bisect_left

import redis

from certhub import outbox

log = logging.getLogger(__name__)

STEP_TIMINGS_KEY = "certhub:metrics:issuance_step_seconds"
# Seconds: a step is one or a few HTTP round trips, a DNS query or a database write.
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def issuance_step_observed(*, step: str, seconds: float, failed: bool) -> None:
    """Count one run of an issuance step; never raises.

    Kept in Redis, the store every worker and web process shares: one pipelined round trip, two
    writes. Without Redis (the embedded default) nothing is counted.
    """
    client = outbox.redis_client()
    if client is None:
        return
    prefix = f"{step}:{'failed' if failed else 'ok'}"
    try:
        pipe = client.pipeline(transaction=False)
        pipe.hincrby(STEP_TIMINGS_KEY, f"{prefix}:{bisect_left(STEP_BUCKETS, seconds)}", 1)
        pipe.hincrbyfloat(STEP_TIMINGS_KEY, f"{prefix}:sum", seconds)
        pipe.execute()
    except redis.RedisError as e:
        log.debug("issuance step timing not counted: %s", e)
