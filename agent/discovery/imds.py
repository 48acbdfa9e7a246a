"""Ask IMDSv2 which region and VPC this host is in, within one small time budget.

Plain http.client rather than botocore: discovery must never pick up proxy
settings (IMDS is link-local and must not be proxied), must report precisely
why IMDS said nothing, and must not retry past its budget on every start.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent import __version__
from agent.addresses import split_host_port
from agent.config import imds_off_because, metadata_disabled
from agent.results import ImdsInfo

log = logging.getLogger(__name__)

TOKEN_PATH = "/latest/api/token"
META = "/latest/meta-data/"
IDENTITY_DOCUMENT = "/latest/dynamic/instance-identity/document"
TOKEN_TTL_SECONDS = 60  # discovery takes well under a second; a short token limits exposure
MAX_BODY = 64 * 1024

_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d+")
_AZ = re.compile(r"[a-z0-9-]{1,64}")  # local and wavelength zones vary too much to be stricter
_ACCOUNT = re.compile(r"\d{12}")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_IDS = {
    "instance-id": re.compile(r"i-[0-9a-f]{8,17}"),
    "vpc-id": re.compile(r"vpc-[0-9a-f]{8,17}"),
    "subnet-id": re.compile(r"subnet-[0-9a-f]{8,17}"),
}


class _Failure(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _timeout_detail(address: str, budget: float) -> str:
    return (
        f"IMDS at {address} did not answer within {budget:g}s; in a container this usually "
        "means the instance's IMDS hop limit is 1 so replies never reach the container: set "
        "HttpPutResponseHopLimit to 2 (aws ec2 modify-instance-metadata-options "
        "--http-put-response-hop-limit 2); falling back to configured region and VPC CIDRs"
    )


def _status_failure(status: int, method: str, path: str) -> _Failure:
    if status == 401:
        return _Failure(
            "unauthorized",
            f"IMDS answered 401 Unauthorized to {method} {path}: the session token was refused",
        )
    if status == 403 and path == TOKEN_PATH:
        return _Failure(
            "forbidden",
            "IMDS refused a session token (403): the metadata endpoint is turned off for this "
            "instance (HttpEndpoint=disabled) or the request passed through a proxy",
        )
    if status == 403:
        return _Failure("forbidden", f"IMDS answered 403 Forbidden to {method} {path}")
    return _Failure(f"http_{status}", f"IMDS answered HTTP {status} to {method} {path}")


@dataclass
class _Session:
    """One discovery run: the endpoint, the shared deadline and the token."""

    address: str
    host: str
    port: int
    budget: float
    deadline: float
    token: str = field(default="", repr=False)

    def request(self, method: str, path: str, headers: dict[str, str]) -> str:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise _Failure("timeout", _timeout_detail(self.address, self.budget))
        headers = {"User-Agent": f"sts-agent/{__version__}", **headers}
        conn = http.client.HTTPConnection(self.host, self.port, timeout=remaining)
        try:
            conn.request(method, path, headers=headers)
            resp = conn.getresponse()
            raw = resp.read(MAX_BODY + 1)
            status = resp.status
        except TimeoutError:
            raise _Failure("timeout", _timeout_detail(self.address, self.budget)) from None
        except http.client.RemoteDisconnected:
            raise _Failure(
                "network", f"IMDS at {self.address} closed the connection without answering"
            ) from None
        except http.client.HTTPException as e:
            raise _Failure(
                "malformed", f"IMDS at {self.address} did not speak HTTP ({type(e).__name__})"
            ) from None
        except OSError as e:
            why = e.strerror or str(e) or type(e).__name__
            raise _Failure("network", f"cannot reach IMDS at {self.address}: {why}") from None
        finally:
            conn.close()
        log.debug("IMDS %s %s -> %d", method, path, status)
        if status != 200:
            raise _status_failure(status, method, path)
        if len(raw) > MAX_BODY:
            raise _Failure("malformed", f"IMDS answer to {path} is larger than {MAX_BODY} bytes")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Failure("malformed", f"IMDS answer to {path} is not UTF-8") from None

    def fetch_token(self) -> None:
        body = self.request(
            "PUT", TOKEN_PATH, {"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_SECONDS)}
        )
        if not body.strip():
            raise _Failure("malformed", "IMDS returned an empty session token")
        self.token = body.strip()

    def get(self, path: str, pattern: re.Pattern[str] | None = None) -> str:
        body = self.request("GET", META + path, {"X-aws-ec2-metadata-token": self.token})
        value = body.strip()
        if not value or (pattern is not None and not pattern.fullmatch(value)):
            raise _Failure("malformed", f"IMDS {path} has an unexpected value {value[:64]!r}")
        return value

    def account_id(self) -> str | None:
        """The account from the instance identity document; None if it has no valid one."""
        body = self.request("GET", IDENTITY_DOCUMENT, {"X-aws-ec2-metadata-token": self.token})
        try:
            doc = json.loads(body)
        except ValueError:
            return None
        account = doc.get("accountId") if isinstance(doc, dict) else None
        return account if isinstance(account, str) and _ACCOUNT.fullmatch(account) else None

    def get_optional(self, path: str) -> str:
        """Like get, but a 404 means "none" (EC2's answer for a VPC without IPv6)."""
        try:
            return self.get(path)
        except _Failure as f:
            if f.reason == "http_404":
                return ""
            raise


def parse_cidrs(text: str, version: int) -> tuple[list[str], list[str]]:
    """Strictly parse one newline-separated CIDR document -> (valid, rejected)."""
    good: list[str] = []
    bad: list[str] = []
    for line in (s.strip() for s in text.splitlines()):
        if not line:
            continue
        try:
            net = ipaddress.ip_network(line, strict=True)
        except ValueError:
            bad.append(line)
            continue
        if "/" not in line or net.version != version:
            bad.append(line)
        elif str(net) not in good:
            good.append(str(net))
    return good, bad


def discover(
    address: str = "169.254.169.254",
    timeout: float = 1.0,
    environ: Mapping[str, str] | None = None,
) -> ImdsInfo:
    """Region, AZ, instance and VPC facts from IMDSv2, or the reason there are none.

    `timeout` bounds the whole run, not each request: a host without IMDS
    must not delay start-up by a timeout per field.  Once the region is known
    the result is `available` even if later fields fail; `reason` then says
    what is missing.  Raises ValueError only for an unparseable `address`.
    """
    env = os.environ if environ is None else environ
    if metadata_disabled(env):
        return ImdsInfo(available=False, reason="disabled", detail=imds_off_because(env))
    host, port = split_host_port(address, "imds.address", 80)
    started = time.monotonic()
    session = _Session(address, host, port, timeout, started + timeout)
    facts: dict[str, str] = {}
    try:
        session.fetch_token()
        facts["region"] = session.get("placement/region", _REGION)
    except _Failure as f:
        return ImdsInfo(
            available=False,
            reason=f.reason,
            detail=f.detail,
            duration=time.monotonic() - started,
        )

    reason: str | None = None
    notes: list[str] = []
    cidrs: list[str] = []
    try:
        facts["availability_zone"] = session.get("placement/availability-zone", _AZ)
        facts["instance_id"] = session.get("instance-id", _IDS["instance-id"])
        net = f"network/interfaces/macs/{session.get('mac', _MAC)}/"
        facts["vpc_id"] = session.get(net + "vpc-id", _IDS["vpc-id"])
        facts["subnet_id"] = session.get(net + "subnet-id", _IDS["subnet-id"])
        v4, bad4 = parse_cidrs(session.get(net + "vpc-ipv4-cidr-blocks"), 4)
        v6, bad6 = parse_cidrs(session.get_optional(net + "vpc-ipv6-cidr-blocks"), 6)
        cidrs = v4 + v6
        if bad4 or bad6:
            dropped = ", ".join(repr(b[:64]) for b in bad4 + bad6)
            notes.append(f"dropped invalid VPC CIDR entries from IMDS: {dropped}")
        if not v4:
            reason = "malformed"
            notes.append("IMDS gave no valid VPC IPv4 CIDR; set vpc_cidrs in the configuration")
    except _Failure as f:
        reason = f.reason
        notes.append(f"region {facts['region']} known, but: {f.detail}")

    try:  # only sharpens the AZ comparison across accounts: its absence must not taint the rest
        zone_id = session.get_optional("placement/availability-zone-id")
        if _AZ.fullmatch(zone_id):
            facts["availability_zone_id"] = zone_id
    except _Failure as f:
        log.debug("no availability zone id from IMDS: %s", f.detail)

    try:  # only labels the host in fleet views: its absence must not taint the rest
        facts["account_id"] = session.account_id() or ""
    except _Failure as f:
        log.debug("no account id from IMDS: %s", f.detail)

    return ImdsInfo(
        available=True,
        reason=reason,
        detail="; ".join(notes),
        region=facts["region"],
        availability_zone=facts.get("availability_zone"),
        availability_zone_id=facts.get("availability_zone_id"),
        instance_id=facts.get("instance_id"),
        vpc_id=facts.get("vpc_id"),
        subnet_id=facts.get("subnet_id"),
        vpc_cidrs=tuple(cidrs),
        duration=time.monotonic() - started,
        account_id=facts.get("account_id") or None,
    )
