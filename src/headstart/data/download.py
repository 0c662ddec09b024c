"""Images named by URL: ``headstart predict RUN https://.../cat.jpg``.

Downloaded with the standard library (urllib) into a folder the caller owns,
bounded in size and in total time, so a huge file or a server that trickles
bytes (headers included) cannot hang a command: when the time is up, every
connection the download opened is shut. Redirects are followed to http and https
only. A failure is a :class:`DataError` whose one line names the URL (without any
credentials it holds) and the reason (offline, HTTP status, too large, too slow).
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .. import __version__
from ..errors import DataError

__all__ = ["is_url", "download", "MAX_BYTES", "TIMEOUT_S"]

MAX_BYTES = 20 * 2**20  # as `headstart serve` accepts by default
TIMEOUT_S = 30.0
_CHUNK = 1 << 16
_SCHEMES = ("http", "https")


def is_url(text: str | Path) -> bool:
    return isinstance(text, str) and text.lower().startswith(("http://", "https://"))


def download(url: str, folder: Path, max_bytes: int = MAX_BYTES, timeout_s: float = TIMEOUT_S) -> Path:
    """Fetch ``url`` into a new file of ``folder``, keeping the URL's file name (and so its suffix)."""
    shown = _without_credentials(url)
    name = Path(urllib.parse.urlparse(url).path).name or "image"
    target = Path(folder) / f"{sum(1 for _ in Path(folder).iterdir())}-{name}"
    request = urllib.request.Request(url, headers={"User-Agent": f"headstart/{__version__}"})
    deadline = _Deadline(timeout_s)
    opener = urllib.request.build_opener(_SafeRedirects(), *deadline.handlers())
    try:
        with deadline, opener.open(request, timeout=timeout_s) as response, target.open("wb") as out:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise DataError(f"{shown}: {int(length) / 2**20:.1f} MB, larger than the "
                                f"{max_bytes / 2**20:g} MB allowed")
            size = 0
            while chunk := response.read(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise DataError(f"{shown}: larger than the {max_bytes / 2**20:g} MB allowed")
                out.write(chunk)
            if deadline.expired:  # the connection was shut mid-body: what arrived is not the image
                raise TimeoutError
    except DataError:
        raise
    except urllib.error.HTTPError as exc:
        reason = str(exc.reason).splitlines()[0] if exc.reason else ""
        raise DataError(f"{shown}: the server answered HTTP {exc.code} {reason}".rstrip()) from None
    except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException) as exc:
        if deadline.expired:
            raise DataError(f"{shown}: not downloaded within {timeout_s:g} s") from None
        if isinstance(exc, urllib.error.URLError):
            raise DataError(f"cannot download {shown}: {exc.reason} (is the network reachable?)") from None
        raise DataError(f"cannot download {shown}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                        ) from None
    return target


class _Deadline:
    """Shuts every connection of one download once ``timeout_s`` has passed since it began.

    urllib's own timeout bounds each read, not the whole: a byte every few seconds, in the
    headers or the body, would keep it going for ever.
    """

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self.sockets: list[socket.socket] = []
        self.expired = False
        self._timer = threading.Timer(timeout_s, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()

    def start(self) -> None:
        if not self._timer.is_alive() and not self.expired:
            self._timer.start()

    def _expire(self) -> None:
        self.expired = True
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # a blocked read returns at once
            except OSError:
                pass  # already closed

    def handlers(self) -> tuple[urllib.request.BaseHandler, ...]:
        """urllib handlers whose connections this deadline watches (and starts with)."""
        deadline = self

        def watched(base: type[http.client.HTTPConnection]) -> type[http.client.HTTPConnection]:
            class Watched(base):
                def connect(self) -> None:
                    deadline.start()
                    super().connect()
                    deadline.sockets.append(self.sock)
                    if deadline.expired:
                        deadline._expire()
            return Watched

        http_connection, https_connection = watched(http.client.HTTPConnection), watched(http.client.HTTPSConnection)

        class Http(urllib.request.HTTPHandler):
            def http_open(self, req):
                return self.do_open(http_connection, req)

        class Https(urllib.request.HTTPSHandler):
            def https_open(self, req):
                return self.do_open(https_connection, req, context=self._context)

        return Http(), Https()


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects to http and https only: a server cannot send the download to ftp:// or file://."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urllib.parse.urlparse(newurl).scheme.lower()
        if scheme not in _SCHEMES:
            raise urllib.error.HTTPError(req.full_url, code, f"redirected to {scheme}://, which is not followed",
                                         headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _without_credentials(url: str) -> str:
    """``url`` as errors show it: a user name or password in it is replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
