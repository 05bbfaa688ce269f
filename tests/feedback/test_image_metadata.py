"""Images are stored and served without metadata that can carry text: no model name written by a
generator, no place or camera from a photo's EXIF, no comment. The pixels, colour profile and
animation stay as they were."""

from __future__ import annotations

import base64
import io
import struct
import tracemalloc
import zlib

import pytest
from PIL import ExifTags, Image, ImageCms, ImageSequence, PngImagePlugin

from feedback import image_metadata
from feedback.images import image_check
from feedback.models import Item, ItemImage

pytestmark = pytest.mark.django_db

MODEL = b"sdxl-model-a"
SECRETS = (MODEL, b"SpyCam", b"xmp-secret", b"a comment")


def _icc() -> bytes:
    # Not the same bytes at every call: the profile records when it was made.
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _exif() -> Image.Exif:
    """Make, GPS and Orientation (6: turn 90° clockwise to show), as a phone writes them."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SpyCam"
    exif[ExifTags.Base.Orientation] = 6
    exif.get_ifd(ExifTags.IFD.GPSInfo).update(
        {ExifTags.GPS.GPSLatitudeRef: "N", ExifTags.GPS.GPSLatitude: (48.0, 51.0, 29.0)}
    )
    return exif


def _picture(mode: str = "RGB", size: tuple[int, int] = (40, 30)) -> Image.Image:
    """Not one colour: a gradient and noise, so that a change of pixels shows."""
    noise = Image.effect_noise(size, 60)
    gradient = Image.linear_gradient("L").resize(size)
    return Image.merge("RGB", [noise, gradient, noise.transpose(0)]).convert(mode)


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def _data_url(data: bytes, kind: str) -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


def _store_and_serve(client, campaign, data: bytes, kind: str) -> tuple[dict, bytes]:
    """Send the image in a response (as a model's output would carry it): (what the item
    keeps of it, the bytes served)."""
    body = {
        "prompt": "Draw a cat",
        "responses": [
            {"model": "a", "text": "here", "images": [_data_url(data, kind)]},
            {"model": "b", "text": "there"},
        ],
    }
    res = client.post(f"/api/v1/campaigns/{campaign.pk}/items/", [body], format="json")
    assert res.status_code == 201, res.json()
    stored = next(r.images[0] for r in Item.objects.get().responses.all() if r.images)
    served = client.get(f"/api/v1/images/{stored['id']}/")
    assert served.status_code == 200
    assert served["Content-Type"] == kind
    return stored, b"".join(served.streaming_content)


def _frames(data: bytes) -> list[bytes]:
    with Image.open(io.BytesIO(data)) as image:
        return [frame.convert("RGBA").tobytes() for frame in ImageSequence.Iterator(image)]


def _assert_no_secrets(data: bytes) -> None:
    found = [secret for secret in SECRETS if secret in data]
    assert not found, f"served with {found}"


def test_a_png_loses_its_text_chunks_and_keeps_its_pixels_palette_and_colour_profile(
    api_for, engineer, pairwise_campaign
):
    text = PngImagePlugin.PngInfo()
    text.add_text("parameters", "a cat, Steps: 30, Sampler: Euler, Model: sdxl-model-a")
    text.add_text("workflow", '{"ckpt_name": "sdxl-model-a.safetensors"}', zip=True)
    text.add_itxt("Comment", "a comment", lang="en")
    picture = _picture("P")
    png = _save(picture, "PNG", pnginfo=text, exif=_exif(), icc_profile=_icc(), transparency=3)
    assert all(secret in png for secret in (MODEL, b"SpyCam", b"a comment"))

    stored, served = _store_and_serve(api_for(engineer), pairwise_campaign, png, "image/png")

    _assert_no_secrets(served)
    assert (stored["width"], stored["height"]) == (40, 30)
    with Image.open(io.BytesIO(png)) as before, Image.open(io.BytesIO(served)) as after:
        assert after.mode == before.mode == "P"
        assert after.tobytes() == before.tobytes()
        assert after.getpalette() == before.getpalette()
        assert after.info["transparency"] == 3
        assert after.info["icc_profile"] == before.info["icc_profile"]
        assert dict(after.getexif()) == {ExifTags.Base.Orientation: 6}
        assert not {"parameters", "workflow", "Comment"} & set(after.info)


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def test_a_16_bit_png_keeps_its_samples_and_gamma(api_for, engineer, pairwise_campaign):
    # Pillow reads a 16-bit RGB PNG at 8 bits a sample and writes no gAMA: the chunks are
    # copied, not the picture saved again.
    samples = struct.pack(">6H", 1000, 2000, 3000, 65535, 1, 257)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 1, 16, 2, 0, 0, 0))
        + _png_chunk(b"gAMA", struct.pack(">I", 45455))
        + _png_chunk(b"tEXt", b"parameters\0Model: sdxl-model-a")
        + _png_chunk(b"IDAT", zlib.compress(b"\0" + samples))
        + _png_chunk(b"IEND", b"")
    )

    _, served = _store_and_serve(api_for(engineer), pairwise_campaign, png, "image/png")

    _assert_no_secrets(served)
    assert served == png.replace(_png_chunk(b"tEXt", b"parameters\0Model: sdxl-model-a"), b"")


def _png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 8
    while pos < len(png):
        length = int.from_bytes(png[pos : pos + 4], "big")
        chunks.append((png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def _png_with(png: bytes, kind: bytes, payload: bytes) -> bytes:
    """`png` with its first `kind` chunk holding `payload`, or with such a chunk added before
    its first IDAT."""
    chunks = _png_chunks(png)
    kinds = [k for k, _ in chunks]
    if kind in kinds:
        chunks[kinds.index(kind)] = (kind, payload)
    else:
        chunks.insert(kinds.index(b"IDAT"), (kind, payload))
    return png[:8] + b"".join(_png_chunk(k, p) for k, p in chunks)


def _two_colour_png() -> bytes:
    picture = Image.new("P", (8, 2))
    picture.putpalette([0, 0, 0, 255, 255, 255])
    picture.putdata([0, 1] * 8)
    return _save(picture, "PNG", transparency=0, dpi=(72, 72))


@pytest.mark.parametrize(
    ("kind", "payload", "kept"),
    [
        # Of a size the format fixes, then text: libpng ignores it (browsers show no change).
        (b"pHYs", struct.pack(">IIB", 2835, 2835, 1) + MODEL, None),
        (b"gAMA", struct.pack(">I", 45455) + MODEL, None),
        (b"sRGB", b"\x00" + MODEL, None),
        (b"bKGD", b"\x01" + MODEL, None),
        (b"tRNS", b"\x00\xff" + MODEL, None),  # an alpha for more colours than the palette's 2
        # A 1-bit image indexes 2 colours: the palette's others are no pixel's.
        (b"PLTE", b"\x00\x00\x00\xff\xff\xff" + MODEL, b"\x00\x00\x00\xff\xff\xff"),
        (b"iCCP", MODEL + b"\x00\x00" + zlib.compress(b"profile"), None),
        (b"IEND", MODEL, b""),
    ],
    ids=["pHYs", "gAMA", "sRGB", "bKGD", "tRNS", "PLTE", "iCCP", "IEND"],
)
def test_a_png_keeps_no_text_after_the_numbers_its_chunks_hold(
    api_for, engineer, pairwise_campaign, kind, payload, kept
):
    png = _png_with(_two_colour_png(), kind, payload)
    assert image_check(png)[0] == "image/png"

    _, served = _store_and_serve(api_for(engineer), pairwise_campaign, png, "image/png")

    _assert_no_secrets(served)
    chunks = dict(_png_chunks(served))
    if kind == b"iCCP":  # the profile is kept, under a name of ours
        assert chunks[kind] == b"ICC Profile\x00\x00" + zlib.compress(b"profile")
    else:
        assert chunks.get(kind) == kept
    with Image.open(io.BytesIO(png)) as before, Image.open(io.BytesIO(served)) as after:
        assert after.tobytes() == before.tobytes()


def test_a_png_that_draws_with_no_palette_loses_the_one_it_suggests(
    api_for, engineer, pairwise_campaign
):
    png = _png_with(_save(_picture(), "PNG"), b"PLTE", MODEL * 3)

    _, served = _store_and_serve(api_for(engineer), pairwise_campaign, png, "image/png")

    _assert_no_secrets(served)
    assert b"PLTE" not in dict(_png_chunks(served))
    assert _frames(served) == _frames(png)


@pytest.mark.parametrize("kind", [b"IHDR", b"acTL", b"fcTL"])
def test_a_png_whose_header_or_animation_chunk_is_too_long_is_corrupt(kind):
    frames = [_picture(), _picture().rotate(180)]
    apng = _save(frames[0], "PNG", save_all=True, append_images=frames[1:])
    payload = next(p for k, p in _png_chunks(apng) if k == kind)
    png = _png_with(apng, kind, payload + MODEL)
    assert image_check(png)[0] == "image/png"

    with pytest.raises(image_metadata.MetadataError, match=f"has a {kind.decode()} chunk of"):
        image_metadata.image_strip_metadata(png, "image/png")


def test_a_jpeg_loses_its_exif_xmp_and_comment_but_keeps_its_orientation_and_pixels(
    api_for, engineer, pairwise_campaign
):
    jpeg = _save(
        _picture(),
        "JPEG",
        quality=90,
        exif=_exif(),
        icc_profile=_icc(),
        comment=b"a comment",
        xmp=b"<x:xmpmeta>xmp-secret</x:xmpmeta>",
    )
    assert all(secret in jpeg for secret in (b"SpyCam", b"xmp-secret", b"a comment"))

    stored, served = _store_and_serve(api_for(engineer), pairwise_campaign, jpeg, "image/jpeg")

    _assert_no_secrets(served)
    assert (stored["width"], stored["height"]) == (40, 30)
    with Image.open(io.BytesIO(jpeg)) as before, Image.open(io.BytesIO(served)) as after:
        # The scans are copied, not encoded again: the same pixels, not nearly the same.
        assert after.tobytes() == before.tobytes()
        assert after.info["icc_profile"] == before.info["icc_profile"]
        assert "comment" not in after.info
        assert "xmp" not in after.info
        exif = after.getexif()
        assert dict(exif) == {ExifTags.Base.Orientation: 6}
        assert not exif.get_ifd(ExifTags.IFD.GPSInfo)
    assert ItemImage.objects.get().size_bytes == len(served)


@pytest.mark.parametrize(
    "between",
    [
        # 0xFF 0 is no marker: libjpeg skips it and what follows up to the next 0xFF.
        b"\xff\x00\x00\x15Model: sdxl-model-a",
        b"\x00\x00sdxl-model-a",
        # A DNL segment, which libjpeg skips whatever its length.
        b"\xff\xdc\x00\x10\x00\x1esdxl-model-a",
        b"\xff\xd0\xff\xd1",  # restart markers, which carry nothing outside a scan
    ],
    ids=["ff00-then-text", "text", "dnl", "restart"],
)
def test_a_jpeg_loses_what_decoders_skip_between_its_segments(
    api_for, engineer, pairwise_campaign, between
):
    clean = _save(_picture(), "JPEG", quality=90)
    frame = clean.index(b"\xff\xc0")
    jpeg = clean[:frame] + between + clean[frame:]
    assert image_check(jpeg)[0] == "image/jpeg"

    _, served = _store_and_serve(api_for(engineer), pairwise_campaign, jpeg, "image/jpeg")

    _assert_no_secrets(served)
    assert served == image_metadata.image_strip_metadata(clean, "image/jpeg")
    with Image.open(io.BytesIO(jpeg)) as before, Image.open(io.BytesIO(served)) as after:
        assert after.tobytes() == before.tobytes()


def test_a_jpeg_keeps_the_orientation_of_its_first_exif_only(api_for, engineer, pairwise_campaign):
    # Browsers turn a photo by its first EXIF; the others are read by nothing.
    jpeg = _save(_picture(), "JPEG")
    upside_down = Image.Exif()
    upside_down[ExifTags.Base.Orientation] = 3
    second = _jpeg_segment(0xE1, upside_down.tobytes())
    jpeg = jpeg[:2] + _jpeg_segment(0xE1, _exif().tobytes()) + second * 3 + jpeg[2:]

    _, served = _store_and_serve(api_for(engineer), pairwise_campaign, jpeg, "image/jpeg")

    _assert_no_secrets(served)
    assert served.count(b"Exif\0\0") == 1
    with Image.open(io.BytesIO(served)) as after:
        assert dict(after.getexif()) == {ExifTags.Base.Orientation: 6}


def test_a_cmyk_jpeg_keeps_the_adobe_segment_that_says_how_to_read_its_colours(
    api_for, engineer, pairwise_campaign
):
    jpeg = _save(_picture("CMYK"), "JPEG", comment=b"a comment")
    assert b"Adobe" in jpeg

    _, served = _store_and_serve(api_for(engineer), pairwise_campaign, jpeg, "image/jpeg")

    _assert_no_secrets(served)
    assert b"Adobe" in served
    with Image.open(io.BytesIO(jpeg)) as before, Image.open(io.BytesIO(served)) as after:
        assert after.mode == "CMYK"
        assert after.tobytes() == before.tobytes()


def _jpeg_segments(jpeg: bytes) -> dict[int, bytes]:
    """The data of each marker segment before the first scan, by marker (the last of each)."""
    segments, pos = {}, 2
    while jpeg[pos + 1] != 0xDA:
        length = int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
        segments[jpeg[pos + 1]] = jpeg[pos + 4 : pos + 2 + length]
        pos += 2 + length
    return segments


def test_a_jpeg_keeps_no_thumbnail_or_text_in_its_jfif_and_adobe_segments(
    api_for, engineer, pairwise_campaign
):
    clean = _save(_picture("CMYK"), "JPEG", quality=90)
    jfif = b"JFIF\0\x01\x01\x01\x00\x48\x00\x48"
    adobe = _jpeg_segments(clean)[0xEE]
    assert len(adobe) == 12
    # A thumbnail of 4x1 pixels (its 12 bytes any text), and text after Adobe's 12 bytes.
    jpeg = (
        clean[:2]
        + _jpeg_segment(0xE0, jfif + b"\x04\x01" + MODEL)
        + clean[2:].replace(_jpeg_segment(0xEE, adobe), _jpeg_segment(0xEE, adobe + MODEL))
    )
    assert image_check(jpeg)[0] == "image/jpeg"

    _, served = _store_and_serve(api_for(engineer), pairwise_campaign, jpeg, "image/jpeg")

    _assert_no_secrets(served)
    segments = _jpeg_segments(served)
    assert segments[0xE0] == jfif + b"\x00\x00"
    assert segments[0xEE] == adobe
    with Image.open(io.BytesIO(jpeg)) as before, Image.open(io.BytesIO(served)) as after:
        assert after.mode == "CMYK"
        assert after.tobytes() == before.tobytes()
        assert after.info["dpi"] == (72, 72)


def test_a_jpeg_with_a_multi_picture_segment_is_stored_as_its_first_picture(
    api_for, engineer, pairwise_campaign
):
    first, second = _picture(size=(64, 48)), _picture(size=(32, 24))
    mpo = _save(first, "MPO", save_all=True, append_images=[second], exif=_exif())

    stored, served = _store_and_serve(api_for(engineer), pairwise_campaign, mpo, "image/jpeg")

    _assert_no_secrets(served)
    assert b"MPF\0" not in served
    assert (stored["width"], stored["height"]) == (64, 48)
    with Image.open(io.BytesIO(mpo)) as before, Image.open(io.BytesIO(served)) as after:
        assert after.format == "JPEG"
        assert after.tobytes() == before.tobytes()


@pytest.mark.parametrize(
    "options", [{"quality": 80}, {"lossless": True}], ids=["lossy", "lossless"]
)
def test_a_webp_loses_its_exif_and_xmp_chunks_without_being_encoded_again(
    api_for, engineer, pairwise_campaign, options
):
    webp = _save(
        _picture("RGBA"),
        "WEBP",
        exif=_exif(),
        xmp=b"<x>xmp-secret</x>",
        icc_profile=_icc(),
        **options,
    )
    assert all(secret in webp for secret in (b"SpyCam", b"xmp-secret"))

    stored, served = _store_and_serve(api_for(engineer), pairwise_campaign, webp, "image/webp")

    _assert_no_secrets(served)
    assert (stored["width"], stored["height"]) == (40, 30)
    with Image.open(io.BytesIO(webp)) as before, Image.open(io.BytesIO(served)) as after:
        assert after.tobytes() == before.tobytes()
        assert after.info["icc_profile"] == before.info["icc_profile"]
        assert "xmp" not in after.info
        assert dict(after.getexif()) == {ExifTags.Base.Orientation: 6}
    # The picture's own chunk is copied, not encoded again.
    kind = b"VP8L" if options.get("lossless") else b"VP8 "
    start = webp.index(kind)
    assert webp[start : start + 8 + int.from_bytes(webp[start + 4 : start + 8], "little")] in served


def test_an_animated_webp_keeps_every_frame(api_for, engineer, pairwise_campaign):
    frames = [_picture("RGBA"), _picture("RGBA").rotate(180)]
    webp = _save(frames[0], "WEBP", save_all=True, append_images=frames[1:], xmp=b"xmp-secret")

    _, served = _store_and_serve(api_for(engineer), pairwise_campaign, webp, "image/webp")

    _assert_no_secrets(served)
    assert _frames(served) == _frames(webp)
    assert len(_frames(served)) == 2


def _webp_chunks(webp: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 12
    while pos < len(webp):
        size = int.from_bytes(webp[pos + 4 : pos + 8], "little")
        chunks.append((webp[pos : pos + 4], webp[pos + 8 : pos + 8 + size]))
        pos += 8 + size + size % 2
    return chunks


def _webp_of(chunks: list[tuple[bytes, bytes]]) -> bytes:
    body = b"WEBP" + b"".join(
        kind + len(data).to_bytes(4, "little") + data + b"\0" * (len(data) % 2)
        for kind, data in chunks
    )
    return b"RIFF" + len(body).to_bytes(4, "little") + body


def test_an_animated_webp_keeps_no_text_in_its_headers(api_for, engineer, pairwise_campaign):
    frames = [_picture("RGBA"), _picture("RGBA").rotate(180)]
    clean = _webp_of(
        _webp_chunks(_save(frames[0], "WEBP", save_all=True, append_images=frames[1:]))
    )
    altered = []
    for kind, data in _webp_chunks(clean):
        if kind == b"VP8X":  # 3 reserved bytes after the flags, which decoders ignore
            data = data[:1] + b"gpt" + data[4:]
        elif kind == b"ANIM":  # a background colour and a loop count, then text
            data += MODEL
        elif kind == b"ANMF":  # 6 reserved bits in the frame's flags
            data = data[:15] + bytes((data[15] | 0xFC,)) + data[16:]
        altered.append((kind, data))
    webp = _webp_of(altered)
    assert image_check(webp)[0] == "image/webp"

    _, served = _store_and_serve(api_for(engineer), pairwise_campaign, webp, "image/webp")

    _assert_no_secrets(served)
    assert served == clean
    assert _frames(served) == _frames(webp)


@pytest.mark.parametrize(("kind", "size"), [(b"VP8X", 12), (b"VP8X", 9), (b"ANIM", 5)])
def test_a_webp_whose_header_is_not_of_its_size_is_corrupt(kind, size):
    frames = [_picture("RGBA"), _picture("RGBA").rotate(180)]
    chunks = _webp_chunks(_save(frames[0], "WEBP", save_all=True, append_images=frames[1:]))
    webp = _webp_of([(k, (d + MODEL)[:size] if k == kind else d) for k, d in chunks])

    with pytest.raises(image_metadata.MetadataError, match=f"has a {kind.decode()} chunk of"):
        image_metadata.image_strip_metadata(webp, "image/webp")


def _gif_with_xmp_and_comment() -> bytes:
    frames = [_picture("P"), _picture("P").rotate(180)]
    gif = _save(
        frames[0], "GIF", save_all=True, append_images=frames[1:], loop=0, comment=b"a comment"
    )
    # XMP lives in an application extension, after the logical screen and its colour table.
    xmp = b"\x21\xff\x0bXMP DataXMP" + b"\x0axmp-secret" + b"\x00"
    start = 13 + (3 << ((gif[10] & 7) + 1))
    return gif[:start] + xmp + gif[start:]


def test_a_gif_loses_its_comments_and_xmp_and_keeps_its_frames_and_loop(
    api_for, engineer, pairwise_campaign
):
    gif = _gif_with_xmp_and_comment()
    with Image.open(io.BytesIO(gif)) as before:
        assert before.n_frames == 2
        assert before.info["comment"] == b"a comment"

    stored, served = _store_and_serve(api_for(engineer), pairwise_campaign, gif, "image/gif")

    _assert_no_secrets(served)
    assert (stored["width"], stored["height"]) == (40, 30)
    assert _frames(served) == _frames(gif)
    with Image.open(io.BytesIO(served)) as after:
        assert after.n_frames == 2
        assert after.info["loop"] == 0
        assert "comment" not in after.info


GIF_CONTROL = b"\x21\xf9\x04\x00\x0a\x00\x00\x00"  # 100 ms a frame
GIF_LOOP = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop for ever


def _gif_of_two_pixels(control: bytes = GIF_CONTROL, loop: bytes = GIF_LOOP) -> bytes:
    """A GIF of two frames of one pixel, black then white, each after `control`."""
    screen = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
    # The pixel, LZW-coded: clear, colour 0 or 1, end.
    black, white = b"\x02\x02\x44\x01\x00", b"\x02\x02\x4c\x01\x00"
    return screen + loop + control + frame + black + control + frame + white + b";"


@pytest.mark.parametrize(
    ("control", "loop"),
    [
        # The control's 4 bytes in a longer sub-block, or followed by another sub-block.
        (b"\x21\xf9\x10\x00\x0a\x00\x00sdxl-model-a\x00", GIF_LOOP),
        (b"\x21\xf9\x04\x00\x0a\x00\x00\x0csdxl-model-a\x00", GIF_LOOP),
        # The loop count (1, then 0 for ever) likewise.
        (GIF_CONTROL, b"\x21\xff\x0bNETSCAPE2.0\x0f\x01\x00\x00sdxl-model-a\x00"),
        (GIF_CONTROL, b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x0csdxl-model-a\x00"),
    ],
    ids=["control-longer", "control-sub-block", "loop-longer", "loop-sub-block"],
)
def test_a_gif_keeps_only_the_bytes_its_timing_and_loop_count_are_read_from(
    api_for, engineer, pairwise_campaign, control, loop
):
    gif = _gif_of_two_pixels(control, loop)
    with Image.open(io.BytesIO(gif)) as before:
        assert image_check(gif)[0] == "image/gif"
        assert before.info["loop"] == 0
        assert [frame.info["duration"] for frame in ImageSequence.Iterator(before)] == [100, 100]

    _, served = _store_and_serve(api_for(engineer), pairwise_campaign, gif, "image/gif")

    _assert_no_secrets(served)
    assert served == _gif_of_two_pixels()
    assert _frames(served) == _frames(gif)


def test_a_gif_whose_graphic_control_is_short_of_its_4_bytes_is_corrupt():
    # Pillow reads a control of 3 bytes without a transparent colour; the format fixes 4.
    gif = _gif_of_two_pixels(control=b"\x21\xf9\x03\x00\x0a\x00\x00")
    assert image_check(gif)[0] == "image/gif"

    with pytest.raises(image_metadata.MetadataError, match="graphic control extension of 3"):
        image_metadata.image_strip_metadata(gif, "image/gif")


def test_a_gif_without_its_trailer_is_corrupt(api_for, engineer, pairwise_campaign):
    gif = _gif_with_xmp_and_comment()
    assert gif.endswith(b";")
    body = {
        "prompt": "Q",
        "context": {"images": [_data_url(gif[:-1], "image/gif")]},
        "responses": [{"model": "a", "text": "x"}, {"model": "b", "text": "y"}],
    }

    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/", [body], format="json"
    )

    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {
        "items[0].context.images[0]": ["image is corrupt (ends before its trailer)"]
    }
    assert ItemImage.objects.count() == 0


def test_a_gif_keeps_its_frames_and_loses_the_stray_bytes_between_its_blocks(
    api_for, engineer, pairwise_campaign
):
    # Pillow and browsers skip a byte that starts no block; some writers leave a 0 before the
    # trailer.
    clean = _gif_with_xmp_and_comment()
    second = clean.index(b"\x21\xf9", clean.index(b"\x2c"))  # the second frame's control
    gif = clean[:second] + b"\x00\x00sdxl-model-a\x00" + clean[second:-1] + b"\x00;"
    assert image_check(gif)[0] == "image/gif"

    _, served = _store_and_serve(api_for(engineer), pairwise_campaign, gif, "image/gif")

    _assert_no_secrets(served)
    assert _frames(served) == _frames(gif)
    assert served == image_metadata.image_strip_metadata(clean, "image/gif")


def test_copies_of_a_picture_with_other_metadata_are_stored_once(
    api_for, engineer, pairwise_campaign
):
    picture = _picture()
    copies = []
    for model in ("sdxl-model-a", "sdxl-model-b"):
        text = PngImagePlugin.PngInfo()
        text.add_text("parameters", f"Model: {model}")
        copies.append(_data_url(_save(picture, "PNG", pnginfo=text), "image/png"))
    body = {
        "prompt": "Q",
        "context": {"images": copies},
        "responses": [{"model": "a", "text": "x"}, {"model": "b", "text": "y"}],
    }

    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/", [body], format="json"
    )

    assert res.status_code == 201, res.json()
    images = Item.objects.get().context["images"]
    assert images[0]["id"] == images[1]["id"]
    assert ItemImage.objects.count() == 1


# --- files of many small blocks ---------------------------------------------------------------


def _png_of_many_chunks(chunks: int) -> bytes:
    """A PNG whose picture data is split into `chunks` IDAT chunks (the last takes the rest)."""
    picture = _picture(size=(128, 128))
    raw = b"".join(b"\0" + picture.tobytes()[row * 384 : (row + 1) * 384] for row in range(128))
    stream = zlib.compress(raw)
    assert len(stream) > chunks
    pieces = [stream[n : n + 1] for n in range(chunks - 1)] + [stream[chunks - 1 :]]
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 128, 128, 8, 2, 0, 0, 0))
        + b"".join(_png_chunk(b"IDAT", piece) for piece in pieces)
        + _png_chunk(b"IEND", b"")
    )


def _jpeg_of_many_segments(segments: int) -> bytes:
    """A JPEG with `segments` restart-interval segments (6 bytes each) before its frame."""
    jpeg = _save(_picture(), "JPEG")
    return jpeg[:2] + b"\xff\xdd\x00\x04\x00\x00" * segments + jpeg[2:]


def _gif_of_many_blocks(blocks: int) -> bytes:
    """A GIF with `blocks` graphic control extensions (8 bytes each) before its frame."""
    gif = _save(_picture("P"), "GIF")
    start = 13 + (3 << ((gif[10] & 7) + 1))
    return gif[:start] + b"\x21\xf9\x04\x00\x00\x00\x00\x00" * blocks + gif[start:]


def _webp_of_many_chunks(chunks: int) -> bytes:
    """A WebP followed by `chunks` empty chunks of a kind no decoder knows (8 bytes each)."""
    webp = _save(_picture(), "WEBP", quality=80)
    body = webp[12:] + b"ZZZZ\0\0\0\0" * chunks
    return b"RIFF" + (len(body) + 4).to_bytes(4, "little") + b"WEBP" + body


MANY_BLOCKS = {
    "image/png": (_png_of_many_chunks, "chunks"),
    "image/jpeg": (_jpeg_of_many_segments, "segments"),
    "image/gif": (_gif_of_many_blocks, "blocks"),
    "image/webp": (_webp_of_many_chunks, "chunks"),
}


@pytest.mark.parametrize("kind", MANY_BLOCKS)
def test_an_image_of_more_blocks_than_the_limit_is_corrupt(
    api_for, engineer, pairwise_campaign, monkeypatch, kind
):
    # Pillow decodes each of these; walking millions of such blocks would take seconds.
    monkeypatch.setattr(image_metadata, "MAX_BLOCKS", 50)
    make, blocks = MANY_BLOCKS[kind]
    body = {
        "prompt": "Q",
        "context": {"images": [_data_url(make(60), kind)]},
        "responses": [{"model": "a", "text": "x"}, {"model": "b", "text": "y"}],
    }

    res = api_for(engineer).post(
        f"/api/v1/campaigns/{pairwise_campaign.pk}/items/", [body], format="json"
    )

    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {
        "items[0].context.images[0]": [f"image is corrupt (has more than 50 {blocks})"]
    }
    assert ItemImage.objects.count() == 0


@pytest.mark.parametrize("kind", MANY_BLOCKS)
def test_taking_the_metadata_out_takes_memory_by_the_file_not_by_its_blocks(kind):
    make, _ = MANY_BLOCKS[kind]
    data = make(20_000)
    assert image_check(data)[0] == kind

    tracemalloc.start()
    try:
        stripped = image_metadata.image_strip_metadata(data, kind)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    # The copy and what it is written into; a Python object a block would be several times it.
    assert peak < 3 * len(data)
    assert _frames(stripped) == _frames(data)
