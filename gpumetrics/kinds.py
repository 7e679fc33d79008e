"""The registry of metric kinds: the one place that says which metrics exist, and every limit.

Validation (records/), storage columns (db/tables.py), the OpenAPI document and the
query parameters are all derived from KINDS and IDENTITY, so adding a kind or a field
is one entry here (plus a migration for the new column).
"""

from __future__ import annotations

from dataclasses import dataclass

# No GPU reading comes near it; it keeps sums and averages finite on both databases.
MAGNITUDE = 1e15
INT64_MAX = 2**63 - 1  # what both databases store in a BIGINT
INT32_MAX = 2**31 - 1  # CUDA's launch dimensions, NVML's indexes
GPU_INDEX_MAX = INT32_MAX
NAME_MAX = 255  # host names, UUIDs, product names
TEXT_MAX = 65_536  # the crawler's free text: kernel names joined over a window, tags


@dataclass(frozen=True)
class Field:
    """One measured value of a kind, as the API names it and the database stores it."""

    name: str
    column: str
    type: str  # "number", "integer", "string" or "timestamp"
    unit: str
    description: str
    minimum: float | None = None
    maximum: float | None = None
    required: bool = True
    max_length: int | None = None
    identifies: bool = False  # part of the record's identity (pid): not a measurement
    min_length: int = 0
    cut: bool = False  # longer text is stored cut to max_length, with a warning, not rejected

    @property
    def low(self) -> float:
        """The smallest value accepted: the field's own bound, or -MAGNITUDE."""
        return -MAGNITUDE if self.minimum is None else self.minimum

    @property
    def high(self) -> float:
        return MAGNITUDE if self.maximum is None else self.maximum

    @property
    def measured(self) -> bool:
        """A number worth aggregating: not text, not an identifier."""
        return self.type in ("number", "integer") and not self.identifies


@dataclass(frozen=True)
class Kind:
    """A metric kind: the value of a record's `metric` and the fields it carries."""

    name: str
    description: str
    fields: tuple[Field, ...]

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)


def _mib(name: str, column: str, what: str, required: bool = True) -> Field:
    return Field(name, column, "number", "MiB", what, minimum=0, required=required)


def _percent(name: str, column: str, what: str) -> Field:
    return Field(name, column, "number", "%", what, minimum=0, maximum=100)


def _mhz(name: str, column: str, what: str, required: bool = True) -> Field:
    return Field(name, column, "number", "MHz", what, minimum=0, required=required)


def _name(name: str, column: str, what: str) -> Field:
    return Field(name, column, "string", "", what, required=False, max_length=NAME_MAX)


def _text(name: str, column: str, what: str) -> Field:
    return Field(name, column, "string", "", what, required=False, max_length=TEXT_MAX, cut=True)


# The fields every canonical record has besides those of its kind.
IDENTITY: tuple[Field, ...] = (
    Field("timestamp", "ts", "timestamp", "", "End of the sample, ISO 8601; without an offset it is UTC."),
    Field(
        "gpuIndex", "gpu_index", "integer", "", "NVML index of the GPU on its host.", minimum=0, maximum=GPU_INDEX_MAX
    ),
    _name("host", "host", "Host the GPU is in; records without one belong to the local host."),
    _name("uuid", "uuid", "NVML UUID of the GPU."),
    _name("name", "name", "Product name of the GPU."),
)


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(
            "memory",
            "Device memory of the GPU.",
            (
                _mib("totalMiB", "total_mib", "Total device memory."),
                _mib("usedMiB", "used_mib", "Device memory in use."),
                _mib("freeMiB", "free_mib", "Device memory free."),
            ),
        ),
        Kind(
            "utilization",
            "Share of the sample period the GPU and its memory were busy.",
            (
                _percent("gpuPercent", "gpu_percent", "GPU (SM) utilization."),
                _percent("memoryPercent", "memory_percent", "Memory controller utilization."),
            ),
        ),
        Kind(
            "temperature",
            "GPU core temperature.",
            (Field("celsius", "celsius", "number", "°C", "Core temperature.", minimum=-273.15),),
        ),
        Kind(
            "power",
            "Power draw of the board.",
            (Field("watts", "watts", "number", "W", "Power draw.", minimum=0),),
        ),
        Kind(
            "clocks",
            "Current clock frequencies.",
            (
                _mhz("graphicsMHz", "graphics_mhz", "Graphics clock."),
                _mhz("memoryMHz", "memory_mhz", "Memory clock."),
                _mhz("smMHz", "sm_mhz", "SM clock (sent by some crawler builds).", False),
            ),
        ),
        Kind(
            "process",
            "Device memory held by one process on the GPU.",
            (
                Field("pid", "pid", "integer", "", "Process id on its host.", minimum=0, identifies=True),
                _mib("usedMiB", "used_mib", "Device memory used by the process."),
                _text("processName", "process_name", "Executable name of the process."),
                _text("appName", "app_name", "Application name reported by the crawler."),
                _text("kernelName", "kernel_name", "CUDA kernels seen in the window."),
                _text("tag", "tag", "Free-form tag set by the workload."),
                Field(
                    "scopeMemDeltaMiB",
                    "scope_mem_delta_mib",
                    "integer",
                    "MiB",
                    "Change of the process's memory over the crawler's scope.",
                    required=False,
                ),
            ),
        ),
    )
}

# Storage columns, in a stable order: a field name shared by two kinds (usedMiB) shares
# its column, so one name always means one column and one type.
COLUMNS: dict[str, Field] = {}
for _kind in KINDS.values():
    for _field in _kind.fields:
        known = COLUMNS.get(_field.column)
        if known is not None and (known.name, known.type) != (_field.name, _field.type):
            raise AssertionError(f"column {_field.column} means two things")
        COLUMNS.setdefault(_field.column, _field)

# Every field name, with the kinds that carry it: for `field=` in queries.
FIELD_KINDS: dict[str, tuple[str, ...]] = {}
for _kind in KINDS.values():
    for _field in _kind.fields:
        FIELD_KINDS[_field.name] = (*FIELD_KINDS.get(_field.name, ()), _kind.name)

MEASURED_FIELDS: tuple[str, ...] = tuple(
    name for name, kinds in FIELD_KINDS.items() if KINDS[kinds[0]].field(name).measured
)
