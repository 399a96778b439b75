"""HTTP POST of one webhook attempt, pinned to a checked address and bounded in time and size.

``post`` connects only to ``target.address`` (resolved and checked by the guard) while the
URL keeps the host name, so the ``Host`` header, TLS SNI and certificate checks use the
name. A watchdog shuts the socket down when the total deadline passes, which cuts a
receiver that trickles its headers or body, not just one that stops sending. Redirects
are not followed, proxies from the environment are ignored, and at most
``max_response_bytes`` of the body are read.
"""

import socket
import threading
import time
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util import connection as urllib3_connection

from backend.webhooks.conf import RESPONSE_EXCERPT_CHARS

CHUNK_BYTES = 8192

# requests 2.32.2 added this hook. Older versions never call it, so connections would
# resolve the host again and skip the pinning.
if not hasattr(HTTPAdapter, "get_connection_with_tls_context"):
    raise ImportError(
        f"requests {requests.__version__} is too old for webhook delivery; install requests>=2.32.2.",
    )


@dataclass(frozen=True)
class SendResult:
    """Outcome of one attempt; ``status_code`` is ``None`` when no response arrived."""

    status_code: int | None
    latency_ms: int
    response_excerpt: str = ""
    error: str = ""

    @property
    def succeeded(self):
        return not self.error and self.status_code is not None and 200 <= self.status_code < 300


class DeadlineExceeded(Exception):
    pass


class Deadline:
    """A total time limit that shuts down the watched socket when it passes."""

    def __init__(self, seconds):
        self.seconds = seconds
        self._expires = time.monotonic() + seconds
        self._sockets = []
        self._lock = threading.Lock()
        self.expired = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self):
        return self._expires - time.monotonic()

    def watch(self, sock):
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shutdown(sock)

    def cancel(self):
        self._timer.cancel()

    def _expire(self):
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        # shutdown() wakes a thread blocked in recv() on the socket; close() would not.
        for sock in sockets:
            _shutdown(sock)


def _shutdown(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the request thread


class _PinnedConnectionMixin:
    """Open the TCP connection to a fixed address instead of resolving ``self.host``."""

    def __init__(self, *args, pinned_address, deadline, **kwargs):
        super().__init__(*args, **kwargs)
        self._pinned_address = pinned_address
        self._deadline = deadline

    def _new_conn(self):
        try:
            sock = urllib3_connection.create_connection(
                (self._pinned_address, self.port),
                self.timeout,
                source_address=self.source_address,
                socket_options=self.socket_options,
            )
        except socket.timeout as exc:
            raise ConnectTimeoutError(
                self, f"Connection to {self.host} ({self._pinned_address}) timed out.",
            ) from exc
        except OSError as exc:
            raise NewConnectionError(
                self, f"Failed to connect to {self.host} ({self._pinned_address}): {exc}",
            ) from exc
        self._deadline.watch(sock)
        return sock


class _PinnedHTTPConnection(_PinnedConnectionMixin, HTTPConnection):
    pass


class _PinnedHTTPSConnection(_PinnedConnectionMixin, HTTPSConnection):
    pass


class _PinnedAdapter(HTTPAdapter):
    """Give every connection pool of this adapter the pinned connection classes."""

    def __init__(self, pinned_address, deadline):
        self._connection_kwargs = {"pinned_address": pinned_address, "deadline": deadline}
        super().__init__(pool_connections=1, pool_maxsize=1, max_retries=0)

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        pool = super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
        pool.ConnectionCls = _PinnedHTTPSConnection if pool.scheme == "https" else _PinnedHTTPConnection
        pool.conn_kw.update(self._connection_kwargs)
        return pool


def _read_capped(response, max_bytes, deadline):
    content = bytearray()
    for chunk in response.iter_content(CHUNK_BYTES):
        content += chunk
        if len(content) >= max_bytes:
            break
        if deadline.remaining() <= 0:
            raise DeadlineExceeded
    if deadline.expired:
        # The watchdog may have cut the stream short without a read error.
        raise DeadlineExceeded
    return bytes(content[:max_bytes])


def _excerpt(content):
    return content[: RESPONSE_EXCERPT_CHARS * 4].decode("utf-8", "replace")[:RESPONSE_EXCERPT_CHARS]


def _describe(exc):
    """Return the root cause of a requests error, without the URL that requests adds."""
    reason = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc
    reason = getattr(reason, "reason", None) or reason  # MaxRetryError wraps the cause
    return str(reason.__cause__ or reason)


def _failure(started, message, status_code=None):
    latency_ms = int((time.monotonic() - started) * 1000)
    return SendResult(status_code=status_code, latency_ms=latency_ms, error=message[:500])


def post(target, url, body, headers, *, connect_timeout, total_timeout, max_response_bytes):
    """POST ``body`` to ``url`` through ``target.address`` and return a ``SendResult``.

    Network errors, timeouts and non-2xx statuses are returned in ``error``, not raised.
    """
    started = time.monotonic()
    deadline = Deadline(total_timeout)
    session = requests.Session()
    session.trust_env = False  # proxies would connect somewhere the guard did not check
    adapter = _PinnedAdapter(target.address, deadline)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    status_code = None
    try:
        with session.post(
            url, data=body, headers=headers, timeout=(connect_timeout, total_timeout),
            allow_redirects=False, stream=True,
        ) as response:
            status_code = response.status_code
            content = _read_capped(response, max_response_bytes, deadline)
            location = response.headers.get("Location", "")
    except requests.exceptions.ConnectTimeout:
        return _failure(started, f"Connection timed out after {connect_timeout:g} s.")
    except (DeadlineExceeded, requests.exceptions.RequestException) as exc:
        if deadline.expired or isinstance(exc, (DeadlineExceeded, requests.exceptions.Timeout)):
            return _failure(started, f"Timed out after {total_timeout:g} s.", status_code)
        cause = _describe(exc)
        return _failure(started, f"Request to {target.hostname} ({target.address}) failed: {cause}", status_code)
    finally:
        deadline.cancel()
        session.close()

    latency_ms = int((time.monotonic() - started) * 1000)
    error = ""
    if 300 <= status_code < 400:
        error = f"Redirect not followed: HTTP {status_code} to {location or 'no Location'}."[:500]
    elif not 200 <= status_code < 300:
        error = f"HTTP {status_code}."
    return SendResult(
        status_code=status_code, latency_ms=latency_ms, response_excerpt=_excerpt(content),
        error=error,
    )
