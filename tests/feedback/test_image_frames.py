"""Every frame of an animated image is decoded, within limits on frames and on pixels over all
frames: a frame cut short is corruption, and a small file cannot cost a gigapixel."""

from __future__ import annotations

import base64
import io
import struct

import pytest
from PIL import Image

from feedback.images import ImageRejected, image_check
from feedback.models import Item, ItemImage

pytestmark = pytest.mark.django_db


def _frames(count: int, size: tuple[int, int] = (64, 48)) -> list[Image.Image]:
    return [Image.effect_noise(size, 40 + 10 * n).convert("RGB") for n in range(count)]


def _animation(fmt: str, count: int = 3) -> bytes:
    first, *rest = _frames(count)
    out = io.BytesIO()
    first.save(out, format=fmt, save_all=True, append_images=rest, duration=100)
    return out.getvalue()


def _gif_of_one_pixel_frames(side: int, frames: int) -> bytes:
    """A GIF of `side`x`side` pixels whose frames each draw one pixel: a few bytes a frame, a
    whole picture of decoding each."""
    screen = b"GIF89a" + struct.pack("<HHBBB", side, side, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    loop = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    frame = (
        b"\x21\xf9\x04\x00\x01\x00\x00\x00"  # graphic control: 10 ms
        + b"\x2c"
        + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
        + b"\x02\x02\x44\x01\x00"  # one pixel of colour 0, LZW-coded
    )
    return screen + loop + frame * frames + b";"


def _send(api_for, engineer, campaign, data: bytes, kind: str):
    body = {
        "prompt": "Q",
        "context": {"images": [f"data:{kind};base64,{base64.b64encode(data).decode()}"]},
        "responses": [{"model": "a", "text": "x"}, {"model": "b", "text": "y"}],
    }
    return api_for(engineer).post(f"/api/v1/campaigns/{campaign.pk}/items/", [body], format="json")


def _gif_frame_data(gif: bytes) -> list[int]:
    """Where the image data of each frame of a GIF starts (its first sub-block)."""
    with Image.open(io.BytesIO(gif)) as image:
        starts = []
        for number in range(image.n_frames):
            image.seek(number)
            starts.append(image.tile[0][2])
    return starts


def test_a_gif_cut_inside_a_later_frame_is_corrupt():
    gif = _animation("GIF")
    second = _gif_frame_data(gif)[1]
    with Image.open(io.BytesIO(gif[: second + 200])) as first_frame:
        first_frame.load()  # the first frame is whole

    # In the second frame's descriptor, in its data, in the last frame.
    for cut in (second - 8, second + 3, second + 200, len(gif) - 10):
        with pytest.raises(ImageRejected, match=r"^is corrupt"):
            image_check(gif[:cut])


def test_a_later_frame_that_does_not_decode_is_a_per_item_error(
    api_for, engineer, pairwise_campaign
):
    gif = bytearray(_animation("GIF"))
    data = _gif_frame_data(bytes(gif))[2]
    gif[data + 1 : data + 1 + gif[data]] = b"\xff" * gif[data]  # codes the LZW table lacks

    res = _send(api_for, engineer, pairwise_campaign, bytes(gif), "image/gif")

    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {
        "items[0].context.images[0]": [
            "image is corrupt (broken data stream when reading image file)"
        ]
    }
    assert ItemImage.objects.count() == 0


@pytest.mark.parametrize(("fmt", "kind"), [("GIF", "gif"), ("PNG", "png"), ("WEBP", "webp")])
def test_an_animation_with_too_many_frames_is_refused(
    api_for, engineer, pairwise_campaign, settings, fmt, kind
):
    settings.IMAGE_MAX_FRAMES = 2
    res = _send(api_for, engineer, pairwise_campaign, _animation(fmt, 3), f"image/{kind}")

    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {
        "items[0].context.images[0]": [
            "image has more than 2 frames; an animation may have at most 2"
        ]
    }

    settings.IMAGE_MAX_FRAMES = 3
    assert (
        _send(api_for, engineer, pairwise_campaign, _animation(fmt, 3), f"image/{kind}").status_code
        == 201
    )


def test_an_animation_over_its_pixels_over_all_frames_is_refused(
    api_for, engineer, pairwise_campaign
):
    # 300 frames of 2000x2000 pixels: 1.2 gigapixels of decoding in 6 kB, under the default
    # limits on frames (1000) and on one picture's pixels (25 million).
    gif = _gif_of_one_pixel_frames(2000, 300)
    assert len(gif) < 10_000

    res = _send(api_for, engineer, pairwise_campaign, gif, "image/gif")

    assert res.status_code == 400
    assert res.json()["error"]["fields"] == {
        "items[0].context.images[0]": [
            "image has frames of 2000x2000 pixels, 104,000,000 in its first 26; an animation "
            "may have at most 100,000,000 pixels over all its frames"
        ]
    }
    assert Item.objects.count() == 0
    within = _gif_of_one_pixel_frames(2000, 25)  # 100,000,000 pixels
    assert _send(api_for, engineer, pairwise_campaign, within, "image/gif").status_code == 201


def test_a_jpeg_of_many_exif_segments_is_refused_before_it_is_read():
    """Pillow joins a JPEG's EXIF segments one to the last: tens of thousands of them took it
    seconds; such a file is refused first, naming the count."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, "JPEG")
    jpeg = buffer.getvalue()
    exif = b"Exif\x00\x00" + b"II*\x00\x08\x00\x00\x00" + b"\x00\x00" + b"\x00\x00\x00\x00"
    segment = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
    many = jpeg[:2] + segment * 5_000 + jpeg[2:]

    with pytest.raises(ImageRejected) as refused:
        image_check(many)

    assert str(refused.value) == "has 5,000 EXIF segments; a JPEG may have at most 100"
    # A camera's single segment is taken.
    assert image_check(jpeg[:2] + segment + jpeg[2:])[0] == "image/jpeg"


def _gif_growing_at_frame_two(side: int, frames: int) -> bytes:
    """A GIF that says it is 1x1, whose first frame is 1x1 and whose later frames are
    `side`x`side` at the corner, each of one colour: Pillow grows the picture to such a frame
    as it reaches it, and decodes it at that size."""

    def gif_of(size: int) -> bytes:
        picture = Image.new("P", (size, size), 0)
        picture.putpalette([0, 0, 0, 255, 255, 255])
        out = io.BytesIO()
        picture.save(out, format="GIF")
        return out.getvalue()

    big = gif_of(side)
    start = big.index(b"\x2c", 13 + 6)  # the frame's descriptor, past the colour table
    return gif_of(1)[:-1] + big[start:-1] * frames + b";"


@pytest.mark.parametrize(
    ("side", "frames", "message"),
    [
        (9000, 1, "is 9000x9000 pixels; at most 8192 pixels a side"),
        (6000, 1, "is 6000x6000 pixels, 36,000,000 in all; an image may have at most 25,000,000"),
        (
            300,
            20,
            "has frames of 300x300 pixels, 1,080,001 in its first 13; an animation may have"
            " at most 1,000,000 pixels over all its frames",
        ),
    ],
)
def test_a_gif_whose_later_frames_reach_past_its_size_is_held_to_the_limits(
    api_for, engineer, pairwise_campaign, settings, side, frames, message
):
    """Declared 1x1, such a GIF passed every limit, counted as 1 pixel a frame, while each
    frame was decoded at its own size (81 million pixels, about 1 GB and a second, for a
    9000x9000 one of 60 KB)."""
    settings.IMAGE_MAX_ANIMATION_PIXELS = 1_000_000
    gif = _gif_growing_at_frame_two(side, frames)
    with Image.open(io.BytesIO(gif)) as declared:
        assert declared.size == (1, 1)

    with pytest.raises(ImageRejected) as refused:
        image_check(gif)
    res = _send(api_for, engineer, pairwise_campaign, gif, "image/gif")

    assert refused.value.args[0] == message
    assert res.status_code == 400, res.json()
    assert res.json()["error"]["fields"] == {"items[0].context.images[0]": [f"image {message}"]}
    assert not Item.objects.exists()
    assert not ItemImage.objects.exists()


def test_a_jpeg_is_counted_at_its_size_though_decoded_at_an_eighth(settings):
    """Decoded at an eighth a side (draft), a 2000x2000 JPEG was charged a 64th of its pixels
    against a batch's budget, which then let 64 times as many through."""
    from feedback.images import BatchImagesOverLimit, PixelBudget

    out = io.BytesIO()
    Image.effect_noise((2000, 2000), 40).convert("RGB").save(out, format="JPEG")
    budget = PixelBudget(10_000_000)

    image_check(out.getvalue(), budget=budget)
    image_check(out.getvalue(), budget=budget)

    assert budget.spent == 8_000_000
    with pytest.raises(BatchImagesOverLimit):
        image_check(out.getvalue(), budget=budget)  # 12 million of 10


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, whole chunk) of each chunk after the signature."""
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append((data[pos + 4 : pos + 8], data[pos : pos + 12 + length]))
        pos += 12 + length
    return chunks


def test_an_apng_frame_without_its_data_is_corrupt():
    # Its control chunk declares the third frame; its data chunk is gone. Pillow's reader
    # stops after two frames without a word.
    apng = _animation("PNG", 3)
    assert image_check(apng)[0] == "image/png"
    chunks = _png_chunks(apng)
    last_data = max(i for i, (kind, _) in enumerate(chunks) if kind == b"fdAT")
    cut = apng[:8] + b"".join(chunk for i, (_, chunk) in enumerate(chunks) if i != last_data)

    with pytest.raises(
        ImageRejected, match=r"is corrupt \(it declares 3 frames; 2 could be read\)"
    ):
        image_check(cut)
