"""Metadata taken out of an image before it is stored: what an expert is served carries no text.

Generators write their name and settings into the files they make (Stable Diffusion's PNG
`parameters`, ComfyUI's workflow, C2PA provenance in a JUMBF box), cameras and phones write
where and with what a photo was taken (EXIF GPS, make, model), editors add XMP and IPTC. An
expert reviews blind (DESIGN.md, invariant 3), so none of it may reach them.

Each format's container is rewritten, not its pixels: the chunks or segments that draw, colour
or animate the picture are copied byte for byte and every other one goes. Pillow would have to
decode and encode again, which loses quality for a lossy JPEG or WebP, and even a PNG loses its
16-bit samples (Pillow reads RGB and RGBA at 8 bits a sample) and its gAMA and cHRM chunks.
Kept everywhere: the ICC profile (colour) and the EXIF Orientation, rewritten as an EXIF that
holds that one tag (browsers turn a photo by it; without it a phone's photo shows on its side).

Nor is a byte kept that decoders skip, where text would be served unseen: what lies between
blocks, and what follows the numbers of a kept block whose size the format fixes (such a block
of another size is written at its size, dropped or refused as corrupt, as decoders treat it).

Called on an image Pillow has decoded in full (images.image_check); a structure that cannot be
walked is refused as corrupt, as is a file that ends before its end (GIF trailer, PNG IEND,
JPEG end-of-image), and what follows that end is dropped. So is a file of more than MAX_BLOCKS
chunks, segments or blocks: real images have a few thousand at most, and each costs a step of
Python, so 10 MiB of the smallest ones a decoder accepts would take seconds. What is kept is
written into one buffer, as slices of the file, never as a Python object a block: the memory
taken is that of the file and its copy, however many blocks it has.
"""

from __future__ import annotations

import re
import struct
import warnings
from collections.abc import Iterator

from PIL import ExifTags, Image

# The most chunks (PNG, WebP), segments (JPEG) or blocks (GIF) a file may have, its sub-blocks
# and stray bytes not counted. An APNG or a GIF of IMAGE_MAX_FRAMES (1,000) frames has a few
# thousand; a PNG written a row an IDAT, 8,192 at most.
MAX_BLOCKS = 100_000


class MetadataError(ValueError):
    """The container cannot be walked: the image is refused as corrupt."""


class _BlockCount:
    """The blocks walked so far, refused past MAX_BLOCKS."""

    def __init__(self, what: str) -> None:
        self.what, self.count = what, 0

    def add(self) -> None:
        self.count += 1
        if self.count > MAX_BLOCKS:
            raise MetadataError(f"has more than {MAX_BLOCKS:,} {self.what}")


def image_strip_metadata(data: bytes, content_type: str) -> bytes:
    """The image without metadata that can carry text (see the module's docstring)."""
    strip = {
        "image/png": _png,
        "image/jpeg": _jpeg,
        "image/webp": _webp,
        "image/gif": _gif,
    }[content_type]
    try:
        return strip(data)
    except IndexError:  # a length or a flag byte read past the end
        raise MetadataError("ends in the middle of a block") from None


def _orientation_only(exif: bytes) -> bytes | None:
    """The TIFF bytes of an EXIF that holds only `exif`'s Orientation, or None when it has
    none other than 1 (as stored) or cannot be read.

    Called on a file's first EXIF only, the one browsers turn a photo by: each costs Pillow a
    parse (40 µs), and a file can hold a hundred thousand."""
    found = Image.Exif()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns of a corrupt EXIF and reads on
            found.load(exif)
            orientation = found.get(ExifTags.Base.Orientation)  # the tags are read here
    except (SyntaxError, ValueError, OSError, EOFError, struct.error):
        return None
    if not isinstance(orientation, int) or not 2 <= orientation <= 8:
        return None
    minimal = Image.Exif()
    minimal[ExifTags.Base.Orientation] = orientation
    return minimal.tobytes()[len(b"Exif\0\0") :]  # the prefix a JPEG puts before it


# --- PNG: chunks ------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# What draws the picture (the critical chunks, transparency, APNG's frames) or sets its
# colour, gamma and pixel size. tEXt, zTXt, iTXt, eXIf (replaced by one holding only
# Orientation), tIME, sPLT (it has a name), caBX (C2PA) and any other chunk go.
PNG_KEPT = frozenset(
    {
        *(b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS"),
        *(b"iCCP", b"sRGB", b"gAMA", b"cHRM", b"cICP", b"mDCV", b"cLLI", b"sBIT"),
        *(b"pHYs", b"bKGD", b"acTL", b"fcTL", b"fdAT"),
    }
)
# Kept chunks hold numbers of sizes the format fixes, so that no text can follow them. Of
# another size, the header and APNG's are corrupt (libpng refuses the file or its frames);
# any other is dropped, as libpng ignores it (and so browsers do).
PNG_SIZES = {
    **{b"IHDR": 13, b"acTL": 8, b"fcTL": 26},
    **{b"gAMA": 4, b"cHRM": 32, b"sRGB": 1, b"pHYs": 9, b"cICP": 4, b"cLLI": 8, b"mDCV": 24},
}
PNG_SIZE_REQUIRED = frozenset({b"IHDR", b"acTL", b"fcTL"})
# Sizes by colour type (0 grey, 2 RGB, 3 palette, 4 grey and alpha, 6 RGBA); a type not
# listed has none of that chunk. A palette image's tRNS has an alpha for up to every colour.
PNG_PALETTE = 3
PNG_COLOUR_SIZES = {
    b"sBIT": {0: 1, 2: 3, 3: 3, 4: 2, 6: 4},
    b"bKGD": {0: 2, 2: 6, 3: 1, 4: 2, 6: 6},
    b"tRNS": {0: 2, 2: 6},
}
# The name of an iCCP chunk is text of the writer's choosing; it is written as Pillow's.
PNG_ICC_NAME = b"ICC Profile"


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    import zlib

    crc = zlib.crc32(kind + payload)
    return len(payload).to_bytes(4, "big") + kind + payload + crc.to_bytes(4, "big")


def _png(data: bytes) -> bytes:
    if not data.startswith(PNG_SIGNATURE):
        raise MetadataError("is not a PNG")
    view, out, pos = memoryview(data), bytearray(PNG_SIGNATURE), len(PNG_SIGNATURE)
    chunks = _BlockCount("chunks")
    depth = colour = -1  # from the header
    exif_read = False
    colours = 0  # in the palette
    while True:
        chunks.add()
        if pos + 12 > len(data):
            raise MetadataError("ends before its IEND chunk")
        length, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        end = pos + 12 + length  # length, type, data, CRC
        if end > len(data):
            raise MetadataError(f"ends inside its {kind!r} chunk")
        if colour < 0 and kind != b"IHDR":
            raise MetadataError("does not start with its IHDR chunk")
        by_colour = PNG_COLOUR_SIZES.get(kind)
        size = by_colour.get(colour) if by_colour is not None else PNG_SIZES.get(kind)
        if kind == b"IHDR" and length == 13:
            depth, colour = data[pos + 16], data[pos + 17]
        if kind == b"PLTE":
            if colour != PNG_PALETTE:
                pass  # a suggested palette, or one a grey image ignores: nothing draws with it
            elif length % 3 or not 3 <= length <= 768:
                raise MetadataError(f"has a palette of {length:,} bytes")
            elif length // 3 > 1 << depth:
                # Colours past those the bit depth can index: no pixel has them, libpng drops them.
                colours = 1 << depth
                out += _png_chunk(b"PLTE", bytes(view[pos + 8 : pos + 8 + 3 * colours]))
            else:
                colours = length // 3
                out += view[pos:end]
        elif kind == b"tRNS" and colour == PNG_PALETTE:
            if 0 < length <= colours:
                out += view[pos:end]
        elif kind == b"bKGD" and colour == PNG_PALETTE:
            if length == 1 and data[pos + 8] < colours:  # the index of a colour
                out += view[pos:end]
        elif kind in PNG_SIZES or kind in PNG_COLOUR_SIZES:
            if length == size:
                out += view[pos:end]
            elif kind in PNG_SIZE_REQUIRED:
                raise MetadataError(f"has a {kind.decode()} chunk of {length:,} bytes, not {size}")
        elif kind == b"iCCP":
            name_end = data.find(b"\0", pos + 8, min(pos + 8 + 80, end - 4))
            if name_end > pos + 8:  # a name, and its end
                out += _png_chunk(b"iCCP", PNG_ICC_NAME + view[name_end : end - 4])
        elif kind == b"IEND":  # its data, which should be none, is skipped by decoders
            out += _png_chunk(b"IEND", b"")
            return bytes(out)
        elif kind in PNG_KEPT:
            out += view[pos:end]
        elif kind == b"eXIf":
            orientation = None if exif_read else _orientation_only(data[pos + 8 : end - 4])
            exif_read = True
            if orientation is not None:
                out += _png_chunk(b"eXIf", orientation)
        pos = end


# --- JPEG: marker segments ----------------------------------------------------------------------

# APPn segments kept, by the signature their data starts with: JFIF (APP0), the ICC profile
# (APP2, in pieces) and Adobe's (APP14: says whether 4 channels are CMYK or YCCK). EXIF and
# XMP (APP1), MPF (APP2: the index of an MPO's other pictures), IPTC (APP13), JUMBF/C2PA
# (APP11), every other APPn, comments (COM) and the number of lines (DNL, which libjpeg skips)
# go.
JPEG_KEPT_APP = {0xE0: b"JFIF\0", 0xE2: b"ICC_PROFILE\0", 0xEE: b"Adobe"}
# JFIF and Adobe segments are kept as the bytes libjpeg reads of them: JFIF's 14 (version, pixel
# density, the size of a thumbnail), without the thumbnail (a picture no browser shows, of any
# pixels), and Adobe's 12 (version, flags, colour transform). What follows goes; one shorter,
# which libjpeg ignores, goes whole.
JPEG_APP_SIZES = {0xE0: 14, 0xEE: 12}
JFIF_NO_THUMBNAIL = b"\0\0"
# In entropy-coded data a 0xFF byte is followed by 0 (a stuffed 0xFF) or a restart marker;
# anything else ends the scan.
JPEG_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7]")
# Outside a scan, a marker is 0xFF and a byte other than 0 or 0xFF. libjpeg skips whatever
# comes before one (fill bytes, garbage, and 0xFF 0, which is no marker and has no length),
# so any text there would be served and never seen: it goes.
JPEG_MARKER = re.compile(rb"\xff[^\x00\xff]")


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + (len(payload) + 2).to_bytes(2, "big") + payload


def _jpeg(data: bytes) -> bytes:
    if not data.startswith(b"\xff\xd8"):
        raise MetadataError("is not a JPEG")
    view, out, pos = memoryview(data), bytearray(b"\xff\xd8"), 2
    segments, exif_read = _BlockCount("segments"), False
    while True:
        segments.add()
        found = JPEG_MARKER.search(data, pos)
        if found is None:
            raise MetadataError("ends before its end-of-image marker")
        pos = found.start()
        marker = data[pos + 1]
        if marker == 0xD9:  # end of image: an MPO's other pictures and anything else follow
            out += b"\xff\xd9"
            return bytes(out)
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # no length; outside a scan, ignored
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        end = pos + 2 + length
        if length < 2 or end > len(data):
            raise MetadataError(f"ends inside its segment 0xFF{marker:02X}")
        if marker == 0xE1 and data.startswith(b"Exif\0\0", pos + 4, end):
            orientation = None if exif_read else _orientation_only(data[pos + 4 : end])
            exif_read = True
            if orientation is not None:
                out += _jpeg_segment(0xE1, b"Exif\0\0" + orientation)
        elif marker == 0xFE or 0xE0 <= marker <= 0xEF:
            signature, size = JPEG_KEPT_APP.get(marker), JPEG_APP_SIZES.get(marker)
            if signature is None or not data.startswith(signature, pos + 4, end):
                pass
            elif size is None:
                out += view[pos:end]
            elif end - pos - 4 >= size:
                kept = data[pos + 4 : pos + 4 + size]
                if marker == 0xE0:
                    kept = kept[:-2] + JFIF_NO_THUMBNAIL
                out += _jpeg_segment(marker, kept)
        elif marker == 0xDC:  # DNL: libjpeg skips it, whatever its length
            pass
        else:
            out += view[pos:end]
        pos = end
        if marker == 0xDA:  # start of scan: its entropy-coded data runs to the next marker
            found = JPEG_SCAN_END.search(data, pos)
            if found is None:
                raise MetadataError("ends inside a scan")
            out += view[pos : found.start()]
            pos = found.start()


# --- WebP: RIFF chunks --------------------------------------------------------------------------

# The picture (VP8, VP8L, ALPH), the extended header, the ICC profile and animation. EXIF
# (replaced by one holding only Orientation), XMP and unknown chunks go. A frame (ANMF) holds
# chunks of its own, walked the same way.
WEBP_KEPT = frozenset({b"VP8X", b"VP8 ", b"VP8L", b"ALPH", b"ICCP", b"ANIM", b"ANMF"})
WEBP_FRAME_KEPT = frozenset({b"VP8 ", b"VP8L", b"ALPH"})
# The extended header (VP8X) is 10 bytes: flags, 3 reserved bytes (kept as zeros: decoders
# ignore them), the canvas's width and height. The animation's (ANIM) is 6: a background colour
# and a loop count, and what follows them, which libwebp skips, goes. A frame's header is 16
# bytes, its last one of flags, of which 6 bits are reserved.
WEBP_HEADER_SIZES = {b"VP8X": 10, b"ANIM": 6, b"ANMF": 16}
VP8X_ICC, VP8X_ALPHA, VP8X_EXIF, VP8X_XMP, VP8X_ANIMATION = 0x20, 0x10, 0x08, 0x04, 0x02
ANMF_FLAGS = 0x03  # blending and disposal


def _riff_chunks(
    data: bytes, pos: int, end: int, chunks: _BlockCount
) -> Iterator[tuple[bytes, int, int]]:
    """(kind, start, end) of the data of each chunk from `pos` to `end`."""
    while pos < end:
        chunks.add()
        if pos + 8 > end:
            raise MetadataError("ends inside a chunk header")
        kind, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if pos + 8 + size > end:
            raise MetadataError(f"ends inside its {kind!r} chunk")
        yield kind, pos + 8, pos + 8 + size
        pos += 8 + size + size % 2  # a chunk of odd size is padded to an even one


def _riff_chunk(out: bytearray, kind: bytes, payload: memoryview | bytes) -> None:
    out += kind + len(payload).to_bytes(4, "little")
    out += payload
    out += b"\0" * (len(payload) % 2)


def _webp(data: bytes) -> bytes:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise MetadataError("is not a WebP")
    end = 8 + int.from_bytes(data[4:8], "little")
    if end > len(data):
        raise MetadataError("ends before its last chunk")
    view, out = memoryview(data), bytearray(b"RIFF\0\0\0\0WEBP")
    chunks, exif_read, has_exif = _BlockCount("chunks"), False, False
    vp8x_at = vp8x_flags = -1  # where the extended header's flags are written, and what they were
    for kind, start, stop in _riff_chunks(data, 12, end, chunks):
        header = WEBP_HEADER_SIZES.get(kind, 0)
        if stop - start < header or (kind == b"VP8X" and stop - start > header):
            raise MetadataError(
                f"has a {kind.decode()} chunk of {stop - start:,} bytes; its header is {header}"
            )
        if kind == b"ANMF":  # position, size, timing and flags, then the frame's chunks
            frame = len(out)
            out += b"ANMF\0\0\0\0"
            out += view[start : start + header - 1]
            out.append(data[start + header - 1] & ANMF_FLAGS)
            for sub, sub_start, sub_stop in _riff_chunks(data, start + header, stop, chunks):
                if sub in WEBP_FRAME_KEPT:
                    _riff_chunk(out, sub, view[sub_start:sub_stop])
            out[frame + 4 : frame + 8] = (len(out) - frame - 8).to_bytes(4, "little")
        elif kind == b"VP8X":  # its flags are written once the chunks it announces are known
            vp8x_at, vp8x_flags = len(out) + 8, data[start]
            _riff_chunk(out, kind, b"\0\0\0\0" + view[start + 4 : stop])
        elif kind == b"ANIM":
            _riff_chunk(out, kind, view[start : start + header])
        elif kind in WEBP_KEPT:
            _riff_chunk(out, kind, view[start:stop])
        elif kind == b"EXIF":
            orientation = None if exif_read else _orientation_only(data[start:stop])
            exif_read = True
            if orientation is not None:
                _riff_chunk(out, b"EXIF", orientation)
                has_exif = True
    # The extended header says which chunks follow: it must not announce the ones dropped.
    if vp8x_at >= 0:
        flags = vp8x_flags & (VP8X_ICC | VP8X_ALPHA | VP8X_ANIMATION)
        out[vp8x_at] = flags | (VP8X_EXIF if has_exif else 0)
    out[4:8] = (len(out) - 8).to_bytes(4, "little")
    return bytes(out)


# --- GIF: blocks --------------------------------------------------------------------------------

# Application extensions kept, by their identifier: the loop count of an animation (Netscape's,
# and the same one as some tools name it) and the ICC profile. XMP ("XMP DataXMP") and every
# other one go, as do comments and plain-text extensions (text a decoder may draw; browsers
# and Pillow draw none). The graphic control extension (timing, transparency, disposal) and
# the loop count are written as the format fixes them: a decoder reads their first bytes and
# skips what follows, which could be any text.
GIF_LOOP_APPLICATIONS = frozenset({b"NETSCAPE2.0", b"ANIMEXTS1.0"})
GIF_ICC_APPLICATION = b"ICCRGBG1012"
GIF_GRAPHIC_CONTROL, GIF_APPLICATION = 0xF9, 0xFF
# Between blocks Pillow (GifImagePlugin) skips, a byte at a time, whatever starts none of an
# extension (0x21), an image (0x2C) or the trailer (0x3B); browsers skip them too. They go.
GIF_BLOCK_START = re.compile(rb"[\x21\x2c\x3b]")


def _gif_sub_blocks_end(data: bytes, pos: int) -> int:
    while True:
        size = data[pos]
        pos += 1 + size
        if size == 0:
            return pos


def _gif_graphic_control(data: bytes, pos: int) -> bytes:
    """The graphic control extension whose first sub-block is at `pos`, as its 4 bytes of
    flags, delay and transparent colour in one sub-block."""
    size = data[pos]
    if size == 0:
        return b""  # nothing to read: Pillow reads none
    if size < 4:
        raise MetadataError(f"has a graphic control extension of {size} bytes, not 4")
    return b"\x21\xf9\x04" + data[pos + 1 : pos + 5] + b"\0"


def _gif_loop(data: bytes, pos: int) -> bytes:
    """The loop count extension at `pos` as its identifier and one sub-block of 3 bytes (1,
    then the count), as Pillow and browsers read it; without one, nothing."""
    loop = pos + 14  # after the introducer, the label and the 11 bytes of the identifier
    if data[loop] < 3 or data[loop + 1] != 1:
        return b""
    return data[pos:loop] + b"\x03" + data[loop + 1 : loop + 4] + b"\0"


def _gif(data: bytes) -> bytes:
    if data[:6] not in (b"GIF87a", b"GIF89a"):
        raise MetadataError("is not a GIF")
    pos = 13  # header and logical screen descriptor, then the global colour table, if any
    if data[10] & 0x80:
        pos += 3 << ((data[10] & 0x07) + 1)
    view, blocks = memoryview(data), _BlockCount("blocks")
    out = bytearray(view[:pos])
    while True:
        blocks.add()
        found = GIF_BLOCK_START.search(data, pos)
        if found is None:
            raise MetadataError("ends before its trailer")
        pos = found.start()
        block = data[pos]
        if block == 0x3B:  # trailer
            out += b";"
            return bytes(out)
        if block == 0x21:  # extension: label, then sub-blocks
            label = data[pos + 1]
            end = _gif_sub_blocks_end(data, pos + 2)
            application = data[pos + 3 : pos + 14] if data[pos + 2] == 11 else b""
            if label == GIF_GRAPHIC_CONTROL:
                out += _gif_graphic_control(data, pos + 2)
            elif label == GIF_APPLICATION and application in GIF_LOOP_APPLICATIONS:
                out += _gif_loop(data, pos)
            elif label == GIF_APPLICATION and application == GIF_ICC_APPLICATION:
                out += view[pos:end]
        else:  # image: descriptor, local colour table, LZW code size, data
            flags = data[pos + 9]
            start = pos + 10 + (3 << ((flags & 0x07) + 1) if flags & 0x80 else 0)
            end = _gif_sub_blocks_end(data, start + 1)
            out += view[pos:end]
        pos = end
