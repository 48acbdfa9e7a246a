"""Streams CloudTrail records out of local files, directory trees, S3 prefixes and
CloudWatch Logs groups (`logs://GROUP`, read by agent.audit.cloudtrail_logs).

CloudTrail delivers one `{"Records": [...]}` document per file, and a busy account's files
reach hundreds of megabytes. Records are therefore decoded one at a time from a small
sliding buffer, so memory stays flat whatever the file size. Exports that write one
event per line, `aws cloudtrail lookup-events` output (`Events[].CloudTrailEvent`) and
EventBridge events (`detail`) are read by the same code path.

Hostile files are bounded, each failure a one-line error for that file alone: one JSON
value (a record) may span at most MAX_VALUE characters, far above any real CloudTrail
event, and decoding it costs at most a few dozen times that; fields of a top-level object
that is not a `Records` document are kept only up to MAX_VALUE characters in all; nesting
deeper than the decoder's recursion limit is an error, not a crash; only regular files
are opened (a FIFO would block forever), and they are opened without blocking.
"""

from __future__ import annotations

import codecs
import gzip
import json
import os
import re
import stat
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from agent.redact import describe_aws_error

SUFFIXES = (".json", ".json.gz")
CHUNK = 1 << 20  # bytes read per step
MAX_VALUE = 1 << 20  # characters; one JSON value larger than this is a broken file
DIGEST_DIR = "CloudTrail-Digest"  # integrity digests share the bucket but hold no events

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class _Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class SourceError(Exception):
    """A file or prefix that cannot be read; the message is one line naming the problem."""


@dataclass(frozen=True)
class Source:
    """One readable input; `open` is deferred so that listing never holds file handles."""

    name: str
    open: Callable[[], _Readable]


@dataclass(frozen=True)
class RecordSource:
    """A source that yields decoded records itself (CloudWatch Logs events)."""

    name: str
    records: Callable[[], Iterator[dict[str, Any] | InputProblem]]


@dataclass(frozen=True)
class InputProblem:
    """An argument that yielded no sources (missing path, failed S3 listing)."""

    name: str
    message: str


def iter_sources(
    paths: Sequence[str], since_ms: int | None = None
) -> Iterator[Source | RecordSource | InputProblem]:
    """Expand the command-line paths in order; directories are walked sorted."""
    for path in paths:
        if path.startswith("s3://"):
            yield from _s3_sources(path)
        elif path.startswith("logs://"):
            from agent.audit.cloudtrail_logs import log_group_source

            yield log_group_source(path, since_ms)
        elif os.path.isdir(path):
            yield from _dir_sources(path)
        elif os.path.lexists(path):
            yield _local_source(path)
        else:
            yield InputProblem(path, "no such file or directory")


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"not a regular file ({kind}); skipped"


def _local_source(path: str) -> Source | InputProblem:
    try:
        why = _not_regular(os.stat(path).st_mode)
    except OSError as e:
        return InputProblem(path, _os_reason(e))
    return InputProblem(path, why) if why else Source(path, _local_opener(path))


def _local_opener(path: str) -> Callable[[], _Readable]:
    def opener() -> _Readable:
        # O_NONBLOCK: a file swapped for a FIFO after listing must not block the open.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            why = _not_regular(os.fstat(fd).st_mode)
            if why:
                raise SourceError(why)
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    return opener


def _wanted(name: str) -> bool:
    return name.endswith(SUFFIXES)


def _dir_sources(top: str) -> Iterator[Source | InputProblem]:
    problems: list[OSError] = []
    reported = False
    for root, dirs, files in os.walk(top, onerror=problems.append):
        while problems:
            err = problems.pop(0)
            reported = True
            yield InputProblem(str(err.filename or root), _os_reason(err))
        dirs[:] = sorted(d for d in dirs if d != DIGEST_DIR)
        for name in sorted(files):
            if _wanted(name):
                reported = True
                yield _local_source(os.path.join(root, name))
    for err in problems:
        yield InputProblem(str(err.filename or top), _os_reason(err))
        reported = True
    if not reported:
        yield InputProblem(top, "no .json or .json.gz files in this directory tree")


def _s3_sources(url: str) -> Iterator[Source | InputProblem]:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        yield InputProblem(url, "no bucket name; expected s3://BUCKET/PREFIX")
        return
    # Keys are read page by page as the audit goes: an organisation trail's prefix holds
    # millions of objects, too many to list into memory first. S3 lists them in key order.
    found = 0
    try:
        client = boto3.client("s3")
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if _wanted(key) and f"/{DIGEST_DIR}/" not in f"/{key}":
                    found += 1
                    yield Source(f"s3://{bucket}/{key}", _s3_opener(client, bucket, key))
    except ClientError as e:
        err = e.response.get("Error", {})
        yield InputProblem(
            url, f"S3 listing failed: {err.get('Code', '?')} {err.get('Message', '')}"
        )
        return
    except BotoCoreError as e:
        yield InputProblem(url, f"S3 listing failed: {describe_aws_error(e)}")
        return
    if not found:
        yield InputProblem(url, "no .json or .json.gz objects under this prefix")


def _s3_opener(client: Any, bucket: str, key: str) -> Callable[[], _Readable]:
    def opener() -> _Readable:
        body: _Readable = client.get_object(Bucket=bucket, Key=key)["Body"]
        return body

    return opener


def _os_reason(err: OSError) -> str:
    if isinstance(err, PermissionError):
        return "permission denied"
    if isinstance(err, IsADirectoryError):
        return "is a directory"
    return err.strerror or str(err)


class _Head:
    """Re-serves the sniffed first bytes so gzip detection needs no seekable stream."""

    def __init__(self, head: bytes, rest: _Readable) -> None:
        self._head, self._rest = head, rest

    def read(self, n: int = -1, /) -> bytes:
        if self._head:
            out, self._head = self._head, b""
            return out
        return self._rest.read(n)


def _text_chunks(raw: _Readable) -> Iterator[str]:
    head = raw.read(2)
    while 0 < len(head) < 2 and (more := raw.read(2 - len(head))):
        head += more  # a stream may hand out fewer bytes than asked
    stream: _Readable = _Head(head, raw)
    if head == b"\x1f\x8b":
        # Sequential reads never seek, so an S3 body or _Head serves despite the stub.
        stream = gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[call-overload]
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    while block := stream.read(CHUNK):
        yield decoder.decode(block)
    yield decoder.decode(b"", final=True)


class _Buffer:
    """A sliding window over decoded text with just enough JSON tokenising for CloudTrail."""

    def __init__(self, chunks: Iterator[str]) -> None:
        self._chunks = chunks
        self.buf = ""
        self.pos = 0
        self.base = 0  # characters dropped from the front, for error offsets
        self.eof = False

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def fill(self) -> bool:
        if self.eof:
            return False
        for text in self._chunks:
            if text:
                self.base += self.pos
                self.buf = self.buf[self.pos :] + text
                self.pos = 0
                return True
        self.eof = True
        return False

    def peek(self) -> str | None:
        """Skip whitespace; return the next character, or None at end of input."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.fill():
                return None

    def take(self, expected: str) -> str:
        ch = self.peek()
        if ch is None:
            raise SourceError(f"truncated: input ends at character {self.offset}")
        if ch not in expected:
            want = " or ".join(repr(c) for c in expected)
            raise SourceError(f"invalid JSON at character {self.offset}: expected {want}")
        self.pos += 1
        return ch

    def value(self) -> Any:
        """Decode one JSON value, reading more text until it is complete."""
        self.peek()
        numeric = self.pos < len(self.buf) and self.buf[self.pos] in "-0123456789"
        while True:
            try:
                obj, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                self._more_or_raise(e)
                continue
            except RecursionError:
                raise SourceError(f"JSON nested too deeply at character {self.offset}") from None
            # A number running into the buffer's end may continue in the next chunk.
            if numeric and end == len(self.buf) and self.fill():
                continue
            self.pos = end
            return obj

    def _more_or_raise(self, e: json.JSONDecodeError) -> None:
        """Read more text if the error may only mean the buffer stops too early."""
        incomplete = e.msg.startswith("Unterminated string") or e.pos >= len(self.buf) - 16
        if not incomplete:
            raise SourceError(f"invalid JSON at character {self.base + e.pos}: {e.msg}")
        if len(self.buf) - self.pos > MAX_VALUE:
            raise SourceError(f"a value at character {self.offset} exceeds {MAX_VALUE >> 20} MiB")
        if not self.fill():
            raise SourceError(f"truncated: input ends inside a value at character {self.offset}")


#: Arrays of events: `Records` in trail files, `Events` in `aws cloudtrail lookup-events`.
_ARRAYS = ("Records", "Events")


def unwrap(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The CloudTrail event in `obj`, whichever export wrapped it; None if none is.

    A trail file's record is the event itself; `lookup-events` nests it as a JSON string
    in `CloudTrailEvent`; EventBridge ("AWS API Call via CloudTrail") under `detail`.
    """
    if "eventSource" in obj or "eventVersion" in obj:
        return obj
    nested = obj.get("CloudTrailEvent")
    if isinstance(nested, str) and len(nested) <= MAX_VALUE:
        try:
            inner = json.loads(nested)
        except (ValueError, RecursionError):
            raise SourceError("CloudTrailEvent is not a JSON event") from None
        return inner if isinstance(inner, dict) else None
    detail = obj.get("detail")
    if isinstance(detail, dict) and "eventSource" in detail:
        return detail
    return None


def _records(buf: _Buffer) -> Iterator[dict[str, Any]]:
    first = buf.peek()
    if first is None:
        raise SourceError("empty file")
    if first == "[":
        raise SourceError('wrong shape: top level is a JSON array, expected {"Records": [...]}')
    if first != "{":
        raise SourceError(f"not JSON: the file starts with {first!r}")
    while (ch := buf.peek()) is not None:
        if ch != "{":
            raise SourceError(
                f"wrong shape at character {buf.offset}: expected a JSON object, found {ch!r}"
            )
        yield from _object(buf)


def _object(buf: _Buffer) -> Iterator[dict[str, Any]]:
    """Stream a Records document, or return a lone object that is itself an event."""
    start = buf.offset
    buf.take("{")
    fields: dict[str, Any] | None = {}  # None: too large to be one event, no longer kept
    saw_records = False
    if buf.peek() == "}":
        buf.take("}")
    else:
        while True:
            key = buf.value()
            if not isinstance(key, str):
                raise SourceError(f"invalid JSON at character {buf.offset}: key is not a string")
            buf.take(":")
            if key in _ARRAYS and buf.peek() == "[":
                saw_records = True
                yield from _array(buf)
            else:
                value = buf.value()
                if fields is not None and not saw_records:
                    fields[key] = value
                    if buf.offset - start > MAX_VALUE:
                        fields = None
            if buf.take(",}") == "}":
                break
    if saw_records:
        return
    if fields is not None and (event := unwrap(fields)) is not None:
        yield event
        return
    size = "" if fields is not None else f" (and is over {MAX_VALUE >> 20} MiB)"
    raise SourceError(
        f"wrong shape at character {start}: object has no Records array and is not an event" + size
    )


def _array(buf: _Buffer) -> Iterator[dict[str, Any]]:
    buf.take("[")
    if buf.peek() == "]":
        buf.take("]")
        return
    while True:
        at = buf.offset
        record = buf.value()
        if not isinstance(record, dict):
            raise SourceError(f"wrong shape at character {at}: a record is not a JSON object")
        yield unwrap(record) or record
        if buf.take(",]") == "]":
            return


def read_records(source: Source) -> Iterator[dict[str, Any]]:
    """Yield each record of one source; any failure becomes a one-line SourceError."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        raw = source.open()
    except SourceError:
        raise
    except OSError as e:
        raise SourceError(_os_reason(e)) from None
    except ClientError as e:
        err = e.response.get("Error", {})
        raise SourceError(
            f"S3 read failed: {err.get('Code', '?')} {err.get('Message', '')}"
        ) from None
    except BotoCoreError as e:
        raise SourceError(f"S3 read failed: {describe_aws_error(e)}") from None
    try:
        yield from _records(_Buffer(_text_chunks(raw)))
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise SourceError(f"bad gzip data: {e}") from None
    except UnicodeDecodeError:
        raise SourceError("not UTF-8 text (not a CloudTrail log?)") from None
    except OSError as e:
        raise SourceError(_os_reason(e)) from None
    except BotoCoreError as e:
        raise SourceError(f"S3 read failed: {describe_aws_error(e)}") from None
    finally:
        close = getattr(raw, "close", None)
        if close is not None:
            close()


__all__ = [
    "SUFFIXES",
    "InputProblem",
    "RecordSource",
    "Source",
    "SourceError",
    "iter_sources",
    "read_records",
]
