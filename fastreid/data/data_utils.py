"""Reading images exactly as the reference pipeline does (PIL, EXIF transpose, grayscale to 3 channels)."""
from __future__ import annotations

from typing import Optional, Union

from PIL import Image, ImageOps


class ImageReadError(OSError):
    """An image is missing or cannot be decoded; the message names the file and where it was listed."""


def to_model_mode(img: Image.Image, grayscale: bool = True) -> Image.Image:
    """An opened image as the models see it: EXIF orientation applied, then grey repeated to RGB
    (``grayscale``) or plain RGB. Files and in-memory images (search queries) both pass here."""
    img = ImageOps.exif_transpose(img)
    if grayscale:
        return img.convert("L").convert("RGB")
    return img.convert("RGB")


def _in_format(img: Image.Image, fmt: str) -> Image.Image:
    """fast-reid's ``read_image(path, format)`` conversion."""
    if fmt == "BGR":
        return Image.merge("RGB", img.convert("RGB").split()[::-1])
    return img.convert(fmt)


def read_image(path: str, grayscale: Union[bool, str] = True, origin: Optional[str] = None) -> Image.Image:
    """Open ``path`` as a 3-channel 8-bit PIL image.

    With ``grayscale`` the picture is converted to 8-bit luminance and the one channel repeated
    three times (the released checkpoints were trained on such input); otherwise it is read as RGB.

    Args:
        path: image file.
        grayscale: read as grayscale repeated to RGB (True) or as RGB (False); a string is fast-reid's
            ``format`` argument instead: a PIL mode ("RGB", "L", ...) or "BGR" (RGB with the channels reversed).
        origin: where the path came from (e.g. ``"lists/train.txt:12"``), quoted in errors.

    Returns:
        A PIL image in mode ``"RGB"``.
    """
    where = f" (listed at {origin})" if origin else ""
    try:
        with Image.open(path) as img:
            if isinstance(grayscale, str):
                return _in_format(ImageOps.exif_transpose(img), grayscale)
            return to_model_mode(img, grayscale)
    except FileNotFoundError:
        raise ImageReadError(f"Image not found: {path}{where}") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"Cannot read image {path}{where}: {e}") from e


def is_readable(path: str) -> bool:
    """True when ``path`` exists and PIL can parse it (header and chunk checks, without a full decode)."""
    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except Exception:  # any failure means "unreadable" here; the caller counts and logs them
        return False
