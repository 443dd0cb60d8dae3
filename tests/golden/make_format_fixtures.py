"""Image-format fixtures for tests/prep.rs (`every_format_reads_as_pillow_reads_it`).

Writes tests/golden/formats/: one 12x10 picture (gradients and a marked
corner, so flips, channel swaps and off-by-one rows all show) in each format
`prep folder` reads beyond PNG and JPEG, in the variants real collections
hold: lossless WebP, TIFF (uncompressed, LZW, Deflate; and a 16-bit grey one,
as microscopes write), BMP (24-bit), GIF (palette; an animated one, of which
the first frame counts); and beside each, `<name>.expected.png`: the pixels
Pillow decodes (RGB, or L for grey), the reference the test compares with
exactly. The 16-bit TIFF's reference is its values scaled to 8 bits as
round(v * 255 / 65535), Pillow's own 16-to-8 conversion being a clip. Run
with Pillow >= 10:
    python3 tests/golden/make_format_fixtures.py
"""
from pathlib import Path

import numpy as np
from PIL import Image

out = Path(__file__).parent / "formats"
out.mkdir(exist_ok=True)
h, w = 10, 12
y, x = np.mgrid[0:h, 0:w]
rgb = np.stack([x * 21, y * 25, (x * 7 + y * 11) % 256], axis=-1).astype(np.uint8)
rgb[:3, :3] = (250, 20, 200)
img = Image.fromarray(rgb, "RGB")


def save(name, image, **kw):
    path = out / name
    image.save(path, **kw)
    with Image.open(path) as stored:
        stored.seek(0)
        mode = "L" if stored.mode in ("L", "I;16", "I;16B", "I") else "RGB"
        if stored.mode.startswith("I"):
            v = np.asarray(stored, dtype=np.float64)
            ref = Image.fromarray(np.round(v * 255 / 65535).astype(np.uint8), "L")
        else:
            ref = stored.convert(mode)
        ref.save(out / f"{name}.expected.png")


save("lossless.webp", img, lossless=True)
save("plain.tif", img, compression=None)
save("lzw.tif", img, compression="tiff_lzw")
save("deflate.tiff", img, compression="tiff_adobe_deflate")
grey16 = ((x * 5000 + y * 700) % 65536).astype(np.uint16)
save("grey16.tif", Image.fromarray(grey16))
save("rgb24.bmp", img)
save("palette.gif", img.quantize(colors=64, dither=Image.Dither.NONE))
frames = [img.quantize(colors=64, dither=Image.Dither.NONE), Image.new("RGB", (w, h), (0, 0, 0)).quantize(colors=2)]
save("animated.gif", frames[0], save_all=True, append_images=frames[1:], duration=100, loop=0)
