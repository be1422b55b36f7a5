"""Safe decoding of tweet images: a missing, broken, truncated or oversized file is an `ImageLoadError`.

Tweet image folders are scraped and incomplete: some files were never downloaded, some are HTML error
pages saved as `.jpg`, some are cut short. Callers (the image feature cache, object detection) catch
`ImageLoadError`, mask the tweet's image and count it, instead of crashing or, as the MGCM release did,
substituting a placeholder image.
"""

import io
import os
import struct
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

# Reasons an image cannot be used. Only "missing" means there is no file; every other reason is a file
# that exists but is corrupt.
MISSING = "missing"
UNREADABLE = "unreadable"
NOT_AN_IMAGE = "not_an_image"
TRUNCATED = "truncated"
TOO_LARGE = "too_large"
BROKEN = "broken"
REFUSED = "refused"
IMAGE_LOAD_REASONS = (MISSING, UNREADABLE, NOT_AN_IMAGE, TRUNCATED, TOO_LARGE, BROKEN, REFUSED)
_REASON_TEXT = {
    MISSING: "missing image",
    UNREADABLE: "unreadable image file",
    NOT_AN_IMAGE: "not an image",
    TRUNCATED: "truncated image",
    TOO_LARGE: "image too large (possible decompression bomb)",
    BROKEN: "broken image",
    REFUSED: "image refused",
}


class ImageLoadError(ValueError):
    """An image that cannot be decoded.

    Attributes:
        source: the file path, or a description of the in-memory bytes.
        reason: one of `IMAGE_LOAD_REASONS`: "missing" (no such file), "unreadable" (the file system refused
            it), "not_an_image" (no known image format), "truncated" (the data stops early), "too_large"
            (more pixels than twice `PIL.Image.MAX_IMAGE_PIXELS`: a possible decompression bomb), "broken"
            (any other decoding failure) or "refused" (a post's path outside the image folder it is confined
            to, or a URL on a host not allowed; the file is not opened, the URL not fetched).
        detail: the underlying error message.
    """

    def __init__(self, source: str, reason: str, detail: str):
        self.source = source
        self.reason = reason
        self.detail = detail
        super().__init__(f"{source}: {_REASON_TEXT.get(reason, reason)} ({detail})")

    @property
    def is_missing(self) -> bool:
        """True when there is no file at all; False for a file that exists but cannot be decoded."""
        return self.reason == MISSING

    def __reduce__(self):
        # Keeps the error picklable, so it survives `datasets` worker processes.
        return (type(self), (self.source, self.reason, self.detail))


ImageSource = str | os.PathLike | bytes | Mapping[str, Any]


def _open_source(image: ImageSource) -> tuple[Any, str]:
    """A file object or path for PIL, and the name to put in errors."""
    if isinstance(image, Mapping):
        # `datasets.Image(decode=False)` rows: embedded bytes win, as `datasets` itself decodes them.
        path, data = image.get("path"), image.get("bytes")
        if data is not None:
            return io.BytesIO(data), f"{path} (embedded bytes)" if path else "<embedded image bytes>"
        if path is None:
            raise ImageLoadError("<no path and no bytes>", MISSING, "the image entry is empty")
        image = path
    if isinstance(image, bytes | bytearray | memoryview):
        return io.BytesIO(bytes(image)), "<image bytes>"
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        if not path.exists():
            raise ImageLoadError(str(path), MISSING, "no such file")
        if not path.is_file():
            raise ImageLoadError(str(path), UNREADABLE, "not a regular file")
        return path, str(path)
    raise TypeError(
        f"load_image takes a path, bytes or a {{'path', 'bytes'}} dict; got {type(image).__name__}"
    )


def _head(source: Any, size: int = 16) -> bytes:
    """The first bytes of the data, which tell an HTML error page or an empty download at a glance."""
    if isinstance(source, io.BytesIO):
        return source.getvalue()[:size]
    try:
        with open(source, "rb") as file:
            return file.read(size)
    except OSError:
        return b""


def load_image(image: ImageSource) -> Image.Image:
    """Decodes an image fully and returns it in RGB.

    Args:
        image: a file path, the encoded bytes, or a `datasets.Image(decode=False)` entry
            `{"path": str | None, "bytes": bytes | None}`.

    Returns:
        A loaded `PIL.Image.Image` in mode "RGB", detached from the file.

    Raises:
        ImageLoadError: missing file, unreadable file, not an image, truncated data, or a decompression
            bomb (PIL's `MAX_IMAGE_PIXELS` guard is kept; its warning counts as an error here). Truncation
            is detected only while `PIL.ImageFile.LOAD_TRUNCATED_IMAGES` keeps its default, False.
    """
    source, name = _open_source(image)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as opened:
                # A lazy open only reads the header; the pixels, and so any truncation, come with load().
                opened.load()
                return opened.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageLoadError(name, TOO_LARGE, str(error)) from None
    except UnidentifiedImageError:
        raise ImageLoadError(
            name, NOT_AN_IMAGE, f"no known image format; starts with {_head(source)!r}"
        ) from None
    except PermissionError as error:
        raise ImageLoadError(name, UNREADABLE, str(error)) from None
    except OSError as error:
        reason = TRUNCATED if "truncated" in str(error).lower() else BROKEN
        raise ImageLoadError(name, reason, str(error)) from None
    except (SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error) as error:
        # PIL's format plug-ins signal malformed data with these as well as with OSError.
        raise ImageLoadError(name, BROKEN, f"{type(error).__name__}: {error}") from None


__all__ = ["IMAGE_LOAD_REASONS", "ImageLoadError", "ImageSource", "load_image"]
