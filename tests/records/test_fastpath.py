"""The fast acceptors answer exactly as marshmallow does, on generated records of both formats."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError
from samples import FIELDS, record

from gpumetrics.kinds import KINDS
from gpumetrics.records import crawler
from gpumetrics.records.schemas import ACCEPTORS, RECORD_LOADERS

ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 100, 100.0, 100.5, 2**31 - 1, 2**31, 2**63 - 1, 2**63, -(2**63), 1e308, -0.0]),
    st.text(max_size=300),
    st.sampled_from(
        ["2025-12-01T18:51:30Z", "2025-12-01", "2025-12-01T18:51:30+05:00", "0001-01-01T00:00:00+01:00", ""]
    ),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@st.composite
def records(draw):
    metric = draw(st.sampled_from(list(FIELDS)))
    item = record(metric)
    names = ["timestamp", "gpuIndex", "host", "uuid", "name", *(f.name for f in KINDS[metric].fields), "extra"]
    for name in draw(st.lists(st.sampled_from(names), max_size=3, unique=True)):
        if draw(st.booleans()):
            item[name] = draw(ODD_VALUES)
        else:
            item.pop(name, None)
    return metric, item


@st.composite
def crawler_records(draw):
    metric_type = draw(st.sampled_from(list(crawler.FIELDS_BY_TYPE)))
    item = dict(crawler.GPU_EXAMPLE if metric_type == "gpu" else crawler.PROCESS_EXAMPLE)
    names = [f.name for f in crawler.fields_of(metric_type)] + ["extra"]
    for name in draw(st.lists(st.sampled_from(names), max_size=3, unique=True)):
        if draw(st.booleans()):
            item[name] = draw(st.one_of(ODD_VALUES, st.sampled_from(["unknown", "GPU-x", 0, 3])))
        else:
            item.pop(name, None)
    return metric_type, item


def marshmallow_says(loader, item):
    try:
        return loader.load(item)
    except ValidationError:
        return None


def same(left, right):
    if left is None or right is None:
        return left is right
    if left.keys() != right.keys():
        return False
    return all(
        type(left[k]) is type(right[k]) and (left[k] == right[k] or (math.isnan(left[k]) and math.isnan(right[k])))
        for k in left
    )


@settings(max_examples=1500, deadline=None)
@given(records())
def test_fast_acceptor_never_accepts_what_marshmallow_rejects_and_returns_the_same(case):
    metric, item = case
    assert_agree(ACCEPTORS[metric](item), marshmallow_says(RECORD_LOADERS[metric], item), item)


@settings(max_examples=1500, deadline=None)
@given(crawler_records())
def test_fast_acceptor_of_the_crawler_format_agrees_with_marshmallow(case):
    metric_type, item = case
    fast = crawler.ACCEPTORS[metric_type](item)
    if fast is not None and not crawler.identifiable(fast):
        fast = None  # the cross-field rule is marshmallow's to word
    assert_agree(fast, marshmallow_says(crawler.LOADERS[metric_type], item), item)


def assert_agree(fast, slow, item):
    if fast is not None:
        assert same(fast, slow), (item, fast, slow)
    else:
        # Declining is always safe, but a valid record must not fall to the slow path.
        assert slow is None, (item, slow)


@pytest.mark.parametrize("metric", list(FIELDS))
def test_every_sample_record_takes_the_fast_path(metric):
    assert ACCEPTORS[metric](record(metric, host="h", uuid="u", name="n")) is not None


@pytest.mark.parametrize("example", [crawler.GPU_EXAMPLE, crawler.PROCESS_EXAMPLE])
def test_every_crawler_example_takes_the_fast_path(example):
    assert crawler.ACCEPTORS[example["metricType"]](example) is not None
