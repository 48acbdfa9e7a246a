"""moto's STS behind real TLS on a loopback address, with a certificate for the STS names.

The server runs in a child process: importing moto patches botocore's global handler list,
and the tests' own botocore must stay untouched so its requests really cross the socket.
The certificate comes from a throwaway `trustme` CA; callers pass `ca_path` to whatever
verifies the server, just as the agent is given a CA bundle.

moto answers GetCallerIdentity for any access key with account 123456789012 (or
`account_id`) and the ARN `arn:aws:sts::<account>:user/moto`. With `enforce_auth`, moto
checks each request against its own IAM, so an unknown access key gets a 403
InvalidClientTokenId. Its error body nests the error as
`<ErrorResponse><Errors><Error>`, unlike real STS's `<ErrorResponse><Error>`; other STS
error codes, and the exact real shape, need the project's fault STS server.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import selectors
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import trustme

from agent.lifecycle import Service

STS_REGIONS = (
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ca-central-1",
    "sa-east-1",
    "eu-central-1",
    "eu-north-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "ap-northeast-1",
    "ap-south-1",
    "ap-southeast-1",
    "ap-southeast-2",
)

DEFAULT_HOSTNAMES: tuple[str, ...] = (
    "sts.amazonaws.com",
    *(f"sts.{region}.amazonaws.com" for region in STS_REGIONS),
)
"""The global STS name and the regional names of the legacy-endpoint regions."""


def _check_host(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError(f"host: {host!r} is not an IP address") from None


class MotoStsTls(Service):
    """A moto server speaking HTTPS on `host:port` (port 0 picks a free one).

    Several instances can run at once on different loopback addresses; pass one
    instance's `ca` to the others so a single CA bundle trusts them all.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        hostnames: Sequence[str] = DEFAULT_HOSTNAMES,
        *,
        ca: trustme.CA | None = None,
        ip_sans: bool = True,
        account_id: str | None = None,
        enforce_auth: bool = False,
        start_timeout: float = 60.0,
    ) -> None:
        self._host = _check_host(host)
        if not 0 <= port < 65536:
            raise ValueError(f"port: {port!r} is out of range")
        if isinstance(hostnames, str):
            raise ValueError("hostnames: expected a list of names, not a string")
        if not hostnames and not ip_sans:
            raise ValueError("hostnames: empty, and ip_sans is off: the certificate names nothing")
        if account_id is not None and not (account_id.isdigit() and len(account_id) == 12):
            raise ValueError(f"account_id: {account_id!r} is not a 12-digit AWS account id")
        self._requested_port = port
        self._port = 0
        self._hostnames = tuple(hostnames)
        self.ca = ca or trustme.CA()
        self._ip_sans = ip_sans
        self.account_id = account_id or "123456789012"
        self._enforce_auth = enforce_auth
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("moto STS server is not running")
        return self._port

    @property
    def hostnames(self) -> tuple[str, ...]:
        return self._hostnames

    @property
    def _dir(self) -> Path:
        if self._tmp is None:
            raise RuntimeError("moto STS server is not running")
        return Path(self._tmp.name)

    @property
    def ca_path(self) -> Path:
        """PEM of the issuing CA: the CA bundle a client must trust."""
        return self._dir / "ca.pem"

    @property
    def log_path(self) -> Path:
        return self._dir / "server.log"

    @property
    def url(self) -> str:
        """https URL by IP address; valid for verification only with `ip_sans`."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"https://{host}:{self.port}"

    def url_for(self, hostname: str) -> str:
        """https URL by STS name, for clients whose DNS sends that name to this server."""
        return f"https://{hostname}:{self.port}"

    def start(self) -> MotoStsTls:
        if self._proc is not None:
            raise RuntimeError("moto STS server already started")
        self._tmp = tempfile.TemporaryDirectory(prefix="moto-sts-")
        try:
            identities = [*self._hostnames, *([self._host] if self._ip_sans else [])]
            leaf = self.ca.issue_cert(*identities)
            self.ca.cert_pem.write_to_path(str(self.ca_path))
            pem = self._dir / "server.pem"
            leaf.private_key_and_cert_chain_pem.write_to_path(str(pem))
            pem.chmod(0o600)
            env = dict(os.environ)
            env["MOTO_ACCOUNT_ID"] = self.account_id
            if self._enforce_auth:
                env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
            argv = [sys.executable, "-P", __file__, self._host, str(self._requested_port), str(pem)]
            with open(self.log_path, "wb") as log:
                self._proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=env
                )
            self._port = self._read_port(self._proc)
            return self
        except BaseException:
            self.stop()
            raise

    def _read_port(self, proc: subprocess.Popen[bytes]) -> int:
        assert proc.stdout is not None
        deadline = time.monotonic() + self._start_timeout
        line = b""
        with proc.stdout, selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n") and time.monotonic() < deadline:
                if sel.select(timeout=0.1):
                    chunk = os.read(proc.stdout.fileno(), 256)
                    if not chunk:
                        break
                    line += chunk
        if not line.endswith(b"\n"):
            proc.poll()
            raise RuntimeError(f"moto STS server did not start: {self._log_tail()}")
        port = json.loads(line)["port"]
        if not isinstance(port, int):
            raise RuntimeError(f"moto STS server reported a bad port: {line!r}")
        return port

    def _log_tail(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip()
        except OSError:
            return "(no output)"
        return " | ".join(text.splitlines()[-3:]) or "(no output)"

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        finally:
            self._port = 0
            tmp, self._tmp = self._tmp, None
            if tmp is not None:
                tmp.cleanup()


def _serve(argv: Sequence[str]) -> None:
    """Child side: bind, warm the STS backend, report the port on stdout, then serve."""
    parser = argparse.ArgumentParser(description="moto STS over TLS")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("pem", help="private key and certificate chain")
    args = parser.parse_args(argv)
    ready = sys.stdout
    sys.stdout = sys.stderr  # moto prints; stdout carries only the ready line
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server
    from werkzeug.test import Client

    app = DomainDispatcherApplication(create_backend_app)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.pem)
    server = make_server(
        args.host,
        args.port,
        app,
        threaded=True,
        request_handler=MotoRequestHandler,
        ssl_context=ctx,
    )
    # Build the STS app now so the first real request is not the slow one.
    scope = "Credential=AKIDWARMUP/20240101/us-east-1/sts/aws4_request"
    Client(app).post(
        "/",
        data="Action=GetCallerIdentity&Version=2011-06-15",
        content_type="application/x-www-form-urlencoded",
        headers={"Authorization": f"AWS4-HMAC-SHA256 {scope}, SignedHeaders=host, Signature=0"},
    )
    ready.write(json.dumps({"port": server.server_port}) + "\n")
    ready.flush()
    os.dup2(sys.stderr.fileno(), ready.fileno())  # the parent stops reading; keep fd 1 valid
    server.serve_forever()


if __name__ == "__main__":
    _serve(sys.argv[1:])
