"""The ORCA messages (gRFC A51), built from their descriptors: ``xds.data.orca.v3.OrcaLoadReport``, what a server
reports of its load, and ``xds.service.orca.v3.OrcaLoadReportRequest``, what a client asks of the out-of-band
``xds.service.orca.v3.OpenRcaService``.

Why not a package: the one that has them, xds-protos, is 4.3 MB of 1 800 modules of Envoy's API and requires
protobuf 6.31 or newer (its generated code checks the runtime's version), while this library's floor is 4.25 and its
runtime depends on grpcio and protobuf alone. Two messages and a service are declared here as their ``.proto`` files
declare them (github.com/cncf/xds, ``xds/data/orca/v3/orca_load_report.proto`` and ``xds/service/orca/v3/orca.proto``,
without the validation annotations), in a descriptor pool of their own: the wire format is the same, and an
application that imports xds-protos too meets no clash of names.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, duration_pb2, message_factory

from ..engine._load import LoadReport, allowed

__all__ = [
    "LOAD_REPORT_METADATA_KEY",
    "ORCA_METHOD",
    "ORCA_SERVICE",
    "OrcaLoadReport",
    "OrcaLoadReportRequest",
    "load_report",
    "message_of",
    "report_of",
    "serialized",
]

LOAD_REPORT_METADATA_KEY = "endpoint-load-metrics-bin"
"""The trailer a call's load report travels in, serialized (A51)."""
ORCA_SERVICE = "xds.service.orca.v3.OpenRcaService"
ORCA_METHOD = f"/{ORCA_SERVICE}/StreamCoreMetrics"

_Field = descriptor_pb2.FieldDescriptorProto
_DOUBLE, _UINT64, _STRING, _MESSAGE = _Field.TYPE_DOUBLE, _Field.TYPE_UINT64, _Field.TYPE_STRING, _Field.TYPE_MESSAGE
_OPTIONAL, _REPEATED = _Field.LABEL_OPTIONAL, _Field.LABEL_REPEATED


def _field(message: Any, name: str, number: int, kind: int, label: int = _OPTIONAL, type_name: str = "") -> Any:
    field = message.field.add(name=name, number=number, type=kind, label=label)
    if type_name:
        field.type_name = type_name
    return field


def _map(message: Any, name: str, entry: str, number: int) -> None:
    """A ``map<string, double>`` field: a repeated entry message, as protoc makes one."""
    nested = message.nested_type.add(name=entry)
    nested.options.map_entry = True
    _field(nested, "key", 1, _STRING)
    _field(nested, "value", 2, _DOUBLE)
    _field(message, name, number, _MESSAGE, _REPEATED, f".xds.data.orca.v3.OrcaLoadReport.{entry}")


def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(duration_pb2.DESCRIPTOR.serialized_pb))

    report_file = descriptor_pb2.FileDescriptorProto(
        name="xds/data/orca/v3/orca_load_report.proto", package="xds.data.orca.v3", syntax="proto3"
    )
    report = report_file.message_type.add(name="OrcaLoadReport")
    _field(report, "cpu_utilization", 1, _DOUBLE)
    _field(report, "mem_utilization", 2, _DOUBLE)
    _field(report, "rps", 3, _UINT64).options.deprecated = True
    _map(report, "request_cost", "RequestCostEntry", 4)
    _map(report, "utilization", "UtilizationEntry", 5)
    _field(report, "rps_fractional", 6, _DOUBLE)
    _field(report, "eps", 7, _DOUBLE)
    _map(report, "named_metrics", "NamedMetricsEntry", 8)
    _field(report, "application_utilization", 9, _DOUBLE)
    pool.Add(report_file)

    service_file = descriptor_pb2.FileDescriptorProto(
        name="xds/service/orca/v3/orca.proto",
        package="xds.service.orca.v3",
        syntax="proto3",
        dependency=["xds/data/orca/v3/orca_load_report.proto", "google/protobuf/duration.proto"],
    )
    request = service_file.message_type.add(name="OrcaLoadReportRequest")
    _field(request, "report_interval", 1, _MESSAGE, type_name=".google.protobuf.Duration")
    _field(request, "request_cost_names", 2, _STRING, _REPEATED)
    service = service_file.service.add(name="OpenRcaService")
    service.method.add(
        name="StreamCoreMetrics",
        input_type=".xds.service.orca.v3.OrcaLoadReportRequest",
        output_type=".xds.data.orca.v3.OrcaLoadReport",
        server_streaming=True,
    )
    pool.Add(service_file)
    return pool


_POOL = _pool()
OrcaLoadReport: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("xds.data.orca.v3.OrcaLoadReport"))
"""``xds.data.orca.v3.OrcaLoadReport``: a server's load."""
OrcaLoadReportRequest: Any = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName("xds.service.orca.v3.OrcaLoadReportRequest")
)
"""``xds.service.orca.v3.OrcaLoadReportRequest``: how often a client wants the out-of-band reports."""


def serialized(report: LoadReport) -> bytes:
    """``report`` as a serialized ``OrcaLoadReport``."""
    return bytes(message_of(report).SerializeToString())


def message_of(report: LoadReport) -> Any:
    """``report`` as an ``OrcaLoadReport``."""
    message = OrcaLoadReport()
    for field, name in _SCALARS:
        value = getattr(report, name)
        if value:
            setattr(message, field, value)
    for name in _MAPS:
        values = getattr(report, name)
        if values:
            getattr(message, name).update(values)
    return message


_SCALARS = (
    ("cpu_utilization", "cpu_utilization"),
    ("mem_utilization", "memory_utilization"),
    ("application_utilization", "application_utilization"),
    ("rps_fractional", "qps"),
    ("eps", "eps"),
)
_MAPS = ("utilization", "request_cost", "named_metrics")


def load_report(trailing_metadata: Any) -> LoadReport | None:
    """The load report a call's trailers carry (``endpoint-load-metrics-bin``: pairs, or a mapping), or None when
    they carry none or one that cannot be decoded. Zero values read as not reported, as proto3 cannot tell them
    apart; values that break the rules of :mod:`interceptors.engine._load` are left out."""
    pairs = trailing_metadata.items() if isinstance(trailing_metadata, Mapping) else trailing_metadata or ()
    data = next((value for key, value in pairs if key == LOAD_REPORT_METADATA_KEY), None)
    if not isinstance(data, bytes):
        return None
    try:
        message = OrcaLoadReport.FromString(data)
    except Exception:  # a peer's garbage is no report
        return None
    return report_of(message)


def report_of(message: Any) -> LoadReport:
    """An ``OrcaLoadReport`` as a :class:`LoadReport`: zero values read as not reported, and values or names that
    break the rules of :mod:`interceptors.engine._load` (a peer's NaN, say) are left out."""
    scalars: dict[str, Any] = {name: allowed(name, getattr(message, field)) or None for field, name in _SCALARS}
    if not scalars["qps"] and message.rps:
        scalars["qps"] = allowed("qps", message.rps)
    maps: dict[str, Any] = {
        name: MappingProxyType(
            {
                key: number
                for key, value in getattr(message, name).items()
                if (number := allowed(name, value)) is not None
            }
        )
        for name in _MAPS
    }
    return LoadReport(**scalars, **maps)
