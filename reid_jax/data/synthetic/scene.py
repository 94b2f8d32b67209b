"""Per-image scene sampling: viewpoint, pose, placement, occluders and what is visible.

A `Scene` fixes everything about one picture except the person (an `Identity`). Captions are
written from `Scene.visible`, so a caption never mentions what the picture does not show
(e.g. a backpack seen from the front).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from reid_jax.data.synthetic.attributes import Identity, sample_identity

VIEWS: tuple[str, ...] = ("front", "back", "side")
NUM_CAMERAS = 6


@dataclasses.dataclass(frozen=True)
class Visible:
    """Which identity items can be seen in one picture (drives the captions).

    Attributes:
      backpack, handbag, bag, hat: the item exists and is in sight.
      shoes: the feet are inside the frame and not hidden by an occluder.
      logo: a chest print exists and the person faces the camera.
    """

    backpack: bool
    handbag: bool
    bag: bool
    hat: bool
    shoes: bool
    logo: bool


@dataclasses.dataclass(frozen=True)
class Scene:
    """Everything about one picture except the person.

    Attributes:
      view: 'front', 'back' or 'side' (side = walking sideways; see `mirror`).
      mirror: flip the whole picture left-right (a side view then walks to the left).
      stride: walking phase in [-1, 1] (legs and arm swing).
      scale: person height as a fraction of the image height.
      center_x: horizontal centre of the person as a fraction of the width.
      top_y: top of the head as a fraction of the height (negative crops the hat/hair).
      occluder: None, 'pole', 'box' or 'person'.
      occluder_pos: [4] floats in [0, 1] that place and colour the occluder.
      neighbour: a second person partly in the frame when occluder == 'person', else None.
      camera: 1..6 for a surveillance camera colour shift, 0 for none (MALS).
      noise_sigma: std of the additive Gaussian pixel noise (uint8 units).
      blur: Gaussian blur radius in output pixels (0 = none).
      visible: what of the identity is visible.
    """

    view: str
    mirror: bool
    stride: float
    scale: float
    center_x: float
    top_y: float
    occluder: str | None
    occluder_pos: tuple[float, float, float, float]
    neighbour: Identity | None
    camera: int
    noise_sigma: float
    blur: float
    visible: Visible


def compute_visible(identity: Identity, view: str, mirror: bool, feet_visible: bool) -> Visible:
    """Visibility rules: backpack from behind or the side only, handbag unless on the far side.

    Args:
      identity: the person.
      view: 'front', 'back' or 'side'.
      mirror: whether the picture is flipped (a sideways walker then shows the other side).
      feet_visible: the feet are in the frame and not occluded.

    Returns:
      Visible flags.
    """
    # Walking to the right shows the left flank; flipped, the right flank faces the camera.
    near_right = mirror
    handbag_seen = view != "side" or identity.handbag_right == near_right
    return Visible(
        backpack=identity.backpack and view != "front",
        handbag=identity.handbag and handbag_seen,
        bag=identity.bag,
        hat=identity.hat,
        shoes=feet_visible,
        logo=identity.logo and view == "front",
    )


def sample_scene(
    rng: np.random.Generator,
    identity: Identity,
    camera: int,
    *,
    view: str | None = None,
    mirror: bool | None = None,
    clean: bool = False,
) -> Scene:
    """Draws one picture's viewpoint, pose, framing and degradations.

    Args:
      rng: generator owned by this image.
      identity: the person shown.
      camera: 1..NUM_CAMERAS, or 0 for a camera-free picture.
      view, mirror: fixed for all frames of a tracklet when given; drawn otherwise.
      clean: MALS-like generated picture: fewer occluders, less noise, tighter framing.

    Returns:
      A Scene.
    """
    if view is None:
        view = VIEWS[int(rng.choice(3, p=(0.4, 0.35, 0.25)))]
    if mirror is None:
        mirror = bool(rng.random() < 0.5)
    scale = float(rng.uniform(0.80, 0.94) * (0.95 + 0.07 * identity.height))
    top_y = float(rng.uniform(-0.02, 0.06) if clean else rng.uniform(-0.02, 0.09))
    center_x = float(0.5 + rng.uniform(-0.06, 0.06) if clean else 0.5 + rng.uniform(-0.12, 0.12))
    occluder = None
    occluder_p = 0.03 if clean else 0.2
    if rng.random() < occluder_p:
        occluder = ("pole", "box", "person")[int(rng.choice(3, p=(0.45, 0.35, 0.2)))]
    occluder_pos = tuple(float(v) for v in rng.random(4))
    neighbour = sample_identity(rng) if occluder == "person" else None
    # Feet at ~0.985 of the person height (body.py); a box occluder starts at 0.8..0.92 of H.
    feet_y = top_y + 0.985 * scale
    feet_visible = feet_y < 0.99 and not (
        occluder == "box" and 0.8 + 0.12 * occluder_pos[0] < feet_y
    )
    noise = float(rng.uniform(0.5, 3.0) if clean else rng.uniform(2.0, 9.0))
    blur = 0.0 if clean or rng.random() < 0.7 else float(rng.uniform(0.3, 0.9))
    return Scene(
        view=view,
        mirror=mirror,
        stride=float(rng.uniform(-1.0, 1.0)),
        scale=scale,
        center_x=center_x,
        top_y=top_y,
        occluder=occluder,
        occluder_pos=occluder_pos,
        neighbour=neighbour,
        camera=camera,
        noise_sigma=noise,
        blur=blur,
        visible=compute_visible(identity, view, mirror, feet_visible),
    )
