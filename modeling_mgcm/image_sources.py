"""Turn what a user passes as a post's image (a path, a URL, bytes or a PIL image) into a decoded RGB image.

Decoding goes through `image_loading.load_image`, so missing files, non-images, truncated data and
decompression bombs are all an `ImageLoadError`. A URL is fetched only when the user passes one, with a
timeout and a byte limit, and, given `url_hosts`, only from those hosts (redirects included); nothing else
touches the network.
"""

import io
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Collection, Mapping
from typing import Any

from PIL import Image

from .image_loading import (
    BROKEN,
    MISSING,
    REFUSED,
    TOO_LARGE,
    TRUNCATED,
    UNREADABLE,
    ImageLoadError,
    load_image,
)

URL_SCHEMES = ("http://", "https://")
DEFAULT_URL_TIMEOUT = 10.0
DEFAULT_MAX_IMAGE_BYTES = 20 * 1024 * 1024
_READ_BLOCK = 64 * 1024


def is_image_url(image: Any) -> bool:
    """Whether `image` is a string naming an http(s) URL."""
    return isinstance(image, str) and image.strip().lower().startswith(URL_SCHEMES)


def host_allowed(url: str, url_hosts: Collection[str] | None) -> bool:
    """Whether `url`'s host is one of `url_hosts` or a subdomain of one ("twimg.com" allows
    "pbs.twimg.com"); None allows every host, an empty collection none."""
    if url_hosts is None:
        return True
    host = (urllib.parse.urlsplit(url.strip()).hostname or "").rstrip(".")
    allowed = {entry.strip().strip(".").lower() for entry in url_hosts}
    return any(host == entry or host.endswith("." + entry) for entry in allowed if entry)


def _refuse_host(url: str) -> ImageLoadError:
    host = urllib.parse.urlsplit(url.strip()).hostname
    return ImageLoadError(url, REFUSED, f"the host {host!r} is not among the allowed image URL hosts")


class _HostCheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to an http(s) URL on an allowed host, so an allowed host cannot send the
    fetch elsewhere."""

    def __init__(self, url_hosts: Collection[str] | None) -> None:
        self.url_hosts = url_hosts

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not is_image_url(newurl) or not host_allowed(newurl, self.url_hosts):
            raise _refuse_host(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch_image_bytes(
    url: str,
    timeout: float = DEFAULT_URL_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    url_hosts: Collection[str] | None = None,
) -> bytes:
    """Download an image's bytes.

    Args:
        url: an http:// or https:// URL.
        timeout: seconds for the whole download (connection, and every read until the last byte).
        max_bytes: largest accepted body; a larger one is refused before or while it is read.
        url_hosts: the hosts (and their subdomains) a URL, or a redirect, may lead to; None: any host.

    Raises:
        ImageLoadError: "refused" for a host not in `url_hosts` (nothing is sent to it), "missing" for an
            HTTP 404/410, "too_large" past `max_bytes`, "unreadable" for any other HTTP, network or timeout
            failure.
    """
    if not is_image_url(url):
        raise ValueError(f"not an http(s) URL: {url!r}")
    if not host_allowed(url, url_hosts):
        raise _refuse_host(url)
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url.strip(), headers={"User-Agent": "mgcm-predict"})
    opener = urllib.request.build_opener(_HostCheckedRedirects(url_hosts))
    try:
        with opener.open(request, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise ImageLoadError(url, TOO_LARGE, f"Content-Length {declared} exceeds {max_bytes} bytes")
            body = io.BytesIO()
            while True:
                if time.monotonic() > deadline:
                    raise ImageLoadError(url, UNREADABLE, f"download took longer than {timeout} s")
                block = response.read(_READ_BLOCK)
                if not block:
                    break
                body.write(block)
                if body.tell() > max_bytes:
                    raise ImageLoadError(url, TOO_LARGE, f"the body exceeds {max_bytes} bytes")
            return body.getvalue()
    except urllib.error.HTTPError as error:
        reason = MISSING if error.code in (404, 410) else UNREADABLE
        raise ImageLoadError(url, reason, f"HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        detail = getattr(error, "reason", None) or error
        raise ImageLoadError(url, UNREADABLE, f"cannot fetch: {detail}") from None


def _decoded_pil_image(image: Image.Image) -> Image.Image:
    """A PIL image fully loaded and in RGB; a lazily opened broken file fails here, not in the model."""
    name = f"<PIL image {image.format or ''} {image.size[0]}x{image.size[1]}>".replace("  ", " ")
    try:
        image.load()
        return image if image.mode == "RGB" else image.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageLoadError(name, TOO_LARGE, str(error)) from None
    except OSError as error:
        reason = TRUNCATED if "truncated" in str(error).lower() else BROKEN
        raise ImageLoadError(name, reason, str(error)) from None
    except (SyntaxError, ValueError, EOFError, IndexError) as error:
        raise ImageLoadError(name, BROKEN, f"{type(error).__name__}: {error}") from None


def _path_inside(path: str, image_dir: str | os.PathLike) -> str:
    """`path` joined to `image_dir`, refused when it names a place outside it (checked on the names, so a
    symbolic link the folder's owner put in it is followed)."""
    root = os.path.abspath(image_dir)
    joined = os.path.abspath(os.path.join(root, path))
    if os.path.commonpath([root, joined]) != root:
        raise ImageLoadError(
            path,
            REFUSED,
            f"outside the image folder {os.fspath(image_dir)}: a post's image must be a file in it",
        )
    return joined


def open_post_image(
    image: Any,
    timeout: float = DEFAULT_URL_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    image_dir: str | os.PathLike | None = None,
    url_hosts: Collection[str] | None = None,
) -> Image.Image:
    """Decode a post's image.

    Args:
        image: a file path (str or `os.PathLike`), an http(s) URL, the encoded bytes, a `PIL.Image.Image`, or
            an undecoded `datasets.Image` entry `{"path", "bytes"}`.
        timeout: seconds allowed to fetch a URL.
        max_bytes: largest image a URL may send.
        image_dir: the folder a path must name a file in, relative paths resolved against it: an absolute
            path or one whose `..` leads outside it is refused unopened, so a post cannot make the caller
            read (or quote the first bytes of) other files. None (the default): any path, relative to the
            working directory.
        url_hosts: the hosts (and their subdomains) an image URL may be fetched from, redirects included;
            another is refused unfetched (reason "refused"). None (the default): any host; empty: no URL.

    Returns:
        An RGB `PIL.Image.Image`.

    Raises:
        ImageLoadError: the image is missing, cannot be fetched or cannot be decoded.
        TypeError: `image` is none of the accepted types.
    """
    if isinstance(image, Image.Image):
        return _decoded_pil_image(image)
    if is_image_url(image):
        return load_image(fetch_image_bytes(image, timeout=timeout, max_bytes=max_bytes, url_hosts=url_hosts))
    if isinstance(image, bytes | bytearray | memoryview):
        return load_image(bytes(image))
    if isinstance(image, Mapping):
        # A `datasets.Image(decode=False)` entry: {"path": ..., "bytes": ...}.
        return load_image(image)
    if isinstance(image, str | os.PathLike):
        if isinstance(image, str) and not image.strip():
            raise ImageLoadError(repr(image), MISSING, "the image path is empty")
        path = os.fspath(image)
        if image_dir is not None:
            path = _path_inside(path, image_dir)
        return load_image(path)
    raise TypeError(
        "an image must be a path, an http(s) URL, bytes, a PIL.Image.Image or a {'path', 'bytes'} dict; got "
        f"{type(image).__name__}"
    )


__all__ = [
    "DEFAULT_MAX_IMAGE_BYTES",
    "DEFAULT_URL_TIMEOUT",
    "URL_SCHEMES",
    "fetch_image_bytes",
    "host_allowed",
    "is_image_url",
    "open_post_image",
]
