"""HTTP basic auth against bcrypt hashes, built to stay responsive under a flood of guesses.

bcrypt is slow on purpose (about 0.25 s per check at cost 12), which makes it a
lever for anyone who can send requests.  So at most BCRYPT_SLOTS checks run at
once, BCRYPT_QUEUE more requests wait BCRYPT_WAIT seconds for a slot at most,
and the rest are refused at once (AuthBusy: the server answers 503).  Short
caches of recent successes and failures answer repeated credentials without
bcrypt, and addresses whose latest check failed share one lane, so guessers
on many addresses leave a slot to a first login from anywhere else.  Both
caches hold a keyed digest (HMAC, random key per process) of user and
password, never anything reusable.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import NoReturn, TypeVar

_MAX_BCRYPT_PASSWORD = 72
_K = TypeVar("_K", str, bytes)


class AuthBusy(Exception):
    """Every bcrypt slot stayed busy past the bounded wait: answer 503, not 401."""


#: bcrypt checks at once: enough for a few clients, too few to eat every core.
BCRYPT_SLOTS = 2
#: How long a request waits for a slot before it is answered 503.
BCRYPT_WAIT = 2.0
#: Requests that may wait for a slot; more are answered 503 at once.
BCRYPT_QUEUE = 2
#: Recent failures answered without bcrypt, and for how long.
FAILURE_CACHE_SIZE = 1024
FAILURE_CACHE_SECONDS = 30.0
#: Client addresses whose latest check failed, remembered this long (at most this many):
#: they share one bcrypt slot, so guessers from tens of addresses cannot take every
#: slot from a first login on another.
SUSPECT_SECONDS = 60.0
SUSPECT_PEERS = 4096


class BasicAuth:
    """bcrypt checks with short caches of recent successes and failures.

    A repeated wrong guess is refused from the cache instead of paying bcrypt
    again, and a logged-in scraper never queues behind guessers.
    """

    def __init__(self, users: Mapping[str, bytes]) -> None:
        import bcrypt  # only when basic auth is configured

        self._bcrypt = bcrypt
        self._users = dict(users)
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, bytes] = {}
        self._failed: OrderedDict[bytes, float] = OrderedDict()  # digest -> expiry
        self._cache_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(BCRYPT_SLOTS)
        self._admitted = threading.BoundedSemaphore(BCRYPT_SLOTS + BCRYPT_QUEUE)
        self._peers: set[str] = set()  # client addresses with a check admitted
        self._suspects: OrderedDict[str, float] = OrderedDict()  # address -> until when
        self._suspect_slot = threading.BoundedSemaphore(1)
        self._decoy_lock = threading.Lock()
        self._decoy: bytes | None = None
        self.busy_refusals = 0

    def _decoy_hash(self) -> bytes:
        # Unknown users are checked against a hash of the same cost, so the
        # response time does not reveal which user names exist.
        with self._decoy_lock:
            if self._decoy is None:
                cost = max(int(h[4:6]) for h in self._users.values())
                self._decoy = self._bcrypt.hashpw(
                    secrets.token_bytes(16), self._bcrypt.gensalt(rounds=cost)
                )
            return self._decoy

    def _digest(self, user: str, password: bytes) -> bytes:
        name = user.encode("utf-8")
        msg = len(name).to_bytes(4, "big") + name + password
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    def _refuse(self) -> NoReturn:
        with self._cache_lock:
            self.busy_refusals += 1
        raise AuthBusy("every basic-auth check slot is busy")

    @contextlib.contextmanager
    def _admission(self, peer: str) -> Iterator[None]:
        """One bcrypt at a time per client address, BCRYPT_SLOTS + BCRYPT_QUEUE in all.

        Past that no one even waits: each waiter holds an HTTP worker, which
        must stay free for everyone else, and a guesser on one address must not
        take every turn from a login on another.
        """
        with self._cache_lock:
            busy_peer = bool(peer) and peer in self._peers
            if not busy_peer and self._admitted.acquire(blocking=False):
                if peer:
                    self._peers.add(peer)
            else:
                busy_peer = True
        if busy_peer:
            self._refuse()
        try:
            yield
        finally:
            with self._cache_lock:
                self._peers.discard(peer)
            self._admitted.release()

    def check(self, header_value: str | None, peer: str = "") -> bool:
        """True or False; AuthBusy when no bcrypt slot frees up within BCRYPT_WAIT.

        `peer` is the client's address (without port): one check at a time each.
        """
        creds = _parse_basic(header_value)
        if creds is None:
            return False
        user, password = creds
        digest = self._digest(user, password)
        now = time.monotonic()
        with self._cache_lock:
            known = self._verified.get(user)
            failed_until = self._failed.get(digest, 0.0)
        if known is not None and hmac.compare_digest(known, digest):
            return True
        if failed_until > now:
            self._suspect(peer)
            return False
        stored = self._users.get(user)
        candidate = stored if stored is not None else self._decoy_hash()
        with self._suspect_gate(peer, now), self._admission(peer):
            if not self._slots.acquire(timeout=BCRYPT_WAIT):
                self._refuse()
            try:
                ok = len(password) <= _MAX_BCRYPT_PASSWORD and self._bcrypt.checkpw(
                    password, candidate
                )
            finally:
                self._slots.release()
        with self._cache_lock:
            if ok and stored is not None:
                self._verified[user] = digest
                self._suspects.pop(peer, None)
                return True
            _remember(
                self._failed, digest, time.monotonic() + FAILURE_CACHE_SECONDS, FAILURE_CACHE_SIZE
            )
        self._suspect(peer)
        return False

    def _suspect(self, peer: str) -> None:
        """Remember that `peer`'s latest check failed (bounded: the oldest go first)."""
        if not peer:
            return
        with self._cache_lock:
            _remember(self._suspects, peer, time.monotonic() + SUSPECT_SECONDS, SUSPECT_PEERS)

    @contextlib.contextmanager
    def _suspect_gate(self, peer: str, now: float) -> Iterator[None]:
        """Addresses whose latest check failed pass one at a time, all of them together.

        Guessers spread over many addresses would otherwise hold every bcrypt slot,
        and a scraper's first login after a restart (nothing cached yet) would get
        503 for as long as they keep guessing.  With them in one lane, at least one
        slot is always left to addresses that have not failed.
        """
        with self._cache_lock:
            suspect = self._suspects.get(peer, 0.0) > now
        if not suspect:
            yield
            return
        if not self._suspect_slot.acquire(blocking=False):
            self._refuse()
        try:
            yield
        finally:
            self._suspect_slot.release()


def _remember(cache: OrderedDict[_K, float], key: _K, until: float, cap: int) -> None:
    """Keep `key` until `until`, newest last; past `cap` the oldest go, so memory stays bounded."""
    cache[key] = until
    cache.move_to_end(key)
    while len(cache) > cap:
        cache.popitem(last=False)


def _parse_basic(header_value: str | None) -> tuple[str, bytes] | None:
    if not header_value:
        return None
    scheme, _, encoded = header_value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
        user, sep, password = raw.partition(b":")
        return (user.decode("utf-8"), password) if sep else None
    except (binascii.Error, UnicodeDecodeError):
        return None
