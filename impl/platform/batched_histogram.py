"""A Prometheus histogram observed in this process's memory and published now and then.

In prometheus_client's multiprocess mode every observation is a locked write of the sum and of
one bucket into the process's mmap file. Observed on every request, that showed in the CPU a
request (docs/perf/observability.md). Here an observation is a bucket found by bisection and two
additions to a list; publish() (once a second, and when the process stops) adds what was
counted since the last publish to the histogram's values, which the scrape reads. A scrape sees
the requests finished up to a second before it, which a Prometheus scraping every 5-15 s cannot
tell from now.

publish() adds to the histogram's own value objects (its `_buckets` and `_sum`), as its
observe() does one at a time: prometheus_client has no public "observe n times". The tests that
read the scraped histogram (tests/platform/test_metrics.py, test_prometheus.py) pin that down.
"""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client import Histogram


class BatchedHistogram:
    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        self._bounds: list[float] = list(histogram._upper_bounds)  # the last is +Inf
        # labels -> [observations in each bucket..., their sum]
        self._pending: dict[tuple[str, ...], list[float]] = {}

    def observe(self, seconds: float, labels: tuple[str, ...] = ()) -> None:
        counts = self._pending.get(labels)
        if counts is None:
            counts = self._pending[labels] = [0.0] * (len(self._bounds) + 1)
        counts[bisect_left(self._bounds, seconds)] += 1  # the first bucket whose bound >= it
        counts[-1] += seconds

    def publish(self) -> None:
        pending, self._pending = self._pending, {}
        for labels, counts in pending.items():
            child = self.histogram.labels(*labels) if labels else self.histogram
            for bucket, count in zip(child._buckets, counts, strict=False):
                if count:
                    bucket.inc(count)
            child._sum.inc(counts[-1])
