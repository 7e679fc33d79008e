"""Whole minutes from the rollups and edges from the records give what the records alone give."""

from __future__ import annotations

import random

import pytest
from samples import T0, iso, record

from gpumetrics.state import app_state
from gpumetrics.store import summaries
from gpumetrics.store.rollups import MINUTE

START = int(T0.timestamp() * 1_000_000)


@pytest.fixture
def filled(app, client):
    rng = random.Random(3)
    batch = []
    for gpu in (0, 1, 2):
        for second in rng.sample(range(4 * 3600), 2500):
            micros = rng.choice([0, 1, 499_999, 999_999])
            batch.append(
                record(
                    "memory",
                    gpu=gpu,
                    timestamp=iso(T0.fromtimestamp((START + second * 1_000_000 + micros) / 1e6, T0.tzinfo)),
                    usedMiB=rng.random() * 40000,
                    freeMiB=rng.randint(0, 40000),
                )
            )
    rng.shuffle(batch)
    for start in range(0, len(batch), 1000):
        assert client.post("/metrics", json=batch[start : start + 1000]).status_code == 201
    return app_state(app).db


def from_records_only(conn, span, step, columns):
    rows = summaries._record_rows(conn, None, "memory", columns, span.start, span.end)
    return summaries._summarize(rows, columns, step)


@pytest.mark.parametrize("step_minutes", [1, 7, 60, None])
def test_rollups_and_records_answer_alike_on_random_windows(filled, step_minutes):
    rng = random.Random(step_minutes or 0)
    columns = ["used_mib", "free_mib", "total_mib"]
    step = None if step_minutes is None else step_minutes * MINUTE
    with filled.reading() as conn:
        for _ in range(12):
            low = START + rng.randint(-MINUTE, 3 * 3600 * 1_000_000)
            span = summaries.Span(low, low + rng.randint(0, 90 * MINUTE))
            mixed = summaries.summaries(conn, None, "memory", columns, span, step)
            plain = from_records_only(conn, span, step, columns)
            assert mixed.keys() == plain.keys()
            for key, summary in plain.items():
                count, total, low_value, high, first, last_ts, last = mixed[key]
                assert (count, low_value, high, first, last_ts, last) == (
                    summary[0],
                    summary[2],
                    summary[3],
                    summary[4],
                    summary[5],
                    summary[6],
                ), key
                assert total == pytest.approx(summary[1], rel=1e-12), key
