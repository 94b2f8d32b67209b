"""Draws one pedestrian (front, back or side view) with PIL primitives.

Geometry is expressed in units of the person height `P` (pixels) from the top of the head;
`draw_person` turns it into limbs, garments and accessories on a PIL `ImageDraw`. The caller
draws at a supersampled size and reduces, which gives cheap anti-aliasing.
"""

from __future__ import annotations

import math

from PIL import ImageDraw

from reid_jax.data.synthetic.attributes import COLOUR_RGB, HAIR_RGB, Identity

Colour = tuple[int, int, int]


def _rgb(values, factor: float = 1.0) -> Colour:
    return tuple(int(min(255, max(0, round(v * factor)))) for v in values)


def _limb(draw: ImageDraw.ImageDraw, p0, p1, width: float, colour: Colour) -> None:
    """A thick segment with round caps."""
    w = max(1, int(round(width)))
    draw.line([p0, p1], fill=colour, width=w)
    r = w / 2.0
    for x, y in (p0, p1):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)


def _lerp(p0, p1, t: float) -> tuple[float, float]:
    return (p0[0] + t * (p1[0] - p0[0]), p0[1] + t * (p1[1] - p0[1]))


class _Body:
    """Joint positions of one person in canvas pixels."""

    def __init__(
        self, ident: Identity, view: str, stride: float, cx: float, top: float, height: float
    ):
        p = height
        self.p, self.cx, self.top, self.view = p, cx, top, view
        young = ident.age == 0
        self.head_r = (0.078 if young else 0.068 if ident.age == 1 else 0.063) * p
        self.head_c = (cx + (0.012 * p if view == "side" else 0.0), top + self.head_r)
        self.shoulder_y = top + 2 * self.head_r + 0.03 * p
        hip = (0.55 if young else 0.50) + 0.025 * (ident.height - 0.5)
        self.hip_y = top + hip * p
        self.feet_y = top + 0.965 * p
        width = ident.width * (0.92 if ident.female else 1.0)
        if view == "side":
            self.shoulder_half = self.hip_half = 0.075 * p * ident.width
        else:
            self.shoulder_half = 0.125 * p * width
            self.hip_half = 0.095 * p * ident.width * (1.08 if ident.female else 1.0)
        self.arm_w = 0.055 * p * ident.width
        self.leg_w = 0.078 * p * ident.width
        # Legs: hips to ankles; side views swing them, front/back views only spread them.
        leg_len = self.feet_y - self.hip_y
        self.legs = []
        for sign in (-1.0, 1.0):
            if view == "side":
                angle = sign * stride * 0.32
                hip_x = cx + 0.01 * p * sign
            else:
                angle = sign * (0.03 + 0.04 * abs(stride))
                hip_x = cx + sign * 0.045 * p * ident.width
            lift = 0.015 * p * max(0.0, sign * stride) if view != "side" else 0.0
            ankle = (
                hip_x + leg_len * math.sin(angle),
                self.hip_y + leg_len * math.cos(angle) - lift,
            )
            self.legs.append(((hip_x, self.hip_y), ankle))
        arm_len = 0.33 * p
        self.arms = []
        for sign in (-1.0, 1.0):
            if view == "side":
                angle = -sign * stride * 0.45
                sx = cx
            else:
                angle = sign * (0.08 + 0.05 * abs(stride))
                sx = cx + sign * (self.shoulder_half - 0.3 * self.arm_w)
            s = (sx, self.shoulder_y + 0.3 * self.arm_w)
            self.arms.append(
                (s, (s[0] + arm_len * math.sin(angle), s[1] + arm_len * math.cos(angle)))
            )

    def torso_x(self, y: float) -> tuple[float, float]:
        """Left and right torso edge at height y (linear between shoulders and hips)."""
        t = (y - self.shoulder_y) / max(1e-6, self.hip_y - self.shoulder_y)
        half = self.shoulder_half + t * (self.hip_half - self.shoulder_half)
        return self.cx - half, self.cx + half


def _draw_leg(
    draw, body: _Body, hip, ankle, ident: Identity, lower: Colour, skin: Colour, shade: float
) -> None:
    pants_end = 1.0 if not ident.skirt and not ident.short_lower else 0.42
    if ident.skirt:
        pants_end = 0.0
    knee = _lerp(hip, ankle, pants_end)
    if pants_end < 1.0:
        _limb(draw, knee, ankle, body.leg_w * 0.8, _rgb(skin, shade))
    if pants_end > 0.0:
        _limb(draw, hip, knee, body.leg_w, _rgb(lower, shade))
    shoe = _rgb(COLOUR_RGB[ident.shoe_colour], shade)
    fw, fh = 0.045 * body.p, 0.022 * body.p
    dx = 0.025 * body.p if body.view == "side" else 0.0
    x, y = ankle
    draw.ellipse([x - fw + dx, y - fh, x + fw + dx, y + fh], fill=shoe)


def _draw_lower(draw, body: _Body, ident: Identity, lower: Colour) -> None:
    top = body.hip_y - 0.04 * body.p
    if ident.skirt:
        hem = body.hip_y + (0.15 if ident.short_lower else 0.33) * body.p
        flare = 1.35 if body.view != "side" else 1.6
        hw = body.hip_half
        draw.polygon(
            [
                (body.cx - hw, top),
                (body.cx + hw, top),
                (body.cx + hw * flare, hem),
                (body.cx - hw * flare, hem),
            ],
            fill=lower,
        )
    else:
        bottom = body.hip_y + 0.06 * body.p
        hw = body.hip_half
        draw.polygon(
            [
                (body.cx - hw, top),
                (body.cx + hw, top),
                (body.cx + hw * 0.95, bottom),
                (body.cx - hw * 0.95, bottom),
            ],
            fill=lower,
        )


def _draw_torso(draw, body: _Body, ident: Identity, upper: Colour) -> None:
    y0, y1 = body.shoulder_y, body.hip_y - 0.02 * body.p
    l0, r0 = body.torso_x(y0)
    l1, r1 = body.torso_x(y1)
    draw.polygon([(l0, y0), (r0, y0), (r1, y1), (l1, y1)], fill=upper)
    r = 0.03 * body.p
    for x in (l0 + r * 0.8, r0 - r * 0.8):
        draw.ellipse([x - r, y0 - 0.4 * r, x + r, y0 + 1.4 * r], fill=upper)
    if ident.stripes:
        stripe = _rgb(ident.stripe_rgb)
        step, thick = 0.045 * body.p, 0.016 * body.p
        y = y0 + 0.6 * step
        while y + thick < y1:
            a, b = body.torso_x(y)
            c, d = body.torso_x(y + thick)
            draw.polygon([(a, y), (b, y), (d, y + thick), (c, y + thick)], fill=stripe)
            y += step
    if ident.logo and body.view == "front":
        s = 0.035 * body.p
        cy = y0 + 0.1 * body.p
        contrast = (240, 240, 240) if sum(upper) < 380 else (30, 30, 30)
        draw.rectangle([body.cx - s, cy - s * 0.7, body.cx + s, cy + s * 0.7], fill=contrast)


def _draw_arm(
    draw, body: _Body, shoulder, hand, ident: Identity, upper: Colour, skin: Colour, shade: float
) -> None:
    sleeve_end = 0.42 if ident.short_sleeve else 0.92
    elbow = _lerp(shoulder, hand, sleeve_end)
    if ident.short_sleeve:
        _limb(draw, elbow, hand, body.arm_w * 0.8, _rgb(skin, shade))
    _limb(draw, shoulder, elbow, body.arm_w, _rgb(upper, shade))
    r = 0.5 * body.arm_w
    draw.ellipse([hand[0] - r, hand[1] - r, hand[0] + r, hand[1] + r], fill=_rgb(skin, shade))


def _draw_handbag(draw, body: _Body, hand, colour: str) -> None:
    w, h = 0.05 * body.p, 0.075 * body.p
    x, y = hand[0], hand[1] + 0.01 * body.p
    draw.polygon(
        [(x - w * 0.8, y), (x + w * 0.8, y), (x + w, y + h), (x - w, y + h)],
        fill=_rgb(COLOUR_RGB[colour]),
    )
    draw.line(
        [(x - w * 0.5, y), (x, y - 0.03 * body.p), (x + w * 0.5, y)],
        fill=_rgb(COLOUR_RGB[colour], 0.6),
        width=max(1, int(0.01 * body.p)),
    )


def _draw_bag(draw, body: _Body, ident: Identity) -> None:
    colour = _rgb(COLOUR_RGB[ident.bag_colour])
    right = ident.bag_right if body.view != "back" else not ident.bag_right
    side = 1.0 if right else -1.0
    if body.view == "side":
        side = 0.3
    strap_top = (body.cx - side * 0.8 * body.shoulder_half, body.shoulder_y)
    bag_c = (body.cx + side * (body.hip_half + 0.01 * body.p), body.hip_y - 0.02 * body.p)
    draw.line([strap_top, bag_c], fill=_rgb(colour, 0.55), width=max(1, int(0.014 * body.p)))
    w, h = 0.055 * body.p, 0.045 * body.p
    draw.rectangle([bag_c[0] - w, bag_c[1] - h, bag_c[0] + w, bag_c[1] + h], fill=colour)


def _draw_backpack(draw, body: _Body, ident: Identity) -> None:
    colour = _rgb(COLOUR_RGB[ident.backpack_colour])
    dark = _rgb(colour, 0.6)
    y0, y1 = body.shoulder_y + 0.015 * body.p, body.shoulder_y + 0.24 * body.p
    if body.view == "back":
        hw = 0.78 * body.shoulder_half
        draw.rounded_rectangle(
            [body.cx - hw, y0, body.cx + hw, y1],
            radius=0.03 * body.p,
            fill=colour,
            outline=dark,
            width=max(1, int(0.01 * body.p)),
        )
        draw.rectangle(
            [body.cx - 0.6 * hw, y1 - 0.08 * body.p, body.cx + 0.6 * hw, y1 - 0.02 * body.p],
            fill=dark,
        )
    elif body.view == "side":
        x1 = body.cx - body.shoulder_half + 0.02 * body.p
        draw.rounded_rectangle(
            [x1 - 0.1 * body.p, y0, x1, y1],
            radius=0.025 * body.p,
            fill=colour,
            outline=dark,
            width=max(1, int(0.01 * body.p)),
        )
    else:  # front: only thin straps, too little for an annotator to name the backpack
        for sign in (-1.0, 1.0):
            x = body.cx + sign * 0.55 * body.shoulder_half
            draw.line(
                [(x, body.shoulder_y), (x + sign * 0.01 * body.p, body.shoulder_y + 0.14 * body.p)],
                fill=dark,
                width=max(1, int(0.012 * body.p)),
            )


def _draw_head(draw, body: _Body, ident: Identity, skin: Colour) -> None:
    hx, hy = body.head_c
    r = body.head_r
    hair = _rgb(HAIR_RGB[ident.hair_colour])
    neck_w = 0.45 * r
    draw.rectangle(
        [body.cx - neck_w, hy + 0.6 * r, body.cx + neck_w, body.shoulder_y + 2], fill=skin
    )
    box = [hx - 0.85 * r, hy - r, hx + 0.85 * r, hy + r]
    if body.view == "back":
        draw.ellipse(box, fill=hair)
        if not ident.long_hair:
            draw.chord([hx - 0.6 * r, hy + 0.2 * r, hx + 0.6 * r, hy + 1.1 * r], 0, 180, fill=skin)
    else:
        draw.ellipse(box, fill=skin)
        if body.view == "front":
            draw.chord(
                [hx - 0.9 * r, hy - 1.08 * r, hx + 0.9 * r, hy + 0.5 * r], 180, 360, fill=hair
            )
            if ident.long_hair:
                for sign in (-1.0, 1.0):
                    x = hx + sign * 0.8 * r
                    draw.rectangle(
                        [
                            min(x, x - sign * 0.3 * r),
                            hy - 0.3 * r,
                            max(x, x - sign * 0.3 * r),
                            hy + 1.5 * r,
                        ],
                        fill=hair,
                    )
            eye = max(0.6, 0.11 * r)
            for sign in (-1.0, 1.0):
                ex, ey = hx + sign * 0.32 * r, hy + 0.05 * r
                draw.ellipse([ex - eye, ey - eye, ex + eye, ey + eye], fill=(40, 30, 30))
        else:  # side, facing +x: hair on the back half of the head
            draw.chord(
                [hx - 0.95 * r, hy - 1.08 * r, hx + 0.8 * r, hy + 0.7 * r], 150, 330, fill=hair
            )
            if ident.long_hair:
                draw.rectangle([hx - 0.9 * r, hy - 0.2 * r, hx - 0.2 * r, hy + 1.6 * r], fill=hair)
    if ident.hat:
        hat = _rgb(COLOUR_RGB[ident.hat_colour])
        draw.chord([hx - 0.95 * r, hy - 1.2 * r, hx + 0.95 * r, hy + 0.3 * r], 180, 360, fill=hat)
        brim_l = hx - (0.3 if body.view == "side" else 1.05) * r
        brim_r = hx + (1.4 if body.view == "side" else 1.05) * r
        draw.rectangle([brim_l, hy - 0.5 * r, brim_r, hy - 0.3 * r], fill=_rgb(hat, 0.8))


def draw_person(
    draw: ImageDraw.ImageDraw,
    ident: Identity,
    view: str,
    stride: float,
    cx: float,
    top: float,
    height: float,
    near_right: bool = False,
) -> None:
    """Draws a pedestrian facing the camera, away from it, or walking to the right (side).

    Args:
      draw: PIL drawing context of the (supersampled) RGB canvas.
      ident: the person.
      view: 'front', 'back' or 'side'.
      stride: walking phase in [-1, 1].
      cx, top: horizontal centre and top of the head, canvas pixels.
      height: person height P in canvas pixels.
      near_right: side view only: the handbag is drawn iff `ident.handbag_right == near_right`
        (the rule of scene.compute_visible; the caller mirrors the picture afterwards).
    """
    body = _Body(ident, view, stride, cx, top, height)
    upper, lower = _rgb(ident.upper_rgb), _rgb(ident.lower_rgb)
    skin = _rgb(ident.skin_rgb)
    far_shade = 0.8 if view == "side" else 1.0
    # Far limbs first in a side view; the back arm is darker (in shadow).
    if view == "side":
        _draw_arm(draw, body, *body.arms[0], ident, upper, skin, far_shade)
    if ident.long_hair and view == "front":
        hx, hy = body.head_c
        r = body.head_r
        draw.rectangle(
            [hx - 1.0 * r, hy, hx + 1.0 * r, body.shoulder_y + 0.05 * body.p],
            fill=_rgb(HAIR_RGB[ident.hair_colour]),
        )
    for k, (hip, ankle) in enumerate(body.legs):
        _draw_leg(draw, body, hip, ankle, ident, lower, skin, far_shade if k == 0 else 1.0)
    _draw_lower(draw, body, ident, lower)
    if ident.backpack and view == "side":
        _draw_backpack(draw, body, ident)
    _draw_torso(draw, body, ident, upper)
    if ident.backpack and view != "side":
        _draw_backpack(draw, body, ident)
    if ident.bag:
        _draw_bag(draw, body, ident)
    arms = body.arms[1:] if view == "side" else body.arms
    for shoulder, hand in arms:
        _draw_arm(draw, body, shoulder, hand, ident, upper, skin, 1.0)
    if ident.handbag:
        # Front view: handbag_right means image right; seen from behind the sides swap.
        right = ident.handbag_right if view == "front" else not ident.handbag_right
        if view == "side":
            if ident.handbag_right == near_right:
                _draw_handbag(draw, body, body.arms[1][1], ident.handbag_colour)
        else:
            _draw_handbag(draw, body, body.arms[1 if right else 0][1], ident.handbag_colour)
    _draw_head(draw, body, ident, skin)
