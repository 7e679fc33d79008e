"""gpumon_client's events, as the crawler forwards them: one NDJSON object a line with `type`.

The library linked into CUDA applications writes init, shutdown, scope_begin,
scope_sample, scope_end, kernel and system_sample events, timed in nanoseconds of the
host's monotonic clock; the crawler adds `hostname`. Each type is validated under its
own field names (a rejection names `ts_end_ns`, not a column), from Field tuples that
also compile the fast acceptors, as for metric records. Unknown fields are ignored.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from ..kinds import GPU_INDEX_MAX, INT32_MAX, INT64_MAX, NAME_MAX, TEXT_MAX, Field
from .fastpath import Acceptor, compile_fields
from .schemas import Lenient, StrictInteger, StrictNumber, record_field, text_rules

TYPES = ("init", "shutdown", "scope_begin", "scope_sample", "scope_end", "kernel", "system_sample")


def _ns(name: str, what: str, required: bool = True) -> Field:
    return Field(name, name, "integer", "ns", what, minimum=0, maximum=INT64_MAX, required=required)


def _text(name: str, what: str, required: bool = True, longest: int = TEXT_MAX) -> Field:
    return Field(name, name, "string", "", what, required=required, max_length=longest)


def _count(name: str, what: str, unit: str = "", required: bool = True) -> Field:
    return Field(name, name, "integer", unit, what, minimum=0, maximum=INT64_MAX, required=required)


COMMON = (
    _text(
        "hostname", "Host the crawler runs on (inserted by the crawler); empty means the local host.", False, NAME_MAX
    ),
    _text("app", "Application name given to gpumon_client."),
    _count("pid", "Process id on its host."),
)
NAMED = (_text("name", "Scope name."), _text("tag", "Free-form tag.", required=False))
FIELDS: dict[str, tuple[Field, ...]] = {
    "init": (*COMMON, _text("logPath", "The log file the library writes.", False), _ns("ts_ns", "When.")),
    "shutdown": (*COMMON, _ns("ts_ns", "When.")),
    "scope_begin": (*COMMON, *NAMED, _ns("ts_ns", "When the scope began.")),
    "scope_sample": (*COMMON, *NAMED, _ns("ts_ns", "When the sample was taken.")),
    "scope_end": (
        *COMMON,
        *NAMED,
        _ns("ts_start_ns", "When the scope began."),
        _ns("ts_end_ns", "When it ended."),
        _ns("duration_ns", "ts_end_ns - ts_start_ns."),
    ),
    "kernel": (
        *COMMON,
        _text("kernel", "Kernel name."),
        _text("tag", "Free-form tag.", required=False),
        _ns("ts_start_ns", "When the kernel started."),
        _ns("ts_end_ns", "When it ended."),
        _ns("duration_ns", "ts_end_ns - ts_start_ns."),
        _count("shared_mem_bytes", "Dynamic shared memory of the launch.", "bytes"),
        _text("cuda_error", "The launch's CUDA error, cudaSuccess when none.", longest=NAME_MAX),
    ),
    "system_sample": (*COMMON[:2], _text("name", 'Always "system".', False, NAME_MAX), _ns("ts_ns", "When.")),
}

EXAMPLES: dict[str, dict[str, Any]] = {
    "kernel": {
        "hostname": "trainer-01",
        "type": "kernel",
        "pid": 4242,
        "app": "train",
        "kernel": "ampere_sgemm_128x64_nn",
        "ts_start_ns": 1000000000,
        "ts_end_ns": 1000250000,
        "duration_ns": 250000,
        "grid": [128, 1, 1],
        "block": [256, 1, 1],
        "shared_mem_bytes": 0,
        "cuda_error": "cudaSuccess",
        "tag": "epoch1",
    },
    "system_sample": {
        "hostname": "trainer-01",
        "type": "system_sample",
        "app": "train",
        "name": "system",
        "ts_ns": 1000500000,
        "devices": [
            {
                "id": 0,
                "name": "NVIDIA A100-PCIE-40GB",
                "uuid": "GPU-abc-uuid",
                "pci_bus": "00000000:3B:00.0",
                "used_mib": 1234,
                "free_mib": 39726,
                "total_mib": 40960,
                "util_gpu": 72,
                "util_mem": 35,
                "temp_c": 62,
                "power_mw": 165000,
                "clk_gfx": 1410,
                "clk_sm": 1410,
                "clk_mem": 1215,
            }
        ],
    },
}


class Triple(fields.List):
    """Three non-negative integers: a launch's grid or block dimensions."""

    def __init__(self, **kwargs: Any) -> None:
        inner = fields.Integer(strict=True, validate=validate.Range(min=0, max=INT32_MAX))
        super().__init__(inner, validate=validate.Length(equal=3), **kwargs)


def _device_schema(shape: str) -> type[Schema]:
    """A device snapshot: the README's `memory` entries, or the library's `devices` entries."""
    index = {"required": True, "validate": validate.Range(min=0, max=GPU_INDEX_MAX)}
    mib = {"validate": validate.Range(min=0, max=1e15)}
    declared: dict[str, fields.Field] = {
        "used_mib": StrictNumber(required=True, **mib),
        "free_mib": StrictNumber(**mib),
        "total_mib": StrictNumber(**mib),
    }
    if shape == "memory":
        declared["device"] = StrictInteger(**index)
    else:
        declared["id"] = StrictInteger(**index)
        declared |= {name: fields.String(validate=text_rules(NAME_MAX)) for name in ("name", "uuid", "pci_bus")}
        percent = {"validate": validate.Range(min=0, max=100)}
        declared |= {name: StrictNumber(**percent) for name in ("util_gpu", "util_mem")}
        declared["temp_c"] = StrictNumber(validate=validate.Range(min=-273.15, max=1e15))
        declared |= {name: StrictNumber(**mib) for name in ("power_mw", "clk_gfx", "clk_sm", "clk_mem")}
    return Lenient.from_dict(declared, name=f"EventDevice{shape.capitalize()}")


MEMORY = _device_schema("memory")
DEVICES = _device_schema("devices")


class _Event(Lenient):
    @validates_schema
    def _in_order(self, data, **kwargs):
        if "ts_end_ns" in data and "ts_start_ns" in data and data["ts_end_ns"] < data["ts_start_ns"]:
            raise ValidationError("Ends before it starts (ts_start_ns).", "ts_end_ns")


def _schema(event_type: str) -> type[Schema]:
    declared: dict[str, fields.Field] = {field.name: record_field(field) for field in FIELDS[event_type]}
    declared["type"] = fields.String(required=True, validate=validate.Equal(event_type))
    if event_type == "kernel":
        declared |= {"grid": Triple(required=True), "block": Triple(required=True)}
    if event_type in ("scope_begin", "scope_sample", "scope_end"):
        declared["memory"] = fields.List(fields.Nested(MEMORY), metadata={"description": "Device memory (README)."})
        declared["devices"] = fields.List(fields.Nested(DEVICES), metadata={"description": "Devices (library)."})
    if event_type == "system_sample":
        declared["devices"] = fields.List(fields.Nested(DEVICES), required=True)
    name = "Event" + "".join(part.capitalize() for part in event_type.split("_"))
    return _Event.from_dict(declared, name=name)


SCHEMAS: dict[str, type[Schema]] = {event_type: _schema(event_type) for event_type in TYPES}
LOADERS: dict[str, Schema] = {event_type: cls() for event_type, cls in SCHEMAS.items()}
_ACCEPTORS: dict[str, Acceptor] = {
    event_type: compile_fields(FIELDS[event_type], ("type", event_type)) for event_type in ("kernel", "scope_end")
}


def is_event(item: dict[str, Any]) -> bool:
    return "type" in item and "metric" not in item and "metricType" not in item


def _triple(value: Any) -> list[int] | None:
    if type(value) is list and len(value) == 3 and all(type(v) is int and 0 <= v <= INT32_MAX for v in value):
        return value
    return None


def _fast(item: dict[str, Any], event_type: str) -> dict[str, Any] | None:
    """The hot events (kernels, scope ends) without marshmallow; None when unsure."""
    accept = _ACCEPTORS.get(event_type)
    loaded = accept(item) if accept is not None else None
    if loaded is None or loaded["ts_end_ns"] < loaded["ts_start_ns"]:
        return None
    if event_type == "kernel":
        grid, block = _triple(item.get("grid")), _triple(item.get("block"))
        if grid is None or block is None:
            return None
        loaded["grid"], loaded["block"] = grid, block
    elif "memory" in item or "devices" in item:
        return None
    return loaded


def load_event(item: dict[str, Any]) -> dict[str, Any]:
    """One event, validated under its own names; raises ValidationError."""
    event_type = item.get("type")
    if not isinstance(event_type, str) or event_type not in LOADERS:
        raise ValidationError({"type": [f"Must be one of: {', '.join(TYPES)}."]})
    loaded = _fast(item, event_type)
    return loaded if loaded is not None else LOADERS[event_type].load(item)


def own_time(event: dict[str, Any]) -> int:
    """The moment the library wrote the event: its end, for what has one."""
    return event["ts_end_ns"] if "ts_end_ns" in event else event["ts_ns"]


def snapshots(event: dict[str, Any]) -> list[dict[str, Any]] | None:
    """A scope event's device memory, in one shape: [{"device", "used_mib", "free_mib", "total_mib"}]."""
    if event.get("memory") is not None:
        return event["memory"]
    if event.get("devices") is not None:
        keep = ("used_mib", "free_mib", "total_mib")
        return [{"device": d["id"], **{k: d[k] for k in keep if k in d}} for d in event["devices"]]
    return None
