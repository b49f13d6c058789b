"""Generate ``sample.jpg``: a deterministic, synthetic photo-like test image.

Usage: python examples/make_sample_image.py [OUT]

Draws a 640x480 scene (sky and ground gradients, a sun, hills, a few objects)
with mild noise using a fixed seed, and saves it as a JPEG of roughly 100 KB,
about the size of the mug.jpg used in Triton's own examples. The ensemble's
preprocessing step decodes it like any real photo.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT = 640, 480
SEED = 20240601
TARGET_BYTES = 100_000  # pick the highest JPEG quality that stays at or under this


def draw_scene(rng: np.random.Generator) -> Image.Image:
    y = np.linspace(0.0, 1.0, HEIGHT, dtype=np.float32)[:, None, None]
    x = np.linspace(0.0, 1.0, WIDTH, dtype=np.float32)[None, :, None]
    sky = np.array([70, 130, 210], np.float32) * (1 - y) + np.array([200, 225, 245], np.float32) * y
    ground = np.array([90, 140, 60], np.float32) * (1 - x * 0.4) + np.array([60, 40, 20], np.float32) * (y - 0.55)
    pixels = np.where(y < 0.55, sky + 0 * x, ground)

    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    draw.ellipse((480, 40, 570, 130), fill=(255, 230, 120))  # sun
    for i in range(4):  # hills
        cx = int(rng.integers(0, WIDTH))
        w = int(rng.integers(150, 300))
        h = int(rng.integers(40, 110))
        draw.ellipse((cx - w, 264 - h, cx + w, 264 + h), fill=(50 + 15 * i, 110 + 10 * i, 50))
    for _ in range(12):  # scattered objects
        x0, y0 = int(rng.integers(0, WIDTH - 60)), int(rng.integers(280, HEIGHT - 40))
        w, h = int(rng.integers(20, 90)), int(rng.integers(20, 70))
        colour = tuple(int(c) for c in rng.integers(30, 240, 3))
        if rng.random() < 0.5:
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=colour, outline=(20, 20, 20))
        else:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=colour)
    draw.rectangle((260, 300, 380, 420), fill=(180, 60, 50))  # a "mug"
    draw.ellipse((370, 320, 420, 390), outline=(180, 60, 50), width=10)

    image = image.filter(ImageFilter.GaussianBlur(1.2))
    noise = rng.normal(0.0, 6.0, (HEIGHT, WIDTH, 3))
    noisy = np.asarray(image, dtype=np.float32) + noise
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def encode(image: Image.Image) -> bytes:
    data = b""
    for quality in range(95, 29, -1):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        data = buffer.getvalue()
        if len(data) <= TARGET_BYTES:
            break
    return data


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent / "sample.jpg"
    data = encode(draw_scene(np.random.default_rng(SEED)))
    out.write_bytes(data)
    print(f"wrote {out} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
