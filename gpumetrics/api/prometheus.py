"""GET /prometheus: the fleet now, in dcgm-exporter's names, and the service's own metrics.

Why dcgm-exporter's names: dashboards and alerts written for NVIDIA's exporter (Grafana's
dashboard 12239 and its many copies) then work on the fleet's crawler data as they are.
Each GPU field's newest value is read at scrape time from the `latest` table, a row per
GPU and kind: one query folds them into a row per GPU, another reads the processes, each
joined to gpus by primary key, never a probe into the records. So every gunicorn worker
answers alike and nothing is kept in process memory. The labels are the
exporter's (`gpu`, `UUID`, `device`, `modelName`, `Hostname`) plus `instance` set to the
host, so that with `honor_labels: true` a dashboard picks a node by `instance`. A label
the service does not know is left out, as the exporter leaves out `Hostname`: the local
host's GPUs have neither `Hostname` nor `instance` (Prometheus then sets `instance` to the
service it scraped), a GPU known only by its UUID has no `gpu` nor `device`, and a
process the crawler could not tie to a GPU has none of the GPU's labels.

Like the exporter, the answer has no timestamps. A series whose newest record is older
than STALE_AFTER_SEC is left out (so is every series of a GPU silent that long), and
Prometheus marks it stale, instead of repeating a value the GPU no longer reports.
The answer is text format 0.0.4, the exporter's and Prometheus 2's, named explicitly:
prometheus-client's default content type says version 1.0.0 since 0.23.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flask import Response, request
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from marshmallow import ValidationError
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4
from sqlalchemy import Connection, Select, case, func, select

from .. import observe, times
from ..db.tables import gpus, latest
from ..http.auth import requires
from ..state import get_db, get_settings
from .schemas import Query

blp = Blueprint(
    "prometheus", __name__, url_prefix="/prometheus", description="The fleet and the service, for Prometheus."
)

PROCESS_NAME_MAX = 128  # a label, not the crawler's free text: long values cost every series


@dataclass(frozen=True)
class DcgmField:
    """One dcgm-exporter gauge: its name, the exporter's HELP text, and where its value is stored."""

    name: str
    help: str
    metric: str  # the kind whose newest record holds it
    columns: tuple[str, ...]  # the first of these that is not null


# In the order of dcgm-exporter's etc/default-counters.csv; the HELP texts are its own,
# except FB_TOTAL's, which the exporter does not define: ours, in its style.
DCGM_FIELDS = (
    DcgmField("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).", "clocks", ("sm_mhz", "graphics_mhz")),
    DcgmField("DCGM_FI_DEV_MEM_CLOCK", "Memory clock frequency (in MHz).", "clocks", ("memory_mhz",)),
    DcgmField("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", "temperature", ("celsius",)),
    DcgmField("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", "power", ("watts",)),
    DcgmField("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", "utilization", ("gpu_percent",)),
    DcgmField("DCGM_FI_DEV_MEM_COPY_UTIL", "Memory utilization (in %).", "utilization", ("memory_percent",)),
    DcgmField("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", "memory", ("free_mib",)),
    DcgmField("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", "memory", ("used_mib",)),
    DcgmField("DCGM_FI_DEV_FB_TOTAL", "Framebuffer memory total (in MiB).", "memory", ("total_mib",)),
)
PROCESS_GAUGE = "gpumetrics_process_used_mib"
PROCESS_HELP = "Device memory used by one process on the GPU (in MiB), with its pid and name."

EXAMPLE = """\
# HELP DCGM_FI_DEV_GPU_TEMP GPU temperature (in C).
# TYPE DCGM_FI_DEV_GPU_TEMP gauge
DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-abc-uuid",device="nvidia0",modelName="NVIDIA A100-PCIE-40GB",\
Hostname="trainer-01",instance="trainer-01"} 62.0
# HELP gpumetrics_process_used_mib Device memory used by one process on the GPU (in MiB), with its pid and name.
# TYPE gpumetrics_process_used_mib gauge
gpumetrics_process_used_mib{gpu="0",UUID="GPU-abc-uuid",device="nvidia0",modelName="NVIDIA A100-PCIE-40GB",\
Hostname="trainer-01",instance="trainer-01",pid="1234",process_name="python"} 2048.0
# HELP gpumetrics_records_stored_total Records stored, by where they came from.
# TYPE gpumetrics_records_stored_total counter
gpumetrics_records_stored_total{source="http"} 480000.0
"""
EXPOSITION = {
    "description": "Prometheus text format 0.0.4: the newest value of every GPU field that is not stale, "
    "under dcgm-exporter's names and labels, and the service's own metrics (gpumetrics_*).",
    "content": {CONTENT_TYPE_PLAIN_0_0_4: {"schema": {"type": "string"}, "example": EXAMPLE}},
}


class ScrapeQuery(Query):
    """/prometheus takes no parameter; one given is a 422, as on every read."""

    def _accepted(self) -> str:
        return "none"


def _newest(field: DcgmField) -> Any:
    """The field's value in its kind's newest row of a GPU, as a column of one row per GPU."""
    columns = [latest.c[column] for column in field.columns]
    value = func.coalesce(*columns) if len(columns) > 1 else columns[0]
    return func.max(case((latest.c.metric == field.metric, value))).label(field.name)


def gpu_query(since: int) -> Select:
    """One row per GPU with a series not older than `since`: its labels, then each DCGM field (or null).

    latest holds one row per GPU and kind; they are folded into one row per GPU in the
    database, in latest's primary-key order, and joined to the GPU by its primary key.
    """
    newest = (
        select(latest.c.gpu_id, *(_newest(field) for field in DCGM_FIELDS))
        .where(latest.c.ts >= since, latest.c.metric != "process")
        .group_by(latest.c.gpu_id)
        .subquery()
    )
    return (
        select(gpus.c.host, gpus.c.gpu_index, gpus.c.uuid, gpus.c.name, *(newest.c[f.name] for f in DCGM_FIELDS))
        .join(newest, newest.c.gpu_id == gpus.c.id)
        .order_by(newest.c.gpu_id)
    )


def process_query(since: int) -> Select:
    """Every current process (latest keeps those of each GPU's newest process time) not older than `since`."""
    return (
        select(
            gpus.c.host,
            gpus.c.gpu_index,
            gpus.c.uuid,
            gpus.c.name,
            latest.c.pid_key,
            latest.c.process_name,
            latest.c.used_mib,
        )
        .join(gpus, gpus.c.id == latest.c.gpu_id)
        .where(latest.c.metric == "process", latest.c.ts >= since)
        .order_by(latest.c.gpu_id, latest.c.pid_key)
    )


def read_fleet(conn: Connection, since: int) -> tuple[Sequence[Any], Sequence[Any]]:
    """The GPUs' rows and the processes' rows of a scrape."""
    return conn.execute(gpu_query(since)).all(), conn.execute(process_query(since)).all()


def escape(value: str) -> str:
    """A label value as the text format writes it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def gpu_labels(host: str, index: int | None, uuid: str | None, name: str | None) -> str:
    """dcgm-exporter's labels of one GPU, in its order, and `instance`; those the service does not know are left out."""
    known = [
        ("gpu", None if index is None else str(index)),
        ("UUID", uuid),
        ("device", None if index is None else f"nvidia{index}"),
        ("modelName", name),
        ("Hostname", host),
        ("instance", host),
    ]
    return ",".join(f'{label}="{escape(value)}"' for label, value in known if value)


def render_fleet(gpu_rows: Sequence[Any], process_rows: Sequence[Any]) -> str:
    """The rows of `read_fleet` as text format 0.0.4: a gauge family per DCGM field, then the processes'.

    Written here rather than by prometheus-client's generic writer, which takes 15 µs a
    sample: a scrape of 1,000 GPUs has some 11,000 samples, and its target is 100 ms.
    """
    labels = [gpu_labels(*row[:4]) for row in gpu_rows]
    of_gpu = {tuple(row[:4]): text for row, text in zip(gpu_rows, labels, strict=True)}
    out = []
    for position, field in enumerate(DCGM_FIELDS, start=4):
        out.append(f"# HELP {field.name} {field.help}\n# TYPE {field.name} gauge\n")
        out += [
            f"{field.name}{{{text}}} {float(row[position])!r}\n"
            for text, row in zip(labels, gpu_rows, strict=True)
            if row[position] is not None
        ]
    out.append(f"# HELP {PROCESS_GAUGE} {PROCESS_HELP}\n# TYPE {PROCESS_GAUGE} gauge\n")
    for row in process_rows:
        gpu = of_gpu.get(tuple(row[:4]))
        if gpu is None:  # a GPU with processes only, or processes tied to no GPU
            gpu = of_gpu[tuple(row[:4])] = gpu_labels(*row[:4])
        out.append(f"{PROCESS_GAUGE}{{{_process_labels(gpu, row)}}} {float(row.used_mib)!r}\n")
    return "".join(out)


def _process_labels(gpu: str, row: Any) -> str:
    own = f'pid="{row.pid_key}"'
    if row.process_name:
        own += f',process_name="{escape(row.process_name[:PROCESS_NAME_MAX])}"'
    return f"{gpu},{own}" if gpu else own


@blp.route("")
class Prometheus(MethodView):
    @requires("read")
    @blp.doc(responses={"200": EXPOSITION})
    @blp.alt_response(422, description="A query parameter was given: /prometheus takes none.")
    def get(self):
        """The newest value of every GPU field under dcgm-exporter's names, and the service's own metrics."""
        try:  # not @blp.arguments: an operation without parameters documents none, not an empty list
            ScrapeQuery().load(request.args)
        except ValidationError as error:
            abort(422, errors={"query": error.messages})
        settings = get_settings()
        since = times.now_micros() - int(settings.stale_after_sec * 1_000_000)
        with get_db().reading() as conn:
            gpu_rows, process_rows = read_fleet(conn, since)
            state = observe.read_state(conn, settings)
        body = render_fleet(gpu_rows, process_rows).encode() + observe.exposition(state)
        return Response(body, content_type=CONTENT_TYPE_PLAIN_0_0_4)
