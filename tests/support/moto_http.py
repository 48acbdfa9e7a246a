"""moto's whole-AWS server over plain HTTP on loopback, for EC2 and S3 API tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from testbed.require import missing


@contextmanager
def moto_http_server() -> Iterator[str]:
    """Yields the endpoint URL; point boto3 at it with fake credentials."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        missing("moto[server]")
        raise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
