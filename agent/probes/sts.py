"""STS probe: a SigV4-signed GetCallerIdentity sent to one exact address.

botocore signs, but the HTTP exchange is our own: an SDK would pick one
address and hide the phases, while here every address behind a name (one per
AZ for a VPC endpoint) is dialled directly, with SNI, Host and certificate
checks all against the STS hostname, and connect / TLS / first byte / total
timed separately.  No retries: a probe reports what one attempt saw.
"""

from __future__ import annotations

import errno
import http.client
import importlib
import io
import ssl
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, Protocol

from agent.addresses import join_host_port
from agent.probes.wire import StampedSocket, TlsChannel
from agent.results import Phases, StsProbe

BODY = b"Action=GetCallerIdentity&Version=2011-06-15"
MAX_RESPONSE_BYTES = 1 << 20  # GetCallerIdentity answers are < 1 KiB; never buffer more
_NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"
#: OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH (x509_vfy.h); the ssl module does not export it.
X509_V_ERR_HOSTNAME_MISMATCH = 62
#: connect() errors that mean nothing answers at the address, as a refusal does.
_UNREACHABLE = (errno.ECONNREFUSED, errno.EHOSTUNREACH)

_CODE_REASONS = {
    "Throttling": "throttled",
    "ThrottlingException": "throttled",
    "RequestLimitExceeded": "throttled",
    "ExpiredToken": "expired_token",
    "ExpiredTokenException": "expired_token",
    "RequestExpired": "expired_token",
    "InvalidClientTokenId": "invalid_token",
    "UnrecognizedClientException": "invalid_token",
    "MissingAuthenticationToken": "invalid_token",
    "SignatureDoesNotMatch": "signature",
    "IncompleteSignature": "signature",
    "AccessDenied": "access_denied",
    "AccessDeniedException": "access_denied",
}


class SigningKeys(Protocol):
    """What SigV4Auth reads: botocore's ReadOnlyCredentials, or agent.credentials.Frozen."""

    @property
    def access_key(self) -> str: ...
    @property
    def secret_key(self) -> str: ...
    @property
    def token(self) -> str | None: ...


@dataclass(frozen=True)
class Target:
    hostname: str
    address: str
    port: int
    signing_region: str


class _Failed(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _Partial(_Failed):
    """A response that began (its first byte is timed) but did not complete."""

    def __init__(self, reason: str, message: str, first: float | None) -> None:
        super().__init__(reason, message)
        self.first = first


def load_signer() -> None:
    """Import botocore's signer now, so the first probes' `sign` times signing, not importing.

    Three probes importing it at once also hold the interpreter for tens of
    milliseconds, which lands in the other probes' phases.
    """
    for module in ("botocore.auth", "botocore.awsrequest"):
        importlib.import_module(module)


def signed_headers(target: Target, credentials: SigningKeys | None) -> dict[str, str]:
    """Headers for the request; SigV4-signed when `credentials` (botocore) are given."""
    host = target.hostname if target.port == 443 else join_host_port(target.hostname, target.port)
    headers = {
        "Host": host,
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
        "User-Agent": "sts-agent",
    }
    if credentials is None:
        return headers
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    request = AWSRequest(method="POST", url=f"https://{host}/", data=BODY, headers=headers)
    SigV4Auth(credentials, "sts", target.signing_region).add_auth(request)
    return {k: str(v) for k, v in request.headers.items()}


def default_ca_bundle() -> str:
    """The bundle botocore verifies STS against when nothing is configured.

    That is certifi's (or a distribution's patched botocore's), not the
    system store: a TLS-inspecting proxy whose CA is only in the system store
    breaks boto3, so it must break the probe too.
    """
    from botocore.httpsession import get_cert_path

    return str(get_cert_path(True))


def tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """One verifying context per CA bundle; build it once and reuse it across probes."""
    ctx = ssl.create_default_context(cafile=ca_bundle or default_ca_bundle())
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _headers(block: bytes) -> http.client.HTTPMessage:
    """Parsed header lines; http.client's limits (100 lines, 64 KiB a line) make it bad_response."""
    try:
        return http.client.parse_headers(io.BytesIO(block))
    except http.client.HTTPException as e:
        raise _Failed("bad_response", f"unparseable response headers: {_short(e)}") from None


def _read_response(chan: TlsChannel, deadline: float, sent: float) -> tuple[bytes, float, float]:
    """(response, when its first byte arrived, when the last was in) once the server closes,
    a full Content-Length arrives, or a bound is hit.

    _Partial carries the first byte's arrival when the response began but never completed.
    """
    buf = bytearray()
    need: int | None = None
    first: float | None = None
    try:
        while True:
            chunk, arrived = chan.read(deadline)
            if chunk and first is None:
                first = max(sent, arrived)
            if not chunk:
                break
            buf += chunk
            if len(buf) > MAX_RESPONSE_BYTES:
                raise _Failed("bad_response", f"response larger than {MAX_RESPONSE_BYTES} bytes")
            if need is None:
                end = buf.find(b"\r\n\r\n")
                if end >= 0:
                    headers = _headers(bytes(buf[: end + 4]).split(b"\r\n", 1)[1])
                    length = headers.get("Content-Length")
                    if length is not None and length.isdigit():
                        need = end + 4 + int(length)
            if need is not None and len(buf) >= need:
                del buf[need:]
                break
    except TimeoutError:
        raise _Partial("timeout", "no complete response before the timeout", first) from None
    except ConnectionResetError:
        raise _Partial(
            "connection_reset", "connection reset while waiting for the response", first
        ) from None
    except (ssl.SSLError, OSError) as e:
        raise _Partial(
            "connection_reset", f"connection failed mid-response: {_short(e)}", first
        ) from None
    except _Failed as f:
        raise _Partial(f.reason, str(f), first) from None
    if first is None:
        first = max(sent, chan.settled())
    return bytes(buf), first, max(first, chan.settled())


def _parse_http(raw: bytes) -> tuple[int, bytes]:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise _Failed("connection_reset", "connection closed before the response headers ended")
    status_line, _, header_block = head.partition(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise _Failed("bad_response", f"not an HTTP response: {status_line[:60]!r}")
    headers = _headers(header_block + b"\r\n\r\n")
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        body = _dechunk(body)
    return int(parts[1]), body


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, sep, rest = data.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            raise _Failed("bad_response", "invalid chunked encoding") from None
        if not sep or size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return bytes(out)


def _parse_sts(status: int, body: bytes) -> tuple[str | None, str | None, str | None, str | None]:
    """(error_code, error_message, account, arn) from an STS Query-protocol body."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        if status >= 500:
            return None, None, None, None
        raise _Failed("bad_response", f"HTTP {status} with a body that is not STS XML") from None
    code = root.findtext(f".//{_NS}Code") or root.findtext(".//Code")
    if code:
        message = root.findtext(f".//{_NS}Message") or root.findtext(".//Message")
        return code, message, None, None
    account = root.findtext(f".//{_NS}Account")
    arn = root.findtext(f".//{_NS}Arn")
    if status == 200 and not account:
        raise _Failed("bad_response", "HTTP 200 without a GetCallerIdentity result")
    return None, None, account, arn


def probe(
    target: Target,
    *,
    context: ssl.SSLContext,
    credentials: SigningKeys | None,
    timeout: float,
    signed: bool = True,
) -> StsProbe:
    """Time one GetCallerIdentity at `target.address`.  Never raises.

    `credentials` are frozen botocore credentials or None.  With `signed` but no
    credentials the request still goes out unsigned so the network path is
    measured, and the result says credentials_missing.
    """
    started_wall = time.time()
    phases: dict[str, float] = {}
    info: dict[str, Any] = {}
    t0 = time.perf_counter()

    def result(success: bool, reason: str | None, error: str | None, **kw: Any) -> StsProbe:
        phases.setdefault("total", time.perf_counter() - t0)
        return StsProbe(
            endpoint=target.hostname,
            address=target.address,
            port=target.port,
            success=success,
            phases=Phases(**phases),
            reason=reason,
            error=error,
            signed=credentials is not None,
            started=started_wall,
            **info,
            **kw,
        )

    sock: StampedSocket | None = None
    try:
        # Our own set-up (socket, SSL object) comes before the clock starts, as in Go's
        # httptrace; each phase then starts where the previous one ended (see Phases).
        sock = StampedSocket(target.address, target.port)
        chan = TlsChannel(sock, context, target.hostname)
        t0 = time.perf_counter()
        deadline = t0 + timeout
        try:
            sock.connect(deadline)
        except TimeoutError:
            raise _Failed(
                "connect_timeout", f"TCP connect to {_hostport(target)} timed out"
            ) from None
        except ConnectionRefusedError:
            raise _Failed(
                "connect_refused", f"TCP connect to {_hostport(target)} refused"
            ) from None
        except OSError as e:
            raise _Failed(
                "connect_refused" if e.errno in _UNREACHABLE else "other",
                f"TCP connect to {_hostport(target)}: {e.strerror or e}",
            ) from None
        t_conn = time.perf_counter()
        phases["connect"] = t_conn - t0

        try:
            t_tls = max(t_conn, chan.handshake(deadline))
        except ssl.SSLCertVerificationError as e:
            reason = (
                "tls_hostname_mismatch"
                if e.verify_code == X509_V_ERR_HOSTNAME_MISMATCH
                else "tls_error"
            )
            raise _Failed(reason, f"certificate rejected: {e.verify_message}") from None
        except TimeoutError:
            raise _Failed("timeout", "TLS handshake did not finish before the timeout") from None
        except ConnectionResetError:
            raise _Failed("tls_error", "connection reset during the TLS handshake") from None
        except (ssl.SSLError, OSError) as e:
            raise _Failed("tls_error", f"TLS handshake failed: {_short(e)}") from None
        phases["tls"] = t_tls - t_conn
        info["tls_version"] = chan.tls.version()
        cert = chan.tls.getpeercert()
        if cert and cert.get("notAfter"):
            info["cert_not_after"] = float(ssl.cert_time_to_seconds(str(cert["notAfter"])))

        headers = signed_headers(target, credentials if signed else None)
        headers["Content-Length"] = str(len(BODY))
        headers["Connection"] = "close"
        request = "POST / HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        data = request.encode("latin-1") + b"\r\n" + BODY
        t_send = time.perf_counter()
        phases["sign"] = t_send - t_tls
        first: float | None = None
        try:
            chan.write(data, deadline)
            raw, first, done = _read_response(chan, deadline, t_send)
        except _Partial as p:
            first = p.first  # a first byte that arrived counts even when the rest never does
            raise
        except TimeoutError:
            raise _Failed("timeout", "no complete response before the timeout") from None
        except (ssl.SSLError, OSError) as e:
            raise _Failed("connection_reset", f"connection failed sending: {_short(e)}") from None
        finally:
            if first is not None:
                phases["ttfb"] = first - t_send
        phases["transfer"] = done - first
        phases["total"] = done - t0
        status, body = _parse_http(raw)
        info["http_status"] = status
        try:
            code, message, account, arn = _parse_sts(status, body)
        except _Failed:
            if not (signed and credentials is None):
                raise
            # Unsigned by necessity: the body cannot be judged, but the path was measured.
            code = message = account = arn = None
    except _Failed as f:
        return result(False, f.reason, str(f))
    except Exception as e:  # the docstring's promise: a probe is a result, never a traceback
        return result(False, "other", f"{type(e).__name__}: {_short(e)}")
    finally:
        if sock is not None:
            sock.close()

    if signed and credentials is None:
        return result(
            False,
            "credentials_missing",
            "no AWS credentials found; the request went out unsigned",
            sts_error_code=code,
        )
    if status >= 500:
        return result(
            False, "http_5xx", f"HTTP {status}" + (f" {code}" if code else ""), sts_error_code=code
        )
    if code:
        if not signed:
            # Unsigned on purpose: any well-formed STS answer proves the path works.
            return result(True, None, None, sts_error_code=code)
        reason = _CODE_REASONS.get(code, "other")
        return result(False, reason, f"STS {code}: {message or ''}".strip(), sts_error_code=code)
    if status != 200:
        return result(False, "other", f"HTTP {status}")
    return result(True, None, None, account=account, arn=arn)


def _hostport(t: Target) -> str:
    return join_host_port(t.address, t.port)


def _short(e: BaseException) -> str:
    text = getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e) or type(e).__name__
    return str(text)[:200]
