"""Event photos: recognise the format by content, strip every piece of metadata, name the object.

A phone photo carries the place it was taken (EXIF GPS), the device, often the owner's name
(XMP, PNG text chunks). Uploads are public, so nothing but pixels leaves this module: the image
is decoded and re-encoded in its own format, after the EXIF orientation has been applied to the
pixels and any ICC colour profile converted to sRGB, so the photo still looks as it did.

`prepare_photo` is CPU-bound and blocks (CPU time: ~0.13 s for a 12 MP JPEG, ~0.8 s for a 12 MP
WebP). Hostile bytes can make a decode far dearer than its size suggests, so the server runs it
in worker processes with a CPU-time limit (domain/photo_workers.py), and it first refuses, from
the headers alone, what would cost more than any honest photo: too many pixels, or a progressive
JPEG with too many scans.
"""

import io
import re
import uuid
from dataclasses import dataclass

from PIL import Image, ImageCms, ImageOps

from domain.errors import InvalidInput, UnsupportedMediaType

# 50 megapixels admits a 48 MP phone photo yet bounds the memory one decode can take (~200 MB
# as RGBA). Checked on the header, before any pixel is decoded; Pillow's own, looser bomb
# check (89 M pixels) is left alone so nothing else in the process changes behaviour.
MAX_PHOTO_PIXELS = 50_000_000
# A progressive JPEG is decoded scan by scan, each scan a pass over the coefficients of the whole
# image: a "scan bomb" repeats scans of a few bytes thousands of times (200 kB: 15 s of CPU).
# Encoders write 10 or so (libjpeg's progressive script: 10 for colour, 6 for grey).
MAX_JPEG_SCANS = 100
# Decoding costs about pixels x scans (~1.2 ns each measured here): 10 scans of a 48 MP photo
# pass, as do 100 scans of 10 MP; the dearest image admitted costs about a second.
MAX_JPEG_PIXEL_SCANS = 1_000_000_000


@dataclass(frozen=True)
class PhotoFormat:
    kind: str
    pillow_format: str
    content_type: str
    extension: str
    save_options: dict


PHOTO_FORMATS = {
    "jpeg": PhotoFormat("jpeg", "JPEG", "image/jpeg", "jpg", {"quality": 90}),
    "png": PhotoFormat("png", "PNG", "image/png", "png", {}),
    # WebP's default effort (method 4) costs twice the CPU of method 2 for ~6% smaller files.
    "webp": PhotoFormat("webp", "WEBP", "image/webp", "webp", {"quality": 90, "method": 2}),
}

_SAFE_ID = re.compile(r"[A-Za-z0-9_-]+")
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@dataclass(frozen=True)
class PreparedPhoto:
    data: bytes
    kind: str
    content_type: str
    extension: str


def sniff_image_type(data: bytes) -> str | None:
    """The photo format by magic bytes alone: the client's file name and type are not trusted."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def prepare_photo(data: bytes) -> PreparedPhoto:
    """Decode, orient and re-encode `data` with no metadata. Blocking and unbounded in CPU: run it in
    domain.photo_workers.PhotoWorkers, never on the event loop.

    Raises UnsupportedMediaType for anything that is not a decodable JPEG, PNG or WebP, and
    InvalidInput (code "image_too_large") above MAX_PHOTO_PIXELS. Animated PNG and WebP keep
    their first frame only.
    """
    kind = sniff_image_type(data)
    if kind is None:
        raise UnsupportedMediaType("Photos must be JPEG, PNG or WebP images.")
    photo_format = PHOTO_FORMATS[kind]
    image = _decode(data, photo_format)
    return PreparedPhoto(
        data=_encode_without_metadata(image, photo_format),
        kind=kind,
        content_type=photo_format.content_type,
        extension=photo_format.extension,
    )


def new_object_key(event_id: str, extension: str) -> str:
    """A fresh storage key for one photo of one event, never derived from a client's file name."""
    if not _SAFE_ID.fullmatch(extension):
        raise ValueError(f"unsafe object key part: {extension!r}")
    return f"{event_key_prefix(event_id)}{uuid.uuid4().hex}.{extension}"


def event_key_prefix(event_id: str) -> str:
    """What the keys of one event's photos, and only its, start with."""
    if not _SAFE_ID.fullmatch(event_id):
        raise ValueError(f"unsafe object key part: {event_id!r}")
    return f"events/{event_id}/"


def jpeg_scan_count(data: bytes) -> int:
    """How many scans (SOS segments) a JPEG holds, read from its markers without decoding.

    Linear in the size of the file: segments are skipped by their length, entropy-coded data by
    searching for the next marker (a 0xFF byte not followed by 0x00, a stuffed 0xFF, or a restart
    marker). Stops at EOI or where the structure ends; bytes the decoder would reject are its
    business, not this count's."""
    scans, position = 0, 2
    while position + 1 < len(data):
        if data[position] != 0xFF:
            break
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker == 0xD9:  # EOI
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            position += 2
            continue
        if position + 4 > len(data):
            break
        position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
        if marker == 0xDA:
            scans += 1
            found = _NEXT_MARKER.search(data, position)
            if found is None:
                break
            position = found.start()
    return scans


_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")


def _check_cost(image: Image.Image, data: bytes, photo_format: PhotoFormat):
    """Refuses, before any pixel is decoded, an image whose decode would cost more than any photo."""
    pixels = image.width * image.height
    if pixels > MAX_PHOTO_PIXELS:
        raise _too_large()
    if photo_format.kind == "jpeg":
        scans = jpeg_scan_count(data)
        if scans > MAX_JPEG_SCANS or pixels * scans > MAX_JPEG_PIXEL_SCANS:
            raise InvalidInput(f"The JPEG has {scans} scans, more than its size allows "
                               f"({MAX_JPEG_SCANS} at most, fewer for large images).",
                               code="image_too_complex")


def _decode(data: bytes, photo_format: PhotoFormat) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data), formats=[photo_format.pillow_format])
        _check_cost(image, data, photo_format)
        image.load()
        return ImageOps.exif_transpose(image)
    except InvalidInput:
        raise
    # The warning too: where warnings are errors (tests) Pillow raises it for 89-179 M pixels.
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_large() from None
    # Pillow's parsers meet hostile bytes with many exception types (OSError, SyntaxError,
    # ValueError, struct.error, ...). Whichever it is, these bytes are not a photo we can serve.
    except Exception as error:
        raise UnsupportedMediaType("The file is not a valid image.") from error


def _too_large():
    return InvalidInput(f"The image has more than {MAX_PHOTO_PIXELS // 1_000_000} million pixels.",
                        code="image_too_large")


def _encode_without_metadata(image: Image.Image, photo_format: PhotoFormat) -> bytes:
    options = dict(photo_format.save_options)
    # Palette and grey PNGs keep transparency in info, not in the pixels.
    if "transparency" in image.info:
        options["transparency"] = image.info["transparency"]
    image = _convert_to_srgb(image)
    # Savers fall back to info for some metadata (JPEG comments, PNG ICC profiles), so the
    # image handed to them carries none.
    image.info = {}
    out = io.BytesIO()
    image.save(out, photo_format.pillow_format, **options)
    return out.getvalue()


def _convert_to_srgb(image: Image.Image) -> Image.Image:
    """Dropping a wide-gamut profile (Display P3 on iPhones) unconverted would wash colours out."""
    icc_profile = image.info.get("icc_profile")
    if not icc_profile or image.mode not in ("RGB", "RGBA", "CMYK"):
        return image
    output_mode = "RGBA" if image.mode == "RGBA" else "RGB"
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        return ImageCms.profileToProfile(image, source, _SRGB, outputMode=output_mode)
    except (ImageCms.PyCMSError, OSError):
        # A broken or mismatched profile cannot be honoured; the pixels are still the photo.
        return image
