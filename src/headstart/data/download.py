"""Images named by URL: ``headstart predict RUN https://.../cat.jpg``.

Downloaded with the standard library (urllib) into a folder the caller owns,
bounded in size and in total time, so a huge file or a server that trickles
bytes cannot hang a command. A failure is a :class:`DataError` whose one line
names the URL and the reason (offline, HTTP status, too large, too slow).
"""

from __future__ import annotations

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


def is_url(text: str | Path) -> bool:
    return isinstance(text, str) and text.lower().startswith(("http://", "https://"))


def download(url: str, folder: Path, max_bytes: int = MAX_BYTES, timeout_s: float = TIMEOUT_S) -> Path:
    """Fetch ``url`` into a new file of ``folder``, keeping the URL's file name (and so its suffix)."""
    name = Path(urllib.parse.urlparse(url).path).name or "image"
    target = Path(folder) / f"{sum(1 for _ in Path(folder).iterdir())}-{name}"
    request = urllib.request.Request(url, headers={"User-Agent": f"headstart/{__version__}"})
    deadline = time.monotonic() + timeout_s
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response, target.open("wb") as out:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise DataError(f"{url}: {int(length) / 2**20:.1f} MB, larger than the {max_bytes / 2**20:g} MB allowed")
            size = 0
            while chunk := response.read(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise DataError(f"{url}: larger than the {max_bytes / 2**20:g} MB allowed")
                if time.monotonic() > deadline:
                    raise DataError(f"{url}: not downloaded within {timeout_s:g} s")
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        raise DataError(f"{url}: the server answered HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise DataError(f"cannot download {url}: {exc.reason} (is the network reachable?)") from None
    except (TimeoutError, OSError) as exc:
        raise DataError(f"cannot download {url}: {exc}") from None
    return target
