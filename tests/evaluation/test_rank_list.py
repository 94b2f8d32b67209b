"""Rank-list PNG/HTML: content, border colours, ordering, junk handling, atomic writes."""

import os
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from reid_jax.evaluation import rank_list

COLOURS = [(230, 120, 40), (60, 120, 220), (40, 170, 90), (200, 60, 160), (220, 200, 60)]


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    root = tmp_path_factory.mktemp("gallery")
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 5, 24)
    paths = []
    for g, pid in enumerate(ids):
        pixels = np.zeros((96, 40, 3), np.uint8)
        pixels[:] = COLOURS[pid]
        pixels[30:60, 10:30] = 255 - np.array(COLOURS[pid])
        path = root / f"{g:03d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return ids, paths


def _step_ap(scores, positives):
    order = np.argsort(-scores, kind="stable")
    hits = np.flatnonzero(positives[order])
    return np.mean(np.arange(1, len(hits) + 1) / (hits + 1)) if len(hits) else np.nan


def test_text_queries_png_and_html(gallery, tmp_path):
    ids, paths = gallery
    rng = np.random.default_rng(1)
    qids = np.array([0, 1, 2, 3, 4, 9])  # id 9: no positive
    sim = rng.standard_normal((6, 24)).astype(np.float32) + 2.0 * (qids[:, None] == ids[None])
    texts = [f"person {i} in a <b>red</b> coat walking past the shop window" for i in range(6)]
    png, page = tmp_path / "out" / "rank.png", tmp_path / "out" / "rank.html"
    info = rank_list.render_rank_list(
        queries=texts,
        gallery_paths=paths,
        similarity=sim,
        query_ids=qids,
        gallery_ids=ids,
        out_png=str(png),
        out_html=str(page),
        num_queries=4,
        top_k=10,
    )
    assert [row["query_index"] for row in info] == [0, 1, 2, 3]
    image = np.asarray(Image.open(png).convert("RGB"))
    seen = set()
    for row in info:
        q = row["query_index"]
        want = list(np.argsort(-sim[q], kind="stable")[:10])
        assert row["gallery_indices"] == want
        assert row["correct"] == [bool(ids[g] == qids[q]) for g in want]
        assert row["ap"] == pytest.approx(_step_ap(sim[q], ids == qids[q]))
        for (x0, y0, x1, y1), ok in zip(row["boxes"], row["correct"], strict=True):
            colour = rank_list.CORRECT_RGB if ok else rank_list.WRONG_RGB
            for x, y in ((x0 + 1, y0 + 1), (x1 - 1, y1 - 1), (x0 + 1, (y0 + y1) // 2)):
                assert tuple(image[y, x]) == colour
            seen.add(ok)
        for (x0, y0, x1, _), g in zip(row["boxes"], row["gallery_indices"], strict=True):
            inner = image[y0 + 12, (x0 + x1) // 2]  # the thumbnail itself, not its border
            assert np.abs(inner.astype(int) - COLOURS[ids[g]]).max() <= 2
    assert seen == {True, False}
    html_text = page.read_text()
    assert html_text.count("data:image/jpeg;base64,") == 40
    assert "&lt;b&gt;red&lt;/b&gt;" in html_text and "<b>red</b>" not in html_text
    assert sorted(os.listdir(tmp_path / "out")) == ["rank.html", "rank.png"]


def test_worst_first_image_queries_and_junk(gallery, tmp_path):
    ids, paths = gallery
    rng = np.random.default_rng(2)
    dist = rng.random((5, 24)).astype(np.float32)
    qids = ids[:5]
    junk = np.zeros((5, 24), bool)
    junk[np.arange(5), np.arange(5)] = True  # a query's own image is junk
    info = rank_list.render_rank_list(
        queries=paths[:5],
        gallery_paths=paths,
        similarity=dist,
        query_ids=qids,
        gallery_ids=ids,
        out_png=str(tmp_path / "r.png"),
        out_html=str(tmp_path / "r.html"),
        num_queries=3,
        top_k=30,
        worst_first=True,
        gallery_junk_mask=junk,
        is_distance=True,
    )
    aps = [_step_ap(-dist[q][~junk[q]], (ids == qids[q])[~junk[q]]) for q in range(5)]
    want = [int(q) for q in np.argsort(aps, kind="stable")[:3]]
    assert [row["query_index"] for row in info] == want
    for row in info:
        q = row["query_index"]
        assert q not in row["gallery_indices"] and len(row["gallery_indices"]) == 23
        assert row["ap"] == pytest.approx(aps[q])
    assert Image.open(tmp_path / "r.png").size[0] > 23 * rank_list.THUMB_W
    with pytest.raises(ValueError, match="similarity"):
        rank_list.render_rank_list(
            queries=["a"],
            gallery_paths=paths,
            similarity=dist,
            query_ids=qids,
            gallery_ids=ids,
            out_png=str(tmp_path / "x.png"),
            out_html=str(tmp_path / "x.html"),
        )


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text, as a browser's parser sees them."""

    def __init__(self, page):
        super().__init__()
        self.tags, self.text = [], []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


HOSTILE_NAMES = ("'><img src=x onerror=alert(1)>.png", '"><svg onload=alert(2)>.png')
HOSTILE_CAPTION = '<script>alert(3)</script> a man "><img src=x onerror=alert(4)> in red'


def _only_our_markup(page, texts):
    """No script/svg element, no event handler attribute; the hostile strings show as text."""
    parsed = _Tags(page)
    assert not [t for t, _ in parsed.tags if t in ("script", "svg")]
    assert not [a for _, attrs in parsed.tags for a in attrs if a.startswith("on")]
    assert {src[:5] for t, attrs in parsed.tags if t == "img" for src in [attrs["src"]]} == {
        "data:"
    }  # every image is one of ours (no src=x)
    shown = "".join(parsed.text) + " ".join(attrs.get("title", "") for _, attrs in parsed.tags)
    for text in texts:
        assert text in shown, text


def test_hostile_captions_and_file_names_stay_text(gallery, tmp_path):
    """Rank lists and search result pages (issue 14, item 6): captions and gallery file names
    holding markup that would break out of an attribute or open a script stay text."""
    ids, paths = gallery
    hostile = []
    for name, source in zip(HOSTILE_NAMES, paths, strict=False):
        target = tmp_path / name
        target.write_bytes(open(source, "rb").read())
        hostile.append(str(target))
    gallery_paths = hostile + paths[len(hostile) :]
    sim = np.zeros((1, len(gallery_paths)), np.float32)
    sim[0, : len(hostile)] = 1.0  # the hostile names rank first
    page = tmp_path / "rank.html"
    rank_list.render_rank_list(
        queries=[HOSTILE_CAPTION],
        gallery_paths=gallery_paths,
        similarity=sim,
        query_ids=np.array([ids[0]]),
        gallery_ids=ids,
        out_png=str(tmp_path / "rank.png"),
        out_html=str(page),
        num_queries=1,
        top_k=4,
    )
    _only_our_markup(page.read_text(), [HOSTILE_CAPTION, *HOSTILE_NAMES])

    page = tmp_path / "search.html"
    rank_list.render_search_results(
        query=HOSTILE_CAPTION,
        query_is_image=False,
        paths=gallery_paths[:3],
        scores=[0.9, 0.8, 0.7],
        out_png=str(tmp_path / "search.png"),
        out_html=str(page),
    )
    _only_our_markup(page.read_text(), [HOSTILE_CAPTION, *HOSTILE_NAMES, *hostile])
