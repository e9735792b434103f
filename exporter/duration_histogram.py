"""The generation duration histogram as a family whose samples are made while it is encoded.

With a thousand sources it is ~110,000 samples; built as objects all at once, ~70 MB. It also
tells the renderer (``exporter.exposition.Grouped``) each source's samples without making them,
so a source whose totals did not change is written from cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import partial
from itertools import groupby
from typing import cast

from prometheus_client.core import HistogramMetricFamily
from prometheus_client.samples import Sample

from exporter.store.reads import RunTotal


class DurationHistogram(HistogramMetricFamily):
    """Its samples are made as an encoder reads them, again for each encoder."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str],
        bounds: Sequence[float],
        series: Sequence[tuple[list[str], RunTotal]],
    ) -> None:
        super().__init__(name, documentation, labels=labels)
        self._bounds = [_le(b) for b in bounds]
        self._series = series
        self.samples = cast(list[Sample], _Again(self._samples))

    def _samples(self) -> Iterator[Sample]:
        for _, _, make in self.groups():
            yield from make()

    def groups(self) -> Iterator[tuple[tuple[str, str], int, Callable[[], list[Sample]]]]:
        """The series of each source (they come sorted by source), for the renderer's cache."""
        for owner, series in groupby(self._series, key=lambda s: (s[0][0], s[0][1])):
            mine = list(series)
            digest = hash((tuple(self._bounds), *((tuple(names), t) for names, t in mine)))
            yield owner, digest, partial(self._make, mine)

    def _make(self, series: list[tuple[list[str], RunTotal]]) -> list[Sample]:
        one = HistogramMetricFamily(self.name, "", labels=self._labelnames)
        for labels, total in series:
            one.add_metric(
                labels,
                buckets=[
                    *zip(self._bounds, total.duration_buckets, strict=True),
                    ("+Inf", total.duration_count),
                ],
                sum_value=total.duration_sum_seconds,
            )
        return one.samples


class _Again:
    """An iterable that starts over each time it is iterated."""

    def __init__(self, make: Callable[[], Iterator[Sample]]) -> None:
        self._make = make

    def __iter__(self) -> Iterator[Sample]:
        return self._make()


def _le(bound: float) -> str:
    return str(float(bound))
