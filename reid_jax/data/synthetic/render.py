"""Renders one picture: camera-specific background, person, occluder, colour shift and noise.

Drawing happens on a supersampled PIL canvas (2x for small images) that is box-reduced to the
output size; the camera colour shift and the pixel noise are vectorised NumPy on the result.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from reid_jax.data.synthetic.attributes import Identity
from reid_jax.data.synthetic.body import draw_person
from reid_jax.data.synthetic.scene import NUM_CAMERAS, Scene


@dataclasses.dataclass(frozen=True)
class CameraLook:
    """Colour response and scenery of one camera.

    Attributes:
      gains: [3] per-channel multipliers (within +-7 % so that named colours survive).
      brightness: global multiplier.
      offset: additive offset (uint8 units).
      wall, ground: [3] base RGB of the scenery behind and below the people.
    """

    gains: tuple[float, float, float]
    brightness: float
    offset: float
    wall: tuple[float, float, float]
    ground: tuple[float, float, float]


def camera_looks(seed: int) -> tuple[CameraLook, ...]:
    """The looks of camera 0 (neutral, for camera-free pictures) and cameras 1..6.

    Args:
      seed: dataset seed.

    Returns:
      NUM_CAMERAS + 1 CameraLook, indexed by camera id.
    """
    looks = [CameraLook((1.0, 1.0, 1.0), 1.0, 0.0, (180.0, 180.0, 175.0), (120.0, 118, 112))]
    for cam in range(1, NUM_CAMERAS + 1):
        rng = np.random.default_rng([seed, 99, cam])
        base = rng.uniform(70, 200)
        looks.append(
            CameraLook(
                gains=tuple(float(g) for g in rng.uniform(0.93, 1.07, 3)),
                brightness=float(rng.uniform(0.88, 1.1)),
                offset=float(rng.uniform(-8, 8)),
                wall=tuple(float(v) for v in base + rng.normal(0, 18, 3)),
                ground=tuple(float(v) for v in rng.uniform(60, 150) + rng.normal(0, 8, 3)),
            )
        )
    return tuple(looks)


def _muted(rng: np.random.Generator, base: np.ndarray, mix: float = 0.55):
    rgb = mix * base + (1 - mix) * rng.uniform(20, 235, 3)
    return tuple(int(v) for v in np.clip(rgb, 0, 255))


def _background(
    rng: np.random.Generator, hc: int, wc: int, look: CameraLook, camera_free: bool
) -> Image.Image:
    """Wall/ground gradient with clutter: windows, doors, poles, bushes."""
    wall = np.asarray(look.wall) + rng.normal(0, 10, 3)
    ground = np.asarray(look.ground) + rng.normal(0, 8, 3)
    if camera_free:
        wall, ground = rng.uniform(90, 230, 3), rng.uniform(70, 170, 3)
    horizon = rng.uniform(0.5, 0.8)
    t = np.linspace(0.0, 1.0, hc, dtype=np.float32)[:, None]
    wall, ground = wall.astype(np.float32), ground.astype(np.float32)
    column = np.where(t < horizon, wall * (0.85 + 0.3 * t / horizon), ground * (1.1 - 0.2 * t))
    shade = 1.0 + np.float32(rng.uniform(-0.12, 0.12)) * np.linspace(-1, 1, wc, dtype=np.float32)
    img = column[:, None, :] * shade[None, :, None]
    canvas = Image.fromarray(np.clip(img, 0, 255, out=img).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    hy = horizon * hc
    for _ in range(int(rng.integers(2, 7))):
        kind = rng.random()
        x0, w = rng.uniform(-0.2, 1.0) * wc, rng.uniform(0.1, 0.5) * wc
        if kind < 0.45:  # window, door or sign on the wall
            y0 = rng.uniform(0.0, 0.8) * hy
            draw.rectangle(
                [x0, y0, x0 + w, min(hy, y0 + rng.uniform(0.1, 0.4) * hc)], fill=_muted(rng, wall)
            )
        elif kind < 0.7:  # pole or tree trunk
            pw = rng.uniform(0.03, 0.08) * wc
            draw.rectangle(
                [x0, 0, x0 + pw, hy + rng.uniform(0, 0.1) * hc], fill=_muted(rng, wall * 0.5)
            )
        elif kind < 0.85:  # bush / parked thing at the horizon
            h = rng.uniform(0.05, 0.2) * hc
            draw.ellipse([x0, hy - h, x0 + w, hy + 0.3 * h], fill=_muted(rng, ground, 0.4))
        else:  # paving line on the ground
            y = rng.uniform(hy, hc)
            draw.line(
                [(0, y), (wc, y + rng.uniform(-0.1, 0.1) * hc)],
                fill=_muted(rng, ground * 1.2),
                width=max(1, int(0.01 * hc)),
            )
    return canvas


def _occlude(draw: ImageDraw.ImageDraw, scene: Scene, hc: int, wc: int, cx: float) -> None:
    a, b, c, d = scene.occluder_pos
    grey = int(60 + 120 * c)
    if scene.occluder == "pole":
        x = (0.15 + 0.7 * a) * wc
        w = (0.05 + 0.07 * b) * wc
        draw.rectangle([x, -1, x + w, hc], fill=(grey, grey, int(grey * (0.9 + 0.2 * d))))
    elif scene.occluder == "box":
        # Always spans the feet, so scene.compute_visible can mark the shoes hidden.
        top = (0.8 + 0.12 * a) * hc
        x0, x1 = min(cx - 0.3 * wc, 0.2 * b * wc), max(cx + 0.3 * wc, wc - 0.2 * c * wc)
        colour = (int(40 + 150 * d), int(40 + 120 * c), int(40 + 100 * b))
        draw.rectangle([x0, top, x1, hc], fill=colour)
        draw.line(
            [(x0, top), (x1, top)], fill=tuple(v // 2 for v in colour), width=max(1, int(0.01 * hc))
        )


def render_image(
    identity: Identity | None,
    scene: Scene,
    image_size: tuple[int, int],
    looks: tuple[CameraLook, ...],
    rng: np.random.Generator,
) -> np.ndarray:
    """Renders one picture of `identity` (None: background only, for junk images).

    Args:
      identity: the person, or None.
      scene: viewpoint, framing, occluder, camera, degradations.
      image_size: (H, W) of the output.
      looks: camera_looks(seed).
      rng: generator owned by this image (background clutter, noise).

    Returns:
      [H, W, 3] uint8 RGB.
    """
    h, w = image_size
    # Draw at the natural 2:1 pedestrian-crop aspect (supersampled for small images) and
    # resize to (H, W), as real crops are resized (e.g. to 384x128, ssan §1.5).
    hc = h * (2 if h <= 192 else 1)
    wc = hc // 2
    look = looks[scene.camera]
    canvas = _background(rng, hc, wc, look, scene.camera == 0)
    draw = ImageDraw.Draw(canvas)
    cx = scene.center_x * wc
    height = scene.scale * hc
    if scene.neighbour is not None:
        side = 1.0 if scene.occluder_pos[0] < 0.5 else -1.0
        draw_person(
            draw,
            scene.neighbour,
            ("front", "back", "side")[int(3 * scene.occluder_pos[1])],
            scene.occluder_pos[2] * 2 - 1,
            cx + side * (0.55 + 0.15 * scene.occluder_pos[3]) * wc,
            scene.top_y * hc + 0.03 * hc,
            height,
        )
    if identity is not None:
        draw_person(
            draw,
            identity,
            scene.view,
            scene.stride,
            cx,
            scene.top_y * hc,
            height,
            near_right=scene.mirror,
        )
    _occlude(draw, scene, hc, wc, cx)
    img = canvas.resize((w, h), Image.Resampling.BOX) if canvas.size != (w, h) else canvas
    if scene.blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(scene.blur))
    pixels = np.asarray(img, dtype=np.float32)
    if scene.mirror:
        pixels = pixels[:, ::-1]
    gains = np.asarray(look.gains, np.float32) * look.brightness
    noise = rng.standard_normal(pixels.shape, dtype=np.float32) * scene.noise_sigma
    pixels = pixels * gains + (look.offset + 0.5 + noise)
    return np.clip(pixels, 0, 255, out=pixels).astype(np.uint8)
