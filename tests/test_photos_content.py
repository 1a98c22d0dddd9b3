"""What leaves prepare_photo: the pixels, upright, in the uploaded format, and nothing else."""

import asyncio
import io
import re
import struct
import zlib

import pytest
from PIL import Image, ImageCms, PngImagePlugin

from domain.errors import InvalidInput, UnsupportedMediaType
from domain.photo_workers import PhotoWorkers
from domain.photos import (
    MAX_PHOTO_PIXELS,
    new_object_key,
    prepare_photo,
    sniff_image_type,
)

GPS_IFD = 0x8825
ORIENTATION = 0x0112
XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b"<rdf:Description>Owner: Jane Secret</rdf:Description></rdf:RDF></x:xmpmeta>"
)


def encode(image, pillow_format, **options):
    out = io.BytesIO()
    image.save(out, pillow_format, **options)
    return out.getvalue()


def exif_with_gps():
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[GPS_IFD] = {1: "N", 2: (52.0, 31.0, 12.5), 3: "E", 4: (13.0, 24.0, 36.0)}
    return exif


def opened(data):
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_sniff_recognises_jpeg_png_and_webp_by_magic_bytes():
    assert sniff_image_type(b"\xff\xd8\xff\xe0rest") == "jpeg"
    assert sniff_image_type(b"\x89PNG\r\n\x1a\nrest") == "png"
    assert sniff_image_type(b"RIFF\x10\x00\x00\x00WEBPVP8 ") == "webp"


@pytest.mark.parametrize(
    "data",
    [b"", b"hello, I am a .jpg", b"GIF89a...", b"RIFF\x10\x00\x00\x00WAVEfmt ", b"\xff\xd8"],
)
def test_sniff_returns_none_for_anything_else(data):
    assert sniff_image_type(data) is None


def test_jpeg_loses_exif_gps_xmp_and_comment():
    original = encode(
        Image.new("RGB", (64, 48), "green"),
        "JPEG",
        exif=exif_with_gps(),
        xmp=XMP,
        comment=b"shot at home",
    )
    assert opened(original).getexif().get_ifd(GPS_IFD)  # the fixture really carries GPS

    prepared = prepare_photo(original)

    assert prepared.kind == "jpeg"
    assert (prepared.content_type, prepared.extension) == ("image/jpeg", "jpg")
    result = opened(prepared.data)
    assert result.format == "JPEG"
    assert result.size == (64, 48)
    assert len(result.getexif()) == 0
    assert not result.getexif().get_ifd(GPS_IFD)
    assert b"Exif" not in prepared.data
    assert b"SecretCam" not in prepared.data
    assert b"Jane Secret" not in prepared.data
    assert b"shot at home" not in prepared.data


def test_png_loses_text_chunks_and_exif():
    text = PngImagePlugin.PngInfo()
    text.add_text("Author", "Jane Secret")
    text.add_text("Comment", "compressed secret", zip=True)
    text.add_itxt("Description", "international secret", lang="en")
    original = encode(Image.new("RGB", (32, 32), "blue"), "PNG", pnginfo=text, exif=exif_with_gps())

    prepared = prepare_photo(original)

    assert prepared.kind == "png"
    assert (prepared.content_type, prepared.extension) == ("image/png", "png")
    result = opened(prepared.data)
    assert result.text == {}
    assert len(result.getexif()) == 0
    for chunk in (b"tEXt", b"zTXt", b"iTXt", b"eXIf"):
        assert chunk not in prepared.data
    assert b"secret" not in prepared.data.lower()


def test_png_keeps_its_alpha_channel():
    image = Image.new("RGBA", (8, 8), (255, 0, 0, 255))
    image.putpixel((0, 0), (0, 0, 0, 0))

    result = opened(prepare_photo(encode(image, "PNG")).data)

    assert result.mode == "RGBA"
    assert result.getpixel((0, 0))[3] == 0
    assert result.getpixel((7, 7)) == (255, 0, 0, 255)


def test_palette_png_keeps_its_transparent_colour():
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 255, 0, 0])
    image.putpixel((0, 0), 0)

    result = opened(prepare_photo(encode(image, "PNG", transparency=0)).data)

    assert result.convert("RGBA").getpixel((0, 0))[3] == 0
    assert result.convert("RGBA").getpixel((7, 7)) == (255, 0, 0, 255)


def test_webp_is_re_encoded_as_webp_without_exif_or_xmp():
    original = encode(Image.new("RGB", (40, 30), "red"), "WEBP", exif=exif_with_gps(), xmp=XMP)

    prepared = prepare_photo(original)

    assert prepared.kind == "webp"
    assert (prepared.content_type, prepared.extension) == ("image/webp", "webp")
    result = opened(prepared.data)
    assert result.format == "WEBP"
    assert result.size == (40, 30)
    assert len(result.getexif()) == 0
    assert b"EXIF" not in prepared.data
    assert b"XMP " not in prepared.data
    assert b"SecretCam" not in prepared.data


def test_exif_orientation_is_applied_to_the_pixels():
    # Stored landscape, red on the left; orientation 6 means "rotate 90° clockwise to display".
    image = Image.new("RGB", (40, 20), "blue")
    image.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[ORIENTATION] = 6

    result = opened(prepare_photo(encode(image, "JPEG", exif=exif)).data)

    assert result.size == (20, 40)
    assert len(result.getexif()) == 0
    top_red, _, top_blue = result.getpixel((10, 5))
    bottom_red, _, bottom_blue = result.getpixel((10, 35))
    assert top_red > 200 and top_blue < 50
    assert bottom_blue > 200 and bottom_red < 50


def srgb_profile_with_red_and_blue_swapped():
    """An RGB profile in which the first channel means blue: a stand-in for any non-sRGB space."""
    profile = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    (tag_count,) = struct.unpack_from(">I", profile, 128)
    entries = {}
    for index in range(tag_count):
        signature, offset, size = struct.unpack_from(">4sII", profile, 132 + 12 * index)
        entries[signature] = (132 + 12 * index, offset, size)
    red_at, red_offset, red_size = entries[b"rXYZ"]
    blue_at, blue_offset, blue_size = entries[b"bXYZ"]
    struct.pack_into(">4sII", profile, red_at, b"rXYZ", blue_offset, blue_size)
    struct.pack_into(">4sII", profile, blue_at, b"bXYZ", red_offset, red_size)
    return bytes(profile)


@pytest.mark.parametrize("pillow_format", ["JPEG", "PNG", "WEBP"])
def test_icc_profile_is_dropped_after_converting_the_pixels_to_srgb(pillow_format):
    original = encode(
        Image.new("RGB", (16, 16), (255, 0, 0)),
        pillow_format,
        icc_profile=srgb_profile_with_red_and_blue_swapped(),
    )

    prepared = prepare_photo(original)

    result = opened(prepared.data)
    assert "icc_profile" not in result.info
    for marker in (b"ICC_PROFILE", b"iCCP", b"ICCP"):
        assert marker not in prepared.data
    red, _, blue = result.getpixel((8, 8))
    assert blue > 200 and red < 50


def test_broken_icc_profile_is_dropped_and_the_photo_kept():
    original = encode(Image.new("RGB", (16, 16), (0, 128, 0)), "JPEG", icc_profile=b"not a profile")

    result = opened(prepare_photo(original).data)

    assert "icc_profile" not in result.info
    assert result.size == (16, 16)


def test_text_bytes_named_like_a_jpeg_are_unsupported():
    with pytest.raises(UnsupportedMediaType):
        prepare_photo(b"this is a text file called holiday.jpg\n")


def test_truncated_jpeg_is_not_a_valid_image():
    photo = encode(Image.effect_noise((256, 256), 64).convert("RGB"), "JPEG")

    with pytest.raises(UnsupportedMediaType, match="not a valid image"):
        prepare_photo(photo[: len(photo) // 2])


def test_jpeg_magic_followed_by_garbage_is_not_a_valid_image():
    with pytest.raises(UnsupportedMediaType, match="not a valid image"):
        prepare_photo(b"\xff\xd8\xff" + b"\x00garbage" * 50)


def png_header_claiming(width, height):
    """A PNG whose header claims a size; the decoder must refuse before allocating pixels."""

    def chunk(kind, body):
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


@pytest.mark.parametrize(
    "width, height",
    [
        (MAX_PHOTO_PIXELS // 1000 + 1, 1000),  # just over our limit
        (100_000, 100_000),  # beyond Pillow's own decompression-bomb limit
    ],
)
def test_image_with_too_many_pixels_is_refused_before_decoding(width, height):
    with pytest.raises(InvalidInput) as refused:
        prepare_photo(png_header_claiming(width, height))

    assert refused.value.code == "image_too_large"


def test_a_photo_worker_gives_the_same_result_and_refusals_in_another_process():
    original = encode(Image.new("RGB", (10, 10), "white"), "PNG")

    async def in_workers():
        workers = PhotoWorkers(cpu_seconds=10, max_workers=1)
        try:
            prepared = await workers.prepare(original)
            with pytest.raises(UnsupportedMediaType):
                await workers.prepare(b"this is a text file called holiday.jpg\n")
            again = await workers.prepare(original)  # the same worker, still in step after a refusal
            return prepared, again
        finally:
            await workers.close()

    prepared, again = asyncio.run(in_workers())
    assert prepared == again == prepare_photo(original)


def test_object_keys_are_fresh_per_photo_and_scoped_to_the_event():
    first = new_object_key("65a1f0c2e4b0a1b2c3d4e5f6", "jpg")
    second = new_object_key("65a1f0c2e4b0a1b2c3d4e5f6", "jpg")

    assert re.fullmatch(r"events/65a1f0c2e4b0a1b2c3d4e5f6/[0-9a-f]{32}\.jpg", first)
    assert first != second


@pytest.mark.parametrize(
    "event_id, extension", [("../etc", "jpg"), ("abc", "jpg/../x"), ("", "png")]
)
def test_object_key_parts_that_could_escape_the_event_folder_are_refused(event_id, extension):
    with pytest.raises(ValueError):
        new_object_key(event_id, extension)
