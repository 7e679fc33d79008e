"""The C++ crawler's own record contract, mapped onto the kinds of the registry.

The crawler sends one "gpu" record per GPU and window (memory, utilization,
temperature, power and, from older builds, clocks in one object) and one "process"
record per process. Each is validated under the crawler's own field names, so a
rejection names the field its operator knows, then split into canonical records.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from .kinds import KINDS
from .schemas import Lenient, StrictInteger, Timestamp, record_field, text_rules

UNKNOWN = "unknown"


@dataclass(frozen=True)
class Mapped:
    """A crawler field: the kind and field it feeds, and the factor to its unit."""

    kind: str
    field: str
    divide_by: float = 1
    required: bool = True
    unit: str | None = None  # the crawler's unit, where it differs from the kind's


GPU_FIELDS: dict[str, Mapped] = {
    "totalMemoryMiB": Mapped("memory", "totalMiB"),
    "usedTotalMemoryMiB": Mapped("memory", "usedMiB"),
    "freeMemoryMiB": Mapped("memory", "freeMiB"),
    "gpuUtilPercent": Mapped("utilization", "gpuPercent"),
    "memUtilPercent": Mapped("utilization", "memoryPercent"),
    "temperatureCelsius": Mapped("temperature", "celsius"),
    "powerMilliwatts": Mapped("power", "watts", divide_by=1000, unit="mW"),
    "graphicsClockMHz": Mapped("clocks", "graphicsMHz", required=False),
    "memClockMHz": Mapped("clocks", "memoryMHz", required=False),
    "smClockMHz": Mapped("clocks", "smMHz", required=False),
}
PROCESS_FIELDS: dict[str, Mapped] = {
    "pid": Mapped("process", "pid"),
    "processUsedMemoryMiB": Mapped("process", "usedMiB"),
    "processName": Mapped("process", "processName"),
    "appName": Mapped("process", "appName", required=False),
    "kernelName": Mapped("process", "kernelName", required=False),
    "tag": Mapped("process", "tag", required=False),
    "scopeMemDeltaMiB": Mapped("process", "scopeMemDeltaMiB", required=False),
}
FIELDS_BY_TYPE = {"gpu": GPU_FIELDS, "process": PROCESS_FIELDS}

GPU_EXAMPLE = {
    "timestamp": "2025-12-01T18:51:30Z",
    "hostname": "trainer-01",
    "gpuId": "GPU-abc-uuid",
    "gpuName": "NVIDIA A100-PCIE-40GB",
    "metricType": "gpu",
    "totalMemoryMiB": 40960,
    "usedTotalMemoryMiB": 1234,
    "freeMemoryMiB": 39726,
    "gpuUtilPercent": 72,
    "memUtilPercent": 35,
    "temperatureCelsius": 62,
    "powerMilliwatts": 165000,
}
PROCESS_EXAMPLE = {
    "timestamp": "2025-12-01T18:51:30Z",
    "hostname": "trainer-01",
    "gpuId": "GPU-abc-uuid",
    "gpuName": "NVIDIA A100-PCIE-40GB",
    "metricType": "process",
    "pid": 1234,
    "processName": "python",
    "processUsedMemoryMiB": 2048,
    "appName": "trainer",
    "kernelName": "vectorAdd,reduceSum",
    "tag": "epoch1",
    "scopeMemDeltaMiB": 256,
}


def _crawler_field(mapped: Mapped) -> fields.Field:
    """The registry's field, under the crawler's name, in the crawler's unit."""
    field = KINDS[mapped.kind].field(mapped.field)
    scale = mapped.divide_by
    field = replace(
        field,
        required=mapped.required,
        unit=mapped.unit or field.unit,
        minimum=None if field.minimum is None else field.minimum * scale,
        maximum=None if field.maximum is None else field.maximum * scale,
    )
    return record_field(field, note=f"Becomes `{mapped.field}` of `{mapped.kind}`.")


class _CrawlerRecord(Lenient):
    @validates_schema
    def _identifiable(self, data, **kwargs):
        if data.get("gpuId") == UNKNOWN and data.get("gpuIndex") is None:
            raise ValidationError('"unknown" cannot tell GPUs apart: send the UUID, or gpuIndex with it.', "gpuId")


def _schema(metric_type: str) -> type[Schema]:
    declared: dict[str, fields.Field] = {
        "timestamp": Timestamp(required=True, metadata={"description": "End of the sampling window, ISO 8601 UTC."}),
        "hostname": fields.String(required=True, validate=text_rules(255, shortest=1)),
        "gpuId": fields.String(
            required=True,
            validate=text_rules(255, shortest=1),
            metadata={"description": 'NVML UUID of the GPU, or "unknown".'},
        ),
        "gpuName": fields.String(validate=text_rules(255), metadata={"description": 'Product name, or "unknown".'}),
        "gpuIndex": StrictInteger(
            validate=validate.Range(min=0, max=2**31 - 1),
            metadata={"description": "NVML index, when the crawler sends it: ties the UUID to the index."},
        ),
        "metricType": fields.String(required=True, validate=validate.Equal(metric_type)),
        **{name: _crawler_field(mapped) for name, mapped in FIELDS_BY_TYPE[metric_type].items()},
    }
    return _CrawlerRecord.from_dict(declared, name=f"Crawler{metric_type.capitalize()}Record")


SCHEMAS: dict[str, type[Schema]] = {metric_type: _schema(metric_type) for metric_type in FIELDS_BY_TYPE}
LOADERS: dict[str, Schema] = {metric_type: cls() for metric_type, cls in SCHEMAS.items()}


def is_crawler_record(item: dict[str, Any]) -> bool:
    return "metricType" in item and "metric" not in item


def split(loaded: dict[str, Any]) -> list[dict[str, Any]]:
    """A validated crawler record to its canonical records, one per kind it carries."""
    uuid = loaded["gpuId"] if loaded["gpuId"] != UNKNOWN else None
    name = loaded.get("gpuName")
    identity = {
        "timestamp": loaded["timestamp"],
        "gpuIndex": loaded.get("gpuIndex"),
        "host": loaded["hostname"],
        **({"uuid": uuid} if uuid else {}),
        **({"name": name} if name and name != UNKNOWN else {}),
    }
    by_kind: dict[str, dict[str, Any]] = {}
    for crawler_name, mapped in FIELDS_BY_TYPE[loaded["metricType"]].items():
        if crawler_name in loaded:
            value = loaded[crawler_name]
            if mapped.divide_by != 1:
                value = value / mapped.divide_by
            by_kind.setdefault(mapped.kind, {})[mapped.field] = value
    return [
        {**identity, "metric": kind, **values}
        for kind, values in by_kind.items()
        if all(f.name in values for f in KINDS[kind].fields if f.required)
    ]
