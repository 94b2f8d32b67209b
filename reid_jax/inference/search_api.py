"""The JSON API behind the search page (`reid-jax serve`): request bodies in, JSON-ready dicts out.

`POST /api/search`, `Content-Type: application/json`, exactly one query key:

    {"text": "a woman in a red coat", "top_k": 10}                 bundles with encode_text
    {"attributes": "gender=female upper=red", "top_k": 10}         bundles with encode_attributes
    {"image": "<base64 of a photo file>", "image_name": "q.jpg"}   bundles with encode_image

`image` is the file's bytes (JPEG, PNG, BMP, ...) in standard base64, or a `data:` URL as a
browser's FileReader gives it; `image_name` is only echoed back as the query. `top_k` is
1..MAX_TOP_K (default 10). `"rerank": true` adds the method's second stage (`search --rerank`:
APTM's ITM for sentences, k-reciprocal for photos). The answer:

    {"query": str, "kind": "text" | "attributes" | "image", "method": "embedding (exact)" | ...,
     "results": [{"rank": 1, "score": float (null if not finite), "row": int, "path": absolute path,
                  "name": path under the index's images folder, "image_url": "/image/<row>"}]}

A bad request raises a `ValueError` whose message names the field (`RequestError` for the
request's shape; the library's own errors for a bad attribute term, an undecodable photo or a
bundle that cannot encode that kind); the server answers it as `{"error": message}`, HTTP 400.
`GET /api/info` describes the index and the query kinds (`info`).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from reid_jax.inference.search import Searcher, SearchResult

MAX_TOP_K = 200
MAX_TEXT_CHARS = 2000
QUERY_KEYS = ("text", "attributes", "image")


class RequestError(ValueError):
    """A search request of the wrong shape: not JSON, a missing, unknown or mistyped field."""


def attribute_fields(searcher: Searcher) -> list[dict[str, Any]]:
    """The attribute query fields of the bundle's dataset, [] if it takes no attributes.

    Returns:
      [{"name": field, "values": [value, ...], "multiple": True for colour fields ('+')}]
    """
    from reid_jax.data.attribute_examples import query_vocabulary
    from reid_jax.text.attribute_query import ColourField

    if "attributes" not in searcher.query_kinds:
        return []
    vocabulary = query_vocabulary(searcher.bundle.preprocessing["dataset"])
    return [
        {"name": f.name, "values": list(f.values), "multiple": isinstance(f, ColourField)}
        for f in vocabulary.fields
    ]


def info(searcher: Searcher) -> dict[str, Any]:
    """What the page shows above the query boxes: index size, bundle, query kinds, fields."""
    manifest = searcher.index.manifest
    return {
        "count": len(searcher.index.paths),
        "images_root": manifest["images_root"],
        "task": searcher.bundle.task,
        "bundle": str(searcher.bundle.path),
        "query_kinds": list(searcher.query_kinds),
        "attribute_fields": attribute_fields(searcher),
        "max_top_k": MAX_TOP_K,
    }


def decode_photo(data: str, name: str) -> np.ndarray:
    """A base64 photo (or `data:` URL) -> uint8 [h, w, 3] RGB.

    Raises:
      RequestError: not base64, or not an image PIL can decode (the message names `name`).
    """
    from PIL import Image

    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"'image' ({name}): not base64-encoded file bytes") from None
    try:
        with Image.open(io.BytesIO(raw)) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise RequestError(f"'image' ({name}): cannot decode the photo ({error})") from None


def _top_k(request: dict[str, Any]) -> int:
    top_k = request.get("top_k", 10)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise RequestError(f"'top_k' must be an integer from 1 to {MAX_TOP_K}, got {top_k!r}")
    return top_k


def parse_request(body: bytes) -> dict[str, Any]:
    """A request body -> {"kind", "query" (str), "top_k", "image_name", "rerank"}; checks only
    the shape.

    Raises:
      RequestError: not a JSON object, not exactly one query key, an unknown key, a query
        that is not a non-empty string, or a bad `top_k`.
    """
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RequestError(f"the request body is not JSON ({error})") from None
    if not isinstance(request, dict):
        raise RequestError("the request body must be a JSON object")
    allowed = [*QUERY_KEYS, "top_k", "image_name", "rerank"]
    unknown = sorted(set(request) - set(allowed))
    if unknown:
        raise RequestError(f"unknown field(s) {unknown}; allowed: {allowed}")
    kinds = [key for key in QUERY_KEYS if key in request]
    if len(kinds) != 1:
        raise RequestError(f"give exactly one of {list(QUERY_KEYS)}, got {kinds or 'none'}")
    kind, query = kinds[0], request[kinds[0]]
    if not isinstance(query, str) or not query.strip():
        raise RequestError(f"'{kind}' must be a non-empty string")
    if kind != "image" and len(query) > MAX_TEXT_CHARS:
        raise RequestError(f"'{kind}' is longer than {MAX_TEXT_CHARS} characters")
    name = request.get("image_name", "uploaded photo")
    if not isinstance(name, str):
        raise RequestError("'image_name' must be a string")
    rerank = request.get("rerank", False)
    if not isinstance(rerank, bool):
        raise RequestError(f"'rerank' must be true or false, got {rerank!r}")
    return {
        "kind": kind,
        "query": query,
        "top_k": _top_k(request),
        "image_name": name,
        "rerank": rerank,
    }


def result_json(searcher: Searcher, result: SearchResult) -> list[dict[str, Any]]:
    """The rows of a result as the API returns them (see the module docstring)."""
    root = Path(searcher.index.manifest["images_root"])
    rows = []
    for rank, (row, score, path) in enumerate(
        zip(result.indices, result.scores, result.paths, strict=True), 1
    ):
        try:
            name = Path(path).relative_to(root).as_posix()
        except ValueError:
            name = Path(path).name
        rows.append(
            {
                "rank": rank,
                "score": float(score) if np.isfinite(score) else None,  # JSON has no inf
                "row": int(row),
                "path": path,
                "name": name,
                "image_url": f"/image/{int(row)}",
            }
        )
    return rows


def answer_search(searcher: Searcher, body: bytes) -> dict[str, Any]:
    """Runs the query of a `POST /api/search` body (see the module docstring).

    Raises:
      ValueError: a bad request; the message names the field or the term.
    """
    request = parse_request(body)
    kind, query = request["kind"], request["query"]
    if kind not in searcher.query_kinds:
        raise RequestError(
            f"the {searcher.bundle.task} bundle cannot take '{kind}' queries; "
            f"it takes {list(searcher.query_kinds)}"
        )
    if kind == "image":
        pixels = decode_photo(query, request["image_name"])
        result = searcher.search(image=pixels, top_k=request["top_k"], rerank=request["rerank"])
        query = request["image_name"]
    else:
        result = searcher.search(**{kind: query}, top_k=request["top_k"], rerank=request["rerank"])
    return {
        "query": query,
        "kind": kind,
        "method": result.method,
        "results": result_json(searcher, result),
    }
