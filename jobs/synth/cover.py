"""JPEG covers rendered with Pillow: a visual signature per subtree plus noise.

- level-1 subtree: the background palette (a two-colour gradient);
- level-2 subtree: the layout (where the text band and the shapes sit) and the shape family;
- leaf: an accent colour and a corner icon (polygon sides) — shared by all siblings of a
  *cover-blind* set, distinct per leaf elsewhere;
- large Chinese text in a band (a hook or a topic word), as real covers have;
- noise: position/size jitter, brightness jitter, pixel noise, and a share of off-signature covers.

Text needs a CJK font: the Noto Sans SC shipped by the PyPI package ``pylopdf-fonts-zh-cn``, else a
system font found by ``fc-list :lang=zh`` or common paths; with none, covers are drawn without text
(logged once). Encoding is deterministic (fixed quality, no optimisation pass, no metadata).
"""

from __future__ import annotations

import io
import logging
import math
import subprocess
from functools import lru_cache

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFont

from vtag.jobs.synth.world import CoverSig

log = logging.getLogger("vtag.generate")

_FALLBACK_FONTS = [
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
]


@lru_cache(maxsize=1)
def font_path() -> str | None:
    """Path of a CJK font, or None (then covers carry no text)."""
    try:
        import pylopdf_fonts_zh_cn

        p = pylopdf_fonts_zh_cn.sans_path()
        if p.is_file():
            return str(p)
    except ImportError:
        pass
    import os

    for p in _FALLBACK_FONTS:
        if os.path.isfile(p):
            return p
    try:
        out = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=10).stdout
        files = sorted(line.split(":")[0].strip() for line in out.splitlines() if line.strip())
        if files:
            return files[0]
    except (OSError, subprocess.SubprocessError):
        pass
    log.warning("no CJK font found (pip install pylopdf-fonts-zh-cn): covers are drawn without text")
    return None


@lru_cache(maxsize=16)
def _font(size: int):
    p = font_path()
    return ImageFont.truetype(p, size) if p else None


def _ramp(c1, c2) -> np.ndarray:
    t = np.arange(_RAMP, dtype=np.float32)[:, None] / (_RAMP - 1)
    a, b = np.asarray(c1, np.float32), np.asarray(c2, np.float32)
    return (a + t * (b - a)).astype(np.uint8)


def _jitter(rng: np.random.Generator, rgb, amount: float) -> tuple[int, int, int]:
    v = rng.normal(0, amount, 3)
    return tuple(min(255, max(0, int(c + x))) for c, x in zip(rgb, v))


def _polygon(cx: float, cy: float, r: float, sides: int, rot: float) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(rot + 2 * math.pi * i / sides), cy + r * math.sin(rot + 2 * math.pi * i / sides))
            for i in range(sides)]


def _star(cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    pts = []
    for i in range(10):
        rr = r if i % 2 == 0 else r * 0.45
        a = rot + math.pi * i / 5
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


_RAMP = 64


@lru_cache(maxsize=32)
def _gradient_index(gdir: int, w: int, h: int) -> np.ndarray:
    """``[h, w]`` indices into a ``_RAMP``-step colour ramp: vertical, horizontal or diagonal."""
    if gdir == 2:
        yy, xx = np.mgrid[0:h, 0:w]
        g = (xx / max(w - 1, 1) + yy / max(h - 1, 1)) / 2
    elif gdir in (1, 3):
        g = np.broadcast_to(np.linspace(0.0, 1.0, w)[None, :], (h, w))
    else:
        g = np.broadcast_to(np.linspace(0.0, 1.0, h)[:, None], (h, w))
    return np.rint(g * (_RAMP - 1)).astype(np.intp)


_N_TILES = 64


@lru_cache(maxsize=8)
def _noise_bank(w: int, h: int, noise: float) -> list:
    """``_N_TILES`` fixed pixel-noise RGB tiles centred on 128 (uniform, std ``noise``; half resolution)."""
    half = int(noise * 1.732)
    rng = np.random.default_rng(0xC0FE)
    nz = rng.integers(128 - half, 128 + half + 1, (_N_TILES, (h + 1) // 2, (w + 1) // 2, 3), dtype=np.int16)
    nz = np.repeat(np.repeat(nz, 2, axis=1), 2, axis=2)[:, :h, :w].astype(np.uint8)
    return [Image.fromarray(np.ascontiguousarray(t), "RGB") for t in nz]


@lru_cache(maxsize=2048)
def _text_masks(text: str, size: int, vertical: bool, stroke: int):
    """(fill mask, stroke mask) 'L' images of ``text`` at ``size`` (cached: titles repeat hooks)."""
    f = _font(size)
    n = max(len(text), 1)
    pad = stroke + 2
    if vertical:
        box = (size + 2 * pad, size * n + 2 * pad)
    else:
        x0, y0, x1, y1 = f.getbbox(text, stroke_width=stroke)
        box = (x1 - x0 + 2 * pad, y1 - y0 + 2 * pad)
    fill, edge = Image.new("L", box, 0), Image.new("L", box, 0)
    df, de = ImageDraw.Draw(fill), ImageDraw.Draw(edge)
    if vertical:
        for i, ch in enumerate(text):
            x0, y0, x1, _ = f.getbbox(ch)
            xy = (pad + (size - (x1 - x0)) // 2 - x0, pad + i * size - y0)
            de.text(xy, ch, font=f, fill=255, stroke_width=stroke, stroke_fill=255)
            df.text(xy, ch, font=f, fill=255)
    else:
        x0, y0, _, _ = f.getbbox(text, stroke_width=stroke)
        de.text((pad - x0, pad - y0), text, font=f, fill=255, stroke_width=stroke, stroke_fill=255)
        df.text((pad - x0, pad - y0), text, font=f, fill=255)
    return fill, edge


# layouts: (text band box as fractions x0, y0, x1, y1 ; shape area x0, y0, x1, y1 ; gradient direction)
_LAYOUTS = [
    ((0.0, 0.68, 1.0, 1.0), (0.0, 0.0, 1.0, 0.66), 0),  # bottom band
    ((0.0, 0.0, 1.0, 0.32), (0.0, 0.34, 1.0, 1.0), 1),  # top band
    ((0.12, 0.34, 0.88, 0.66), (0.0, 0.0, 1.0, 1.0), 2),  # centred card
    ((0.0, 0.0, 0.42, 1.0), (0.44, 0.0, 1.0, 1.0), 3),  # left column
    ((0.58, 0.0, 1.0, 1.0), (0.0, 0.0, 0.56, 1.0), 0),  # right column
    ((0.0, 0.0, 1.0, 0.25), (0.0, 0.5, 1.0, 1.0), 2),  # split: top text, bottom shapes
]


def render_cover(
    rng: np.random.Generator,
    sig: CoverSig,
    text: str,
    width: int,
    height: int,
    quality: int,
    noise: float,
    offsig: bool,
    text_rate: float,
    sig_strength: float = 1.0,
) -> bytes:
    """One JPEG cover. ``offsig`` draws a random palette/layout (the uploader's own photo style)."""
    w, h = int(width), int(height)
    if offsig:
        pal = [tuple(int(x) for x in rng.integers(0, 256, 3)) for _ in range(4)]
        bg1, bg2, accent, accent2 = pal
        layout, shape, icon = int(rng.integers(6)), int(rng.integers(6)), int(rng.integers(3, 9))
    else:
        bg1, bg2 = _jitter(rng, sig.bg1, 18), _jitter(rng, sig.bg2, 18)
        accent, accent2 = _jitter(rng, sig.accent, 14), _jitter(rng, sig.accent2, 14)
        layout, shape, icon = sig.layout, sig.shape, sig.icon
        # the subtree's layout and shape family are habits, not rules
        if rng.random() > sig_strength:
            layout = int(rng.integers(6))
        if rng.random() > sig_strength:
            shape = int(rng.integers(6))
    tbox, sbox, gdir = _LAYOUTS[layout]
    ramp = _ramp(bg1, bg2)
    if gdir == 2:
        arr = ramp[_gradient_index(gdir, w, h)]
    elif gdir in (1, 3):
        arr = np.broadcast_to(ramp[_gradient_index(gdir, w, h)[0]][None, :, :], (h, w, 3))
    else:
        arr = np.broadcast_to(ramp[_gradient_index(gdir, w, h)[:, 0]][:, None, :], (h, w, 3))
    img = Image.fromarray(np.ascontiguousarray(arr), "RGB")
    d = ImageDraw.Draw(img)
    # shapes in the shape area
    sx0, sy0, sx1, sy1 = sbox[0] * w, sbox[1] * h, sbox[2] * w, sbox[3] * h
    n_shapes = int(rng.integers(2, 5))
    for i in range(n_shapes):
        cx, cy = rng.uniform(sx0, sx1), rng.uniform(sy0, sy1)
        r = rng.uniform(0.08, 0.2) * min(w, h) * (1.3 if i == 0 else 1.0)
        col = accent if i % 2 == 0 else accent2
        if shape == 0:
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=col)
        elif shape == 1:
            d.rectangle([cx - r, cy - 0.7 * r, cx + r, cy + 0.7 * r], fill=col)
        elif shape == 2:
            d.polygon(_polygon(cx, cy, r, 3, rng.uniform(0, 6.3)), fill=col)
        elif shape == 3:
            d.rectangle([sx0, cy - 0.25 * r, sx1, cy + 0.25 * r], fill=col)
        elif shape == 4:
            d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=col, width=max(2, int(r / 3)))
        else:
            d.polygon(_star(cx, cy, r, rng.uniform(0, 6.3)), fill=col)
    # corner icon
    ir = 0.09 * min(w, h)
    corner = int(rng.integers(4))
    icx = ir * 1.4 if corner in (0, 2) else w - ir * 1.4
    icy = ir * 1.4 if corner in (0, 1) else h - ir * 1.4
    d.polygon(_polygon(icx, icy, ir, icon, 0.3), fill=accent2, outline=(255, 255, 255))
    # text band with large Chinese text
    font_ok = font_path() is not None
    if text and font_ok and rng.random() < text_rate:
        bx0, by0, bx1, by1 = tbox[0] * w, tbox[1] * h, tbox[2] * w, tbox[3] * h
        band = tuple(int(c * 0.35) for c in bg2)
        d.rectangle([bx0, by0, bx1, by1], fill=band)
        text = text[:6]
        bw, bh = bx1 - bx0, by1 - by0
        vertical = bw < bh * 0.8
        n = max(len(text), 1)
        size = int(min((bw * 0.9) / (1 if vertical else n), (bh * 0.85) / (n if vertical else 1)))
        size = max(10, min(size, int(0.45 * h)))
        colour = (255, 255, 255) if rng.random() < 0.6 else (255, 226, 64)
        stroke = 1 if vertical else max(1, size // 12)
        fill, edge = _text_masks(text, size, vertical, stroke)
        x = int(bx0 + (bw - fill.width) / 2)
        y = int(by0 + (bh - fill.height) / 2)
        img.paste((0, 0, 0), (x, y, x + fill.width, y + fill.height), edge)
        img.paste(colour, (x, y, x + fill.width, y + fill.height), fill)
    # brightness jitter + pixel noise (one of the fixed tiles), clipped
    gain = int(rng.normal(0, 10.0))
    if noise > 0:
        tile = _noise_bank(w, h, float(noise))[int(rng.integers(_N_TILES))]
        img = ImageChops.add(img, tile, 1.0, gain - 128)
    elif gain:
        img = img.point(lambda v: min(255, max(0, v + gain)))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality), optimize=False)
    return buf.getvalue()


def undecodable_cover(rng: np.random.Generator, good: bytes | None) -> bytes:
    """Bytes that no image decoder accepts: a truncated JPEG header, or random bytes."""
    if good and rng.random() < 0.5:
        return good[: int(rng.integers(8, 40))]
    return b"\x00\x01" + rng.integers(0, 256, int(rng.integers(16, 256)), dtype=np.uint8).tobytes()
