"""A Prometheus remote_write receiver on loopback: snappy-framed protobuf WriteRequests.

Decoding uses the real libraries: cramjam's snappy (block format, as the
remote-write spec requires) and protobuf, with the four messages of
prometheus/prompb/types.proto that carry samples built as descriptors at
import (fields the receiver does not declare, like metadata, are skipped).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cramjam
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

MAX_BODY = 16 * 1024 * 1024


def _write_request_class() -> Any:
    f = descriptor_pb2.FileDescriptorProto(name="remote_write_test.proto", package="prometheus")
    f.syntax = "proto3"
    opt, rep = (
        descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
    )
    t = descriptor_pb2.FieldDescriptorProto
    shapes: dict[str, list[tuple[str, int, int, int, str | None]]] = {
        "Label": [("name", 1, t.TYPE_STRING, opt, None), ("value", 2, t.TYPE_STRING, opt, None)],
        "Sample": [
            ("value", 1, t.TYPE_DOUBLE, opt, None),
            ("timestamp", 2, t.TYPE_INT64, opt, None),
        ],
        "TimeSeries": [
            ("labels", 1, t.TYPE_MESSAGE, rep, ".prometheus.Label"),
            ("samples", 2, t.TYPE_MESSAGE, rep, ".prometheus.Sample"),
        ],
        "WriteRequest": [("timeseries", 1, t.TYPE_MESSAGE, rep, ".prometheus.TimeSeries")],
    }
    for name, fields in shapes.items():
        m = f.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            fd = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                fd.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("prometheus.WriteRequest"))


WriteRequest = _write_request_class()


@dataclass
class Received:
    """Samples as (labels, value, timestamp ms), and what each request's headers said."""

    samples: list[tuple[dict[str, str], float, int]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def names(self) -> set[str]:
        with self.lock:
            return {labels.get("__name__", "") for labels, _, _ in self.samples}

    def series(self, name: str) -> list[dict[str, str]]:
        with self.lock:
            return [labels for labels, _, _ in self.samples if labels.get("__name__") == name]


def decode(body: bytes) -> list[tuple[dict[str, str], float, int]]:
    req = WriteRequest()
    req.ParseFromString(bytes(cramjam.snappy.decompress_raw(body)))
    return [
        ({lb.name: lb.value for lb in ts.labels}, s.value, s.timestamp)
        for ts in req.timeseries
        for s in ts.samples
    ]


@contextmanager
def remote_write_receiver(path: str = "/api/v1/write") -> Iterator[tuple[str, Received]]:
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # a sender that stalls mid-request is dropped

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if self.path != path or not 0 < length <= MAX_BODY:
                self.send_error(404 if self.path != path else 413)
                return
            try:
                samples = decode(self.rfile.read(length))
            except Exception as e:  # a malformed body is the sender's fault: 400, as the spec says
                self.send_error(400, str(e)[:200])
                return
            with received.lock:
                received.samples.extend(samples)
                received.headers.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{path}", received
    finally:
        server.shutdown()
        server.server_close()
