"""EXIF orientation fixtures for tests/prep.rs (`exif_orientation_is_applied`).

Writes tests/golden/exif/: a 16x8 picture of four flat 8x8-aligned colour
blocks (so JPEG keeps them within a few levels) saved as JPEG (4:4:4, quality
95) with each EXIF orientation 1-8, as PNG with orientation 6 in its eXIf
chunk, and as lossless WebP with orientation 6 in its EXIF chunk; and beside
each, `<name>.expected.png`: the pixels Pillow shows after
`ImageOps.exif_transpose`, the orientation applied. Run with Pillow >= 10:
    python3 tests/golden/make_exif_fixtures.py
"""
from pathlib import Path

from PIL import Image, ImageOps

out = Path(__file__).parent / "exif"
out.mkdir(exist_ok=True)
img = Image.new("RGB", (16, 8))
blocks = [((0, 0), (200, 30, 30)), ((8, 0), (30, 200, 30))]
for (x0, y0), colour in blocks:
    for y in range(y0, y0 + 8):
        for x in range(x0, x0 + 8):
            img.putpixel((x, y), colour)
# A second row of blocks would not fit 8 high: mark the top-left corner
# instead, so flips and rotations all differ.
for y in range(0, 4):
    for x in range(0, 4):
        img.putpixel((x, y), (20, 20, 220))


def save(name, fmt, orientation, **kw):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = out / name
    img.save(path, fmt, exif=exif, **kw)
    with Image.open(path) as stored:
        ImageOps.exif_transpose(stored).convert("RGB").save(out / f"{name}.expected.png")


for o in range(1, 9):
    save(f"orientation{o}.jpg", "JPEG", o, quality=95, subsampling=0)
save("orientation6.png", "PNG", 6)
save("orientation6.webp", "WEBP", 6, lossless=True)
