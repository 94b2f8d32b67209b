"""Contact sheet of a generated dataset: images with their captions wrapped beneath.

`python -m reid_jax.data.synthetic.preview --data DIR --out docs/images/synthetic_grid.png`
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import textwrap

from PIL import Image, ImageDraw, ImageFont


def _pick_records(records: list[dict], count: int, split: str) -> list[dict]:
    """The first image of each of the first `count` identities of a split."""
    seen, picked = set(), []
    for rec in records:
        if rec["split"] == split and rec["id"] not in seen:
            seen.add(rec["id"])
            picked.append(rec)
            if len(picked) == count:
                break
    return picked


def make_grid(
    data_root: str | os.PathLike,
    *,
    rows: int = 4,
    cols: int = 6,
    zoom: int = 2,
    split: str = "test",
    chars_per_line: int = 30,
) -> Image.Image:
    """Draws a rows x cols grid of CUHK-PEDES-format images, each with its first caption.

    Args:
      data_root: dataset root (holding CUHK-PEDES/reid_raw.json).
      rows, cols: grid shape; one identity per cell.
      zoom: integer magnification of the images.
      split: which split to show.
      chars_per_line: caption wrap width.

    Returns:
      the RGB picture.
    """
    base = pathlib.Path(data_root) / "CUHK-PEDES"
    records = json.loads((base / "reid_raw.json").read_text(encoding="utf-8"))
    picked = _pick_records(records, rows * cols, split)
    if not picked:
        raise ValueError(f"{base / 'reid_raw.json'}: no records with split '{split}'")
    font = ImageFont.load_default(size=11)
    images = [Image.open(base / "imgs" / rec["file_path"]).convert("RGB") for rec in picked]
    h, w = images[0].height * zoom, images[0].width * zoom
    line_h, pad = 13, 6
    texts = [textwrap.wrap(f"[{rec['id']}] {rec['captions'][0]}", chars_per_line) for rec in picked]
    text_h = line_h * max(len(t) for t in texts)
    cell_w = max(w, int(chars_per_line * 6.2)) + 2 * pad
    cell_h = h + text_h + 3 * pad
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, (img, lines) in enumerate(zip(images, texts, strict=True)):
        x0, y0 = (k % cols) * cell_w, (k // cols) * cell_h
        sheet.paste(
            img.resize((w, h), Image.Resampling.NEAREST), (x0 + (cell_w - w) // 2, y0 + pad)
        )
        for i, line in enumerate(lines):
            draw.text((x0 + pad, y0 + h + 2 * pad + i * line_h), line, fill=(0, 0, 0), font=font)
    return sheet


def main(argv: list[str] | None = None) -> int:
    """Writes the grid picture (temporary name, then rename)."""
    parser = argparse.ArgumentParser(prog="python -m reid_jax.data.synthetic.preview")
    parser.add_argument("--data", required=True, help="dataset root made by the generator")
    parser.add_argument("--out", required=True, help="output .png")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--cols", type=int, default=6)
    parser.add_argument("--split", default="test")
    args = parser.parse_args(argv)
    try:
        sheet = make_grid(args.data, rows=args.rows, cols=args.cols, split=args.split)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    # A 256-colour palette keeps the committed PNG small; the pictures stay faithful.
    sheet.quantize(256, dither=Image.Dither.NONE).save(tmp, format="PNG", optimize=True)
    os.replace(tmp, out)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
