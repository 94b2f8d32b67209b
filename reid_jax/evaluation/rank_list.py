"""Rank-list pictures: one row per query with its top-k gallery images (PNG + HTML page).

Each row shows the query (caption text wrapped in a left panel, or the query image), then the
top-k gallery thumbnails with a green border if correct (same id) and red if not, the rank
above each thumbnail, and the query's AP. Junk gallery entries are skipped, as in the metrics.
Both files are written to a temporary name and renamed.
"""

from __future__ import annotations

import base64
import html
import io
import os
import textwrap
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from reid_jax.data import image_locations, transforms
from reid_jax.data.errors import DatasetFormatError
from reid_jax.evaluation import retrieval

CORRECT_RGB = (22, 163, 74)
WRONG_RGB = (220, 38, 38)
THUMB_W, THUMB_H = 64, 128
BORDER = 4
_PAD = 8
_LABEL_H = 18
_PANEL_W = 232
_HEADER_H = 30
_BACKGROUND = (255, 255, 255)
_TEXT = (30, 30, 30)
_MUTED = (110, 110, 110)
_QUERY_RGB = (59, 130, 246)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def _thumbnail(path: str) -> Image.Image:
    """THUMB_W x THUMB_H RGB thumbnail of an image file or a prepared dataset's image location
    (`data.image_locations`), or a grey placeholder if it cannot be read."""
    try:
        image = Image.fromarray(transforms.load_rgb(path))
        return image.resize((THUMB_W, THUMB_H), Image.Resampling.BICUBIC)
    except (OSError, ValueError, DatasetFormatError):
        tile = Image.new("RGB", (THUMB_W, THUMB_H), (200, 200, 200))
        ImageDraw.Draw(tile).text((6, THUMB_H // 2 - 6), "missing", fill=_MUTED, font=_font(11))
        return tile


def _atomic_write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _select_rows(scores, query_ids, gallery_ids, junk, query_indices, num_queries, worst_first):
    """Query rows to draw and the AP of every query (NaN if it has no positive)."""
    ranks = retrieval.rank_positives(scores, query_ids, gallery_ids, junk_mask=junk)
    ap = retrieval.average_precision(ranks, ap_mode="step")
    if query_indices is not None:
        return [int(i) for i in query_indices], ap
    if worst_first:
        order = np.argsort(np.where(np.isnan(ap), np.inf, ap), kind="stable")
        order = [int(i) for i in order if not np.isnan(ap[i])]
    else:
        order = list(range(len(query_ids)))
    return order[:num_queries], ap


def render_rank_list(
    *,
    queries: Sequence[str],
    gallery_paths: Sequence[str],
    similarity: np.ndarray,
    query_ids: np.ndarray,
    gallery_ids: np.ndarray,
    out_png: str,
    out_html: str,
    query_indices: Sequence[int] | None = None,
    num_queries: int = 8,
    top_k: int = 10,
    worst_first: bool = False,
    gallery_junk_mask: np.ndarray | None = None,
    is_distance: bool = False,
    queries_are_images: bool | None = None,
) -> list[dict]:
    """Draws the top-k gallery items of some queries to a PNG grid and an HTML page.

    Args:
      queries: Q caption strings, or Q query image paths.
      gallery_paths: G gallery image paths.
      similarity: [Q, G] scores, higher = better (or distances with is_distance=True).
      query_ids: [Q] int identities.
      gallery_ids: [G] int identities.
      out_png: output PNG path.
      out_html: output HTML path (thumbnails embedded as base64 JPEG, self-contained).
      query_indices: rows to draw; default the first `num_queries` (or the worst by AP).
      num_queries: rows to draw when query_indices is None.
      top_k: gallery items per row.
      worst_first: draw the queries with the lowest AP first (queries without positives are
        left out).
      gallery_junk_mask: optional [Q, G] bool, True = junk (skipped, not counted in AP).
      is_distance: `similarity` holds distances (lower = better).
      queries_are_images: whether `queries` are image paths; None = yes iff every query is an
        existing file.

    Returns:
      One dict per drawn row: query_index, ap (step AP, NaN without positives),
      gallery_indices, correct, and boxes (x0, y0, x1, y1) of each bordered thumbnail in the PNG.
    """
    scores = -np.asarray(similarity, np.float32) if is_distance else np.asarray(similarity)
    scores = np.asarray(scores, np.float32)
    query_ids, gallery_ids = np.asarray(query_ids), np.asarray(gallery_ids)
    if scores.shape != (len(queries), len(gallery_paths)):
        raise ValueError(f"similarity {scores.shape} != ({len(queries)}, {len(gallery_paths)})")
    if queries_are_images is None:
        queries_are_images = all(
            image_locations.is_location(q) or os.path.isfile(q) for q in queries
        )
    rows, ap = _select_rows(
        scores, query_ids, gallery_ids, gallery_junk_mask, query_indices, num_queries, worst_first
    )
    top_k = min(top_k, scores.shape[1])
    masked = scores if gallery_junk_mask is None else np.where(gallery_junk_mask, -np.inf, scores)
    info = []
    for q in rows:
        order = np.argsort(-masked[q], kind="stable")
        if gallery_junk_mask is not None:
            order = order[~gallery_junk_mask[q, order]]
        top = order[:top_k]
        info.append(
            {
                "query_index": q,
                "ap": float(ap[q]),
                "gallery_indices": [int(g) for g in top],
                "correct": [bool(gallery_ids[g] == query_ids[q]) for g in top],
            }
        )
    ids = (query_ids, gallery_ids)
    png = _draw_png(info, queries, gallery_paths, ids, top_k, queries_are_images)
    _atomic_write(out_png, png)
    page = _html_page(info, queries, gallery_paths, ids, queries_are_images)
    _atomic_write(out_html, page.encode("utf-8"))
    return info


def render_first_and_worst(
    out_dir: str | os.PathLike, *, num_queries: int, top_k: int, **kwargs
) -> None:
    """Writes rank_list_first.{png,html} and rank_list_worst.{png,html} (lowest AP first).

    Args:
      out_dir: folder for the four files (created if needed).
      num_queries: queries per picture.
      top_k: gallery items per query.
      **kwargs: the other keyword arguments of `render_rank_list` (queries, gallery_paths,
        similarity, query_ids, gallery_ids, ...).
    """
    os.makedirs(out_dir, exist_ok=True)
    for name, worst_first in (("first", False), ("worst", True)):
        render_rank_list(
            out_png=os.path.join(out_dir, f"rank_list_{name}.png"),
            out_html=os.path.join(out_dir, f"rank_list_{name}.html"),
            num_queries=num_queries,
            top_k=top_k,
            worst_first=worst_first,
            **kwargs,
        )


def _draw_png(info, queries, gallery_paths, ids, top_k, queries_are_images) -> bytes:
    query_ids, gallery_ids = ids
    cell_w = THUMB_W + 2 * BORDER + _PAD
    row_h = _LABEL_H + THUMB_H + 2 * BORDER + _LABEL_H + _PAD
    panel_w = 2 * cell_w if queries_are_images else _PANEL_W
    width = _PAD + panel_w + _PAD + top_k * cell_w
    height = _HEADER_H + max(1, len(info)) * row_h + _PAD
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    title, small, body = _font(15), _font(11), _font(12)
    draw.text((_PAD, 8), f"Top-{top_k} retrieval", fill=_TEXT, font=title)
    legend_x = max(_PAD + panel_w + _PAD, 170)
    for colour, label in ((CORRECT_RGB, "correct id"), (WRONG_RGB, "wrong id")):
        draw.rectangle((legend_x, 11, legend_x + 12, 23), fill=colour)
        draw.text((legend_x + 18, 10), label, fill=_TEXT, font=body)
        legend_x += 110
    for r, row in enumerate(info):
        y = _HEADER_H + r * row_h
        q = row["query_index"]
        ap = "n/a" if np.isnan(row["ap"]) else f"{100 * row['ap']:.1f}%"
        head = f"query {q}  id {query_ids[q]}  AP {ap}"
        draw.text(
            (_PAD, y), head if not queries_are_images else f"q{q} AP {ap}", fill=_TEXT, font=body
        )
        panel_y = y + _LABEL_H
        if queries_are_images:
            draw.rectangle(
                (
                    _PAD,
                    panel_y,
                    _PAD + THUMB_W + 2 * BORDER - 1,
                    panel_y + THUMB_H + 2 * BORDER - 1,
                ),
                fill=_QUERY_RGB,
            )
            canvas.paste(_thumbnail(queries[q]), (_PAD + BORDER, panel_y + BORDER))
            draw.text(
                (_PAD, panel_y + THUMB_H + 2 * BORDER + 2),
                f"id {query_ids[q]}",
                fill=_MUTED,
                font=small,
            )
        else:
            lines = textwrap.wrap(queries[q], width=38)[:9]
            draw.rectangle(
                (_PAD, panel_y, _PAD + _PANEL_W, panel_y + THUMB_H + 2 * BORDER),
                fill=(246, 246, 246),
            )
            for i, line in enumerate(lines):
                draw.text((_PAD + 6, panel_y + 4 + 15 * i), line, fill=_TEXT, font=body)
        row["boxes"] = []
        for j, (g, ok) in enumerate(zip(row["gallery_indices"], row["correct"], strict=True)):
            x = _PAD + panel_w + _PAD + j * cell_w
            box = (x, panel_y, x + THUMB_W + 2 * BORDER - 1, panel_y + THUMB_H + 2 * BORDER - 1)
            draw.rectangle(box, fill=CORRECT_RGB if ok else WRONG_RGB)
            canvas.paste(_thumbnail(gallery_paths[g]), (x + BORDER, panel_y + BORDER))
            draw.text((x, y), f"#{j + 1}", fill=_MUTED, font=small)
            draw.text((x, box[3] + 2), f"id {gallery_ids[g]}", fill=_MUTED, font=small)
            row["boxes"].append(box)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _data_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _html_page(info, queries, gallery_paths, ids, queries_are_images) -> str:
    query_ids, gallery_ids = ids
    out = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Rank list</title><style>",
        "body{font-family:sans-serif;margin:16px;color:#1e1e1e}",
        "table{border-collapse:collapse}td{padding:4px;vertical-align:top;text-align:center}",
        "td.q{width:240px;text-align:left;font-size:13px}",
        "img{display:block;width:64px;height:128px;border:4px solid}",
        f".ok{{border-color:rgb{CORRECT_RGB}}}.bad{{border-color:rgb{WRONG_RGB}}}",
        "small{color:#6e6e6e}</style></head><body>",
        "<h3>Top-k retrieval (green border: correct id, red: wrong id)</h3><table>",
    ]
    for row in info:
        q = row["query_index"]
        ap = "n/a" if np.isnan(row["ap"]) else f"{100 * row['ap']:.1f}%"
        head = f"<b>query {q}</b> id {html.escape(str(query_ids[q]))} AP {ap}<br>"
        if queries_are_images:
            body = f"<img class='q' src='{_data_uri(_thumbnail(queries[q]))}'>"
        else:
            body = html.escape(queries[q])
        cells = [f"<td class='q'>{head}{body}</td>"]
        for rank, (g, ok) in enumerate(zip(row["gallery_indices"], row["correct"], strict=True)):
            uri = _data_uri(_thumbnail(gallery_paths[g]))
            name = html.escape(image_locations.display_name(gallery_paths[g]))
            cells.append(
                f"<td><small>#{rank + 1}</small><img class='{'ok' if ok else 'bad'}' "
                f"src='{uri}' title='{name}'><small>id {html.escape(str(gallery_ids[g]))}"
                "</small></td>"
            )
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table></body></html>")
    return "\n".join(out)


def render_search_results(
    *,
    query: str,
    query_is_image: bool,
    paths: Sequence[str],
    scores: Sequence[float],
    out_png: str,
    out_html: str,
) -> None:
    """One search's top results (no ground truth): the query (text or image) and each result
    with its rank, score and file name, as a PNG and a self-contained HTML page.

    Args:
      query: the query text, or the query image path.
      query_is_image: whether `query` is an image path.
      paths: the k result images, best first.
      scores: their k scores (higher = better).
      out_png, out_html: output files (written atomically).
    """
    top_k = len(paths)
    cell_w = THUMB_W + 2 * BORDER + _PAD
    panel_w = cell_w if query_is_image else _PANEL_W
    width = _PAD + panel_w + _PAD + max(top_k, 1) * cell_w
    height = _HEADER_H + _LABEL_H + THUMB_H + 2 * BORDER + 2 * _LABEL_H + _PAD
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    small, body = _font(11), _font(12)
    draw.text((_PAD, 8), f"Top-{top_k} results", fill=_TEXT, font=_font(15))
    y = _HEADER_H + _LABEL_H
    if query_is_image:
        draw.rectangle(
            (_PAD, y, _PAD + THUMB_W + 2 * BORDER - 1, y + THUMB_H + 2 * BORDER - 1),
            fill=_QUERY_RGB,
        )
        canvas.paste(_thumbnail(query), (_PAD + BORDER, y + BORDER))
    else:
        draw.rectangle((_PAD, y, _PAD + _PANEL_W, y + THUMB_H + 2 * BORDER), fill=(246, 246, 246))
        for i, line in enumerate(textwrap.wrap(query, width=38)[:9]):
            draw.text((_PAD + 6, y + 4 + 15 * i), line, fill=_TEXT, font=body)
    cells = []
    for j, (path, score) in enumerate(zip(paths, scores, strict=True)):
        x = _PAD + panel_w + _PAD + j * cell_w
        draw.rectangle(
            (x, y, x + THUMB_W + 2 * BORDER - 1, y + THUMB_H + 2 * BORDER - 1), fill=_MUTED
        )
        thumb = _thumbnail(path)
        canvas.paste(thumb, (x + BORDER, y + BORDER))
        draw.text((x, y - _LABEL_H + 2), f"#{j + 1}", fill=_MUTED, font=small)
        draw.text((x, y + THUMB_H + 2 * BORDER + 2), f"{score:.3f}", fill=_TEXT, font=small)
        name = image_locations.display_name(path)
        draw.text((x, y + THUMB_H + 2 * BORDER + 2 + 13), name[:11], fill=_MUTED, font=small)
        cells.append(
            f"<td><small>#{j + 1} · {score:.3f}</small><img src='{_data_uri(thumb)}' "
            f"title='{html.escape(path, quote=True)}'><small>{html.escape(name)}</small></td>"
        )
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=True)
    _atomic_write(out_png, buf.getvalue())
    shown = f"<img src='{_data_uri(_thumbnail(query))}'>" if query_is_image else html.escape(query)
    page = "\n".join(
        [
            "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Search results</title>",
            "<style>body{font-family:sans-serif;margin:16px;color:#1e1e1e}",
            "td{padding:4px;vertical-align:top;text-align:center}td.q{width:240px;text-align:left}",
            "img{display:block;width:64px;height:128px;border:4px solid #6e6e6e}",
            "small{color:#6e6e6e}</style></head><body>",
            f"<h3>Top-{top_k} results</h3><table><tr><td class='q'>{shown}</td>",
            "".join(cells),
            "</tr></table></body></html>",
        ]
    )
    _atomic_write(out_html, page.encode("utf-8"))
