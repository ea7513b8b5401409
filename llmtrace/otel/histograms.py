"""Histogram records without the SDK's per-record attribute work, when that is provably the same.

Why: an OpenTelemetry SDK ``Histogram.record`` with llmtrace's 6-7 labels costs ~10-14 us
(it builds a ``Measurement`` that cleans every attribute, copies the dict, sorts and hashes it
to find the attribute set's aggregation), and the worker records two or three per LLM call: the
largest single part of llmtrace's CPU per call. The attribute sets are few and repeat (they are
built once per label set, see ``CostMetrics._label_set``), so the work is the same every time.

``FastHistogram.record(value, attributes, key)`` does the public ``record`` the first time an
attribute set is seen (so the SDK creates and owns the aggregations, applies views, cardinality
limits and overflow as usual), then keeps the aggregation objects the SDK filed that set under
and hands later values straight to their ``aggregate``, which is what the SDK itself ends with.
What a histogram point holds (count, sum, bucket counts, min, max) is therefore identical;
tests/test_live_histograms.py compares the collected points with the public path's.

It falls back to the public ``record`` (same result, slower) whenever it cannot be sure: the
provider is not the SDK's or its internals are not the shape this was written against
(opentelemetry-sdk 1.x ``_measurement_consumer`` / ``_reader_storages`` /
``_instrument_view_instrument_matches`` / ``_attributes_aggregation``), a view filters
attribute keys, a reader resets aggregations on collection (delta temporality: a kept handle
could be discarded mid-record), the exemplar filter would sample this value, the value is
negative or not finite (the SDK warns and drops), the instrument is disabled, a reader was
added or removed, or the aggregation kept is no longer the one filed for the set. Any error in
the fast path turns it off for good.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from time import time_ns
from typing import Any

from llmtrace.otel import _guard

_MAX_SETS = 4096


class FastHistogram:
    """One SDK histogram, recorded per attribute set through its kept aggregations."""

    def __init__(self, histogram: Any) -> None:
        self.histogram = histogram
        self.fast_records = 0  # how many values took the fast path (tests read it)
        # attribute-set key -> (the reader storages seen, the aggregations kept, or None when
        # the set must always take the public path)
        self._sets: dict[Any, tuple[Any, list[tuple[dict[Any, Any], Any, Any]] | None]] = {}
        self._consumer: Any = None
        self._measurement: Any = None
        self._sample: Any = None  # the exemplar filter's should_sample, None: never samples
        self._context: Any = None
        self._current: Any = None  # opentelemetry.context.get_current
        self._trace_based = False  # the filter samples only where a span is in the context
        self._enabled = self._setup()

    def _setup(self) -> bool:
        try:
            from opentelemetry.context import Context, get_current
            from opentelemetry.sdk.metrics._internal.exemplar.exemplar_filter import (
                AlwaysOffExemplarFilter,
                TraceBasedExemplarFilter,
            )
            from opentelemetry.sdk.metrics._internal.measurement import Measurement

            consumer = self.histogram._measurement_consumer
            storages = consumer._reader_storages
            exemplar_filter = consumer._sdk_config.exemplar_filter
            if not isinstance(storages, dict):
                return False
        except Exception:  # noqa: BLE001 - not the SDK, or not the shape we know: public path
            return False
        self._consumer = consumer
        self._measurement = Measurement
        self._context = Context()
        self._current = get_current
        if not isinstance(exemplar_filter, AlwaysOffExemplarFilter):
            self._sample = exemplar_filter.should_sample
            # an empty context (the worker thread's) holds no span to sample from
            self._trace_based = type(exemplar_filter) is TraceBasedExemplarFilter
        return True

    def record(self, value: float, attributes: dict[str, Any], key: Any) -> None:
        """Record ``value`` with ``attributes``; ``key`` identifies that attribute set (hashable,
        equal for equal sets; the caller builds it once per set)."""
        if self._enabled:
            try:
                if self._fast(value, attributes, key):
                    return
            except Exception as exc:  # noqa: BLE001 - never lose a value: public path from now on
                self._enabled = False
                _guard.swallow("metrics.fast_histogram", exc)
        self.histogram.record(value, attributes)

    def _fast(self, value: float, attributes: dict[str, Any], key: Any) -> bool:
        if not (value >= 0 and math.isfinite(value)):
            return False
        histogram = self.histogram
        if not histogram._is_enabled():
            return False
        consumer = self._consumer
        storages = consumer._reader_storages
        entry = self._sets.get(key)
        if entry is None or entry[0] is not storages:
            return self._first(value, attributes, key, storages)
        handles = entry[1]
        if handles is None:
            return False  # this set always takes the public path
        now = time_ns()
        if self._sample is not None:
            context = self._current()
            if (context or not self._trace_based) and self._sample(value, now, attributes, context):
                return False  # the public path records the exemplar too
        for filed, aggr_key, aggregation in handles:
            if filed.get(aggr_key) is not aggregation:
                self._sets.pop(key, None)
                return False
        measurement = self._measurement(value, now, histogram, self._context, None)
        for _, _, aggregation in handles:
            aggregation.aggregate(measurement, False)
        self.fast_records += 1
        return True

    def record_many(self, values: list[float], attributes: dict[str, Any], key: Any) -> None:
        """Record each of ``values`` with one attribute set: the points are the same as
        ``record`` per value, with the checks and the lock taken once for all of them.

        Why: the live worker records a batch's calls at once (``CostMetrics.record_many``);
        per value, an explicit-bucket histogram's ``aggregate`` is a sum, a min, a max and a
        bisect, while the checks around it, the ``Measurement`` and the lock cost several times
        that. Anything but the SDK's explicit-bucket aggregation, an exemplar filter that would
        sample here, or a value the SDK would drop takes ``record`` per value."""
        if not values:
            return
        if not self._enabled or self._sample_here() or not all(_recordable(v) for v in values):
            for value in values:
                self.record(value, attributes, key)
            return
        try:
            self._many(values, attributes, key)
        except Exception as exc:  # noqa: BLE001 - a value half-recorded cannot be told apart
            self._enabled = False  # from one not recorded: the public path from now on
            _guard.swallow("metrics.fast_histogram", exc)

    def _sample_here(self) -> bool:
        """Whether the exemplar filter might sample a value recorded now (then per value)."""
        if self._sample is None:
            return False
        return bool(self._current()) or not self._trace_based

    def _many(self, values: list[float], attributes: dict[str, Any], key: Any) -> None:
        storages = self._consumer._reader_storages
        entry = self._sets.get(key)
        if self.histogram._is_enabled() and (entry is None or entry[0] is not storages):
            self.record(values[0], attributes, key)  # a set's first value files its aggregations
            values = values[1:]
            entry = self._sets.get(key)
        handles = entry[1] if entry is not None and entry[0] is storages else None
        if (
            handles is None
            or not self.histogram._is_enabled()
            or any(
                filed.get(aggr_key) is not aggregation for filed, aggr_key, aggregation in handles
            )
        ):
            for value in values:
                self.record(value, attributes, key)  # checks again, and may forget the set
            return
        for _, _, aggregation in handles:
            if type(aggregation) is _bucket_type():
                _aggregate_all(aggregation, values)
                continue
            for value in values:  # another aggregation: its own aggregate, per value
                measurement = self._measurement(
                    value, time_ns(), self.histogram, self._context, None
                )
                aggregation.aggregate(measurement, False)
        self.fast_records += len(values)

    def _first(self, value: float, attributes: dict[str, Any], key: Any, storages: Any) -> bool:
        """Record through the public path, then keep the aggregations it filed the set under
        (or remember that this set must always take the public path)."""
        self.histogram.record(value, attributes)
        if len(self._sets) >= _MAX_SETS:
            self._sets.clear()
        self._sets[key] = (storages, self._handles(attributes, storages))
        return True

    def _handles(
        self, attributes: dict[str, Any], storages: Any
    ) -> list[tuple[dict[Any, Any], Any, Any]] | None:
        from opentelemetry.sdk.metrics._internal._view_instrument_match import _hash_attributes

        aggr_key = _hash_attributes(dict(attributes))
        handles = []
        for storage in storages.values():
            matches = storage._instrument_view_instrument_matches.get(self.histogram)
            if not matches:
                return None
            for match in matches:
                if match._reset_on_collect or match._view._attribute_keys is not None:
                    return None
                filed = match._attributes_aggregation
                aggregation = filed.get(aggr_key)
                if aggregation is None:  # overflowed: the public path picks the overflow set
                    return None
                handles.append((filed, aggr_key, aggregation))
        return handles or None


def _recordable(value: float) -> bool:
    """A value the SDK records (it warns and drops negative and non-finite ones)."""
    return value >= 0 and math.isfinite(value)


_BUCKET_TYPE: list[type] = []


def _bucket_type() -> type:
    """The SDK's explicit-bucket histogram aggregation class (imported once)."""
    if not _BUCKET_TYPE:
        from opentelemetry.sdk.metrics._internal.aggregation import (
            _ExplicitBucketHistogramAggregation,
        )

        _BUCKET_TYPE.append(_ExplicitBucketHistogramAggregation)
    return _BUCKET_TYPE[0]


def _aggregate_all(aggregation: Any, values: list[float]) -> None:
    """``_ExplicitBucketHistogramAggregation.aggregate`` for each value without exemplars (what
    ``aggregate(measurement, False)`` does, opentelemetry-sdk 1.x), under its lock once."""
    if not values:
        return
    boundaries = aggregation._boundaries
    with aggregation._lock:
        if aggregation._value is None:
            aggregation._value = aggregation._get_empty_bucket_counts()
        counts = aggregation._value
        total = aggregation._sum
        for value in values:
            total += value
            counts[bisect_left(boundaries, value)] += 1
        aggregation._sum = total
        if aggregation._record_min_max:
            aggregation._min = min(aggregation._min, *values)
            aggregation._max = max(aggregation._max, *values)
