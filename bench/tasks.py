"""The bench's tasks: a no-op that notes when it ended, so the run can tell it is over."""

import os
import time
from typing import Any

import redis
from celery import shared_task

#: Redis hash: broker id -> time.time() at the end of the task body.
ENDS_KEY = "bench:ends"
_client: list[Any] = []


def bench_redis() -> Any:
    """A Redis client on the bench's database, one per process."""
    if not _client or _client[0][0] != os.getpid():
        url = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/5")
        _client[:] = [(os.getpid(), redis.Redis.from_url(url))]
    return _client[0][1]


@shared_task(name="bench.noop", bind=True)
def noop(self: Any) -> None:
    """Does nothing but note its end time (the same in every mode)."""
    bench_redis().hset(ENDS_KEY, self.request.id, time.time())
