"""Vectorised procedural shapes (object classes) and textures (scene classes), SPEC §2.5.

Every generator takes a numpy ``Generator`` and a count ``n`` and returns a whole batch at once
(arrays of shape [n, H, W, ...]); nothing here loops over images except the final tight crop.
Colours are drawn independently of the class, so colour reveals neither the object nor the
scene: only shape (objects) and layout/texture (scenes) identify a class.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: bump when any generator changes its output (recorded in the manifest)
GENERATOR_VERSION = "procedural-1"

Array = np.ndarray
ShapeFn = Callable[[Array, Array], Array]
TextureFn = Callable[[np.random.Generator, int, Array, Array], Array]


# --- object shapes: implicit functions on canonical coordinates (qx, qy) in about [-1, 1] -----

def _polar(qx: Array, qy: Array) -> tuple[Array, Array]:
    """Radius and angle."""
    return np.hypot(qx, qy), np.arctan2(qy, qx)


def _circle(qx: Array, qy: Array) -> Array:
    """Disk (an ellipse after the aspect change)."""
    return qx**2 + qy**2 < 0.9**2


def _square(qx: Array, qy: Array) -> Array:
    """Square (a rectangle after the aspect change)."""
    return np.maximum(np.abs(qx), np.abs(qy)) < 0.7


def _triangle(qx: Array, qy: Array) -> Array:
    """Equilateral triangle (intersection of three half-planes)."""
    inside = np.ones(qx.shape, dtype=bool)
    for ang in (-np.pi / 2, np.pi / 6, 5 * np.pi / 6):
        inside &= np.cos(ang) * qx + np.sin(ang) * qy < 0.47
    return inside


def _cross(qx: Array, qy: Array) -> Array:
    """Plus sign of two bars."""
    ax, ay = np.abs(qx), np.abs(qy)
    return ((ax < 0.28) & (ay < 0.9)) | ((ay < 0.28) & (ax < 0.9))


def _star(qx: Array, qy: Array) -> Array:
    """Five-pointed star (radius a triangle wave of the angle)."""
    r, th = _polar(qx, qy)
    t = np.abs(np.mod(5 * th / (2 * np.pi), 1.0) - 0.5) * 2.0  # 1 at the tips, 0 between
    return r < 0.38 + 0.57 * t


def _ring(qx: Array, qy: Array) -> Array:
    """Annulus."""
    r = np.hypot(qx, qy)
    return (r > 0.5) & (r < 0.9)


def _crescent(qx: Array, qy: Array) -> Array:
    """Disk minus an offset disk."""
    return (np.hypot(qx, qy) < 0.9) & (np.hypot(qx - 0.45, qy) > 0.72)


def _heart(qx: Array, qy: Array) -> Array:
    """Heart curve (x^2 + y^2 - 1)^3 - x^2 y^3 < 0."""
    x, y = qx * 1.25, -qy * 1.25 + 0.15
    return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 < 0


def _hourglass(qx: Array, qy: Array) -> Array:
    """Two triangles meeting at the centre (bow tie)."""
    ax, ay = np.abs(qx), np.abs(qy)
    return (ay < ax + 0.08) & (ax < 0.9) & (ay < 0.8)


def _lshape(qx: Array, qy: Array) -> Array:
    """L of a vertical bar and a foot."""
    vertical = (qx > -0.8) & (qx < -0.25) & (np.abs(qy) < 0.85)
    foot = (qy > 0.3) & (qy < 0.85) & (np.abs(qx) < 0.8)
    return vertical | foot


SHAPES: dict[str, ShapeFn] = {
    "circle": _circle, "crescent": _crescent, "cross": _cross, "heart": _heart, "hourglass": _hourglass,
    "lshape": _lshape, "ring": _ring, "square": _square, "star": _star, "triangle": _triangle,
}


def _colours(rng: np.random.Generator, n: int) -> Array:
    """``n`` random RGB colours in [0, 1], shape [n, 1, 1, 3]."""
    return rng.uniform(0.0, 1.0, size=(n, 1, 1, 3))


def make_objects(rng: np.random.Generator, shape: str, n: int, size: int,
                 max_rotation: float = 180.0) -> list[Array]:
    """``n`` RGBA cut-outs (uint8, alpha in {0, 255}) of one shape family, longer side <= ``size``.

    Random per object: rotation (uniform in [-max_rotation, max_rotation] degrees), aspect ratio
    (0.6..1), fill (solid or a linear gradient between two random colours) and faint pixel noise.
    Each is cropped to its mask's box.
    """
    fn = SHAPES[shape]
    theta = np.deg2rad(rng.uniform(-max_rotation, max_rotation, size=(n, 1, 1)))
    aspect = rng.uniform(0.6, 1.0, size=(n, 1, 1))
    c1, c2 = _colours(rng, n), _colours(rng, n)
    gradient = rng.random((n, 1, 1, 1)) < 0.5
    gdir = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    noise = rng.normal(0.0, 0.03, size=(n, size, size, 3))
    g = ((np.arange(size) + 0.5) / size * 2 - 1) * 1.15
    py, px = np.meshgrid(g, g, indexing="ij")
    px, py = px[None], py[None]
    qx = np.cos(theta) * px + np.sin(theta) * py  # rotate by -theta
    qy = (-np.sin(theta) * px + np.cos(theta) * py) / aspect
    mask = fn(qx, qy)
    t = 0.5 + 0.5 * np.clip(np.cos(gdir) * px + np.sin(gdir) * py, -1, 1)
    fill = np.where(gradient, c1 + (c2 - c1) * t[..., None], c1) + noise
    rgb = np.clip(np.rint(fill * 255), 0, 255).astype(np.uint8)
    alpha = np.where(mask, 255, 0).astype(np.uint8)
    rgba = np.concatenate([rgb, alpha[..., None]], axis=-1)
    out = []
    for k in range(n):
        rows, cols = np.flatnonzero(mask[k].any(1)), np.flatnonzero(mask[k].any(0))
        out.append(np.ascontiguousarray(rgba[k, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]))
    return out


# --- scene textures: values in [0, 1] per pixel, mixed between random colours -----------------

def _rot(rng: np.random.Generator, n: int, x: Array, y: Array) -> tuple[Array, Array]:
    """Coordinates rotated by a random angle per image."""
    a = rng.uniform(0, np.pi, size=(n, 1, 1))
    return np.cos(a) * x + np.sin(a) * y, -np.sin(a) * x + np.cos(a) * y


def _u(rng: np.random.Generator, n: int, lo: float, hi: float) -> Array:
    """Uniform per-image parameter, shape [n, 1, 1]."""
    return rng.uniform(lo, hi, size=(n, 1, 1))


def _stripes(rng: np.random.Generator, n: int, x: Array, y: Array) -> Array:
    """Sinusoidal stripes, random orientation/frequency/phase."""
    u, _ = _rot(rng, n, x, y)
    return 0.5 + 0.5 * np.sin(2 * np.pi * _u(rng, n, 3, 7) * u + _u(rng, n, 0, 2 * np.pi))


def _zigzag(rng: np.random.Generator, n: int, x: Array, y: Array) -> Array:
    """Hard-edged stripes bent by a triangle wave."""
    u, v = _rot(rng, n, x, y)
    tri = np.abs(np.mod(v * _u(rng, n, 3, 6), 1.0) - 0.5)
    return (np.mod((u + 0.6 * tri) * _u(rng, n, 3, 6) + _u(rng, n, 0, 1), 1.0) < 0.5).astype(float)


def _checker(rng: np.random.Generator, n: int, x: Array, y: Array) -> Array:
    """Rotated checkerboard."""
    u, v = _rot(rng, n, x, y)
    f, ph = _u(rng, n, 2, 4), _u(rng, n, 0, 2 * np.pi)
    return (np.sin(2 * np.pi * f * u + ph) * np.sin(2 * np.pi * f * v + ph) > 0).astype(float)


def _dots(rng: np.random.Generator, n: int, x: Array, y: Array) -> Array:
    """Rotated grid of disks (polka dots)."""
    u, v = _rot(rng, n, x, y)
    f = _u(rng, n, 3, 6)
    du = np.mod(f * u + _u(rng, n, 0, 1), 1.0) - 0.5
    dv = np.mod(f * v + _u(rng, n, 0, 1), 1.0) - 0.5
    return (np.hypot(du, dv) < _u(rng, n, 0.2, 0.32)).astype(float)


def _grid(rng: np.random.Generator, n: int, x: Array, y: Array) -> Array:
    """Rotated grid of thin lines."""
    u, v = _rot(rng, n, x, y)
    f = _u(rng, n, 3, 6)
    du = np.abs(np.mod(f * u + _u(rng, n, 0, 1), 1.0) - 0.5)
    dv = np.abs(np.mod(f * v + _u(rng, n, 0, 1), 1.0) - 0.5)
    return (np.maximum(du, dv) > _u(rng, n, 0.38, 0.44)).astype(float)


def _centre(rng: np.random.Generator, n: int, x: Array, y: Array) -> tuple[Array, Array]:
    """Coordinates relative to a random centre per image."""
    cx, cy = _u(rng, n, 0.2, 0.8), _u(rng, n, 0.2, 0.8)
    return x - cx, y - cy


def _rings(rng: np.random.Generator, n: int, x: Array, y: Array) -> Array:
    """Concentric sinusoidal rings around a random centre."""
    dx, dy = _centre(rng, n, x, y)
    return 0.5 + 0.5 * np.sin(2 * np.pi * _u(rng, n, 3, 7) * np.hypot(dx, dy) + _u(rng, n, 0, 2 * np.pi))


def _rays(rng: np.random.Generator, n: int, x: Array, y: Array) -> Array:
    """Sunburst: sinusoid of the angle around a random centre."""
    dx, dy = _centre(rng, n, x, y)
    k = rng.integers(5, 11, size=(n, 1, 1))
    return 0.5 + 0.5 * np.sin(k * np.arctan2(dy, dx) + _u(rng, n, 0, 2 * np.pi))


def _gradient(rng: np.random.Generator, n: int, x: Array, y: Array) -> Array:
    """Smooth linear gradient, random direction and steepness."""
    u, _ = _rot(rng, n, x - 0.5, y - 0.5)
    return np.clip(0.5 + u * _u(rng, n, 0.8, 1.4), 0, 1)


def _horizon(rng: np.random.Generator, n: int, x: Array, y: Array) -> Array:
    """Two regions split by a gently wavy horizontal line."""
    level = _u(rng, n, 0.3, 0.7) + _u(rng, n, 0.02, 0.08) * np.sin(
        2 * np.pi * _u(rng, n, 1, 3) * x + _u(rng, n, 0, 2 * np.pi))
    return (y > level).astype(float) * (0.75 + 0.25 * y)


def _blobs(rng: np.random.Generator, n: int, x: Array, y: Array) -> Array:
    """Camouflage blobs: sign of a sum of six random low-frequency waves."""
    field = np.zeros(np.broadcast_shapes(x.shape, (n, 1, 1)))
    for _ in range(6):
        u, _v = _rot(rng, n, x, y)
        field = field + np.sin(2 * np.pi * _u(rng, n, 1, 3) * u + _u(rng, n, 0, 2 * np.pi))
    return (field > 0).astype(float)


TEXTURES: dict[str, TextureFn] = {
    "blobs": _blobs, "checker": _checker, "dots": _dots, "gradient": _gradient, "grid": _grid,
    "horizon": _horizon, "rays": _rays, "rings": _rings, "stripes": _stripes, "zigzag": _zigzag,
}


def make_scenes(rng: np.random.Generator, texture: str, n: int, size: int) -> Array:
    """``n`` RGB scenes (uint8 [n, size, size, 3]) of one texture family with random colours."""
    g = (np.arange(size) + 0.5) / size
    y, x = np.meshgrid(g, g, indexing="ij")
    t = TEXTURES[texture](rng, n, x[None], y[None])
    c1, c2 = _colours(rng, n), _colours(rng, n)
    img = c1 + (c2 - c1) * t[..., None] + rng.normal(0.0, 0.03, size=(n, size, size, 3))
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
