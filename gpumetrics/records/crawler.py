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

from ..kinds import GPU_INDEX_MAX, KINDS, NAME_MAX, Field
from .fastpath import Acceptor, compile_fields
from .schemas import Lenient, record_field

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

# The fields of every crawler record besides its measurements, under the crawler's names.
IDENTITY: tuple[Field, ...] = (
    Field("timestamp", "ts", "timestamp", "", "End of the sampling window, ISO 8601 UTC."),
    Field(
        "hostname", "host", "string", "", "Host the crawler runs on; empty means the local host.", max_length=NAME_MAX
    ),
    Field(
        "gpuId",
        "uuid",
        "string",
        "",
        'NVML UUID of the GPU, or "unknown" (or empty) when the crawler could not tell; a process record '
        "without a GPU is stored under its host.",
        max_length=NAME_MAX,
    ),
    Field("gpuName", "name", "string", "", 'Product name, or "unknown".', required=False, max_length=NAME_MAX),
    Field(
        "gpuIndex",
        "gpu_index",
        "integer",
        "",
        "NVML index, when the crawler sends it: ties the UUID to the index.",
        minimum=0,
        maximum=GPU_INDEX_MAX,
        required=False,
    ),
)

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


def _crawler_field(name: str, mapped: Mapped) -> Field:
    """The registry's field, under the crawler's name, in the crawler's unit."""
    field = KINDS[mapped.kind].field(mapped.field)
    scale = mapped.divide_by
    return replace(
        field,
        name=name,
        required=mapped.required,
        unit=mapped.unit or field.unit,
        minimum=None if field.minimum is None else field.minimum * scale,
        maximum=None if field.maximum is None else field.maximum * scale,
    )


def fields_of(metric_type: str) -> tuple[Field, ...]:
    """Every field of a crawler record type, with the crawler's names, units and bounds."""
    return IDENTITY + tuple(_crawler_field(name, mapped) for name, mapped in FIELDS_BY_TYPE[metric_type].items())


class _CrawlerRecord(Lenient):
    @validates_schema
    def _identifiable(self, data, **kwargs):
        if not identifiable(data):
            message = f'"{data.get("gpuId")}" cannot tell GPUs apart: send the UUID, or gpuIndex with it.'
            raise ValidationError(message, "gpuId")


def _uuid(gpu_id: str | None) -> str | None:
    return None if gpu_id in (None, "", UNKNOWN) else gpu_id


def identifiable(loaded: dict[str, Any]) -> bool:
    """Whether a loaded record can be stored: a gpu record must name its GPU (a UUID, or
    gpuIndex); a process record without either belongs to its host."""
    if loaded.get("metricType") == "process":
        return True
    return _uuid(loaded.get("gpuId")) is not None or loaded.get("gpuIndex") is not None


def _schema(metric_type: str) -> type[Schema]:
    notes = {name: f"Becomes `{m.field}` of `{m.kind}`." for name, m in FIELDS_BY_TYPE[metric_type].items()}
    declared: dict[str, fields.Field] = {
        field.name: record_field(field, note=notes.get(field.name, "")) for field in fields_of(metric_type)
    }
    declared["metricType"] = fields.String(required=True, validate=validate.Equal(metric_type))
    return _CrawlerRecord.from_dict(declared, name=f"Crawler{metric_type.capitalize()}Record")


SCHEMAS: dict[str, type[Schema]] = {metric_type: _schema(metric_type) for metric_type in FIELDS_BY_TYPE}
LOADERS: dict[str, Schema] = {metric_type: cls() for metric_type, cls in SCHEMAS.items()}
ACCEPTORS: dict[str, Acceptor] = {
    metric_type: compile_fields(fields_of(metric_type), ("metricType", metric_type)) for metric_type in FIELDS_BY_TYPE
}


def is_crawler_record(item: dict[str, Any]) -> bool:
    return "metricType" in item and "metric" not in item


def split(loaded: dict[str, Any]) -> list[dict[str, Any]]:
    """A validated crawler record to its canonical records, one per kind it carries."""
    uuid = _uuid(loaded["gpuId"])
    name = loaded.get("gpuName") if uuid is not None or loaded.get("gpuIndex") is not None else None
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
