"""The listener's TLS context, rebuilt when a certificate file changes: rotation, no restart."""

from __future__ import annotations

import logging
import os
import ssl
import threading

from agent.surfaces.webconfig import WebConfig, WebConfigError

log = logging.getLogger("agent.http")


class TLSContexts:
    """Serves the current SSL context, rebuilding it when a certificate file changes.

    exporter-toolkit rereads certificates on every handshake so rotation needs no
    restart; checking the files' stat per connection gives the same result cheaply.
    A broken rotation keeps the last good context and logs why.
    """

    def __init__(self, config: WebConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()
        ctx = config.ssl_context()
        assert ctx is not None
        self._ctx = ctx

    def _file_stamp(self) -> tuple[tuple[int, int, int], ...]:
        assert self._config.tls is not None
        stamps = []
        for path in self._config.tls.files:
            try:
                st = os.stat(path)
                stamps.append((st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError:
                stamps.append((0, 0, 0))
        return tuple(stamps)

    def get(self) -> ssl.SSLContext:
        with self._lock:
            stamp = self._file_stamp()
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    fresh = self._config.ssl_context()
                except WebConfigError as exc:
                    log.warning("keeping the previous TLS certificate: %s", exc)
                else:
                    assert fresh is not None
                    self._ctx = fresh
                    log.info("reloaded TLS certificate files from %s", self._config.path)
            return self._ctx
