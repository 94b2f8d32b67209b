"""The search page of `reid-jax serve`: one HTML document and its script, no external files.

The server renders the query forms the bundle supports (a text box for `encode_text`, one
field per attribute for `encode_attributes`, a photo upload for `encode_image`); every value
from the index or bundle goes through `html.escape`. The script (`search_page.js`) posts
the queries to `/api/search` and builds the result grid with `textContent` and
`setAttribute` only, so a file name is never parsed as HTML. `CONTENT_SECURITY_POLICY`
allows scripts from the server's own origin only: an inline handler that slipped into the
page would not run.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

SCRIPT_PATH = "/search.js"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
    "img-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 24px 24px; color: #1e1e1e; }
header { border-bottom: 1px solid #ddd; margin-bottom: 12px; }
h1 { font-size: 20px; margin: 12px 0 4px; }
#index-info { color: #666; margin: 0 0 8px; overflow-wrap: anywhere; }
form { margin: 8px 0; padding: 8px 12px; border: 1px solid #ddd; border-radius: 6px; }
form > label:first-child { display: block; font-weight: 600; margin-bottom: 4px; }
#text-query, #attributes-query { width: min(640px, 70vw); padding: 4px 6px; }
.fields { display: flex; flex-wrap: wrap; gap: 6px 14px; margin-bottom: 6px; }
.fields label { white-space: nowrap; }
.colours { border: none; padding: 0; margin: 0; }
.colours legend { float: left; margin-right: 6px; }
#status { color: #444; min-height: 1.4em; }
#query-photo { height: 96px; vertical-align: middle; margin-left: 8px; }
#error { color: #b91c1c; background: #fee2e2; padding: 6px 10px; border-radius: 4px; }
#results { display: grid; grid-template-columns: repeat(auto-fill, 136px); gap: 12px; }
.card { margin: 0; width: 136px; }
.card img { width: 64px; height: 128px; object-fit: fill; display: block; margin: 0 auto;
  image-rendering: pixelated; border: 1px solid #ccc; }
.card figcaption { font-size: 12px; text-align: center; }
.card .rank { font-weight: 600; margin-right: 6px; }
.card .score { font-family: ui-monospace, monospace; }
.card .name { display: block; color: #555; overflow-wrap: anywhere; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _text_form() -> str:
    return (
        '<form id="text-form" data-kind="text">'
        '<label for="text-query">Describe the person</label>'
        '<input id="text-query" type="text" autocomplete="off" '
        'placeholder="a woman in a red coat with a black bag"> '
        '<button type="submit">Search</button></form>'
    )


def _attribute_field(field: dict[str, Any]) -> str:
    name = _e(field["name"])
    if field["multiple"]:  # colour flags: several with '+', none ticked = don't care
        boxes = "".join(
            f'<label><input type="checkbox" value="{_e(v)}"> {_e(v)}</label> '
            for v in field["values"]
        )
        return (
            f'<fieldset class="colours" data-field="{name}"><legend>{name}</legend>'
            f"{boxes}</fieldset>"
        )
    options = "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in field["values"])
    return (
        f'<label>{name} <select data-field="{name}"><option value="">any</option>'
        f"{options}</select></label>"
    )


def _attributes_form(fields: list[dict[str, Any]]) -> str:
    inputs = "".join(_attribute_field(f) for f in fields)
    return (
        '<form id="attributes-form" data-kind="attributes">'
        '<label for="attributes-query">Attributes</label>'
        f'<div class="fields">{inputs}</div>'
        '<input id="attributes-query" type="text" autocomplete="off" '
        'placeholder="gender=female upper=red backpack=yes"> '
        '<button type="submit">Search</button></form>'
    )


def _image_form() -> str:
    return (
        '<form id="image-form" data-kind="image">'
        '<label for="image-query">Find this person (a photo)</label>'
        '<input id="image-query" type="file" accept="image/*"> '
        '<button type="submit">Search</button></form>'
    )


def render_page(info: dict[str, Any]) -> str:
    """The page for an index (`search_api.info`), with the forms its bundle supports.

    Returns:
      A complete HTML document (UTF-8 text); every value from `info` is escaped.
    """
    kinds = info["query_kinds"]
    forms = []
    if "text" in kinds:
        forms.append(_text_form())
    if "attributes" in kinds:
        forms.append(_attributes_form(info["attribute_fields"]))
    if "image" in kinds:
        forms.append(_image_form())
    summary = (
        f"{_e(info['count'])} images under <code>{_e(info['images_root'])}</code>, "
        f"{_e(info['task'])} bundle <code>{_e(info['bundle'])}</code>; "
        f"queries: {_e(', '.join(kinds))}"
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>reid-jax search</title><style>{_STYLE}</style>"
        f'<script src="{SCRIPT_PATH}" defer></script></head>\n<body>'
        f'<header><h1>reid-jax search</h1><p id="index-info">{summary}</p></header>\n<main>'
        + "\n".join(forms)
        + f'<label>Results <input id="top-k" type="number" min="1" max="{_e(info["max_top_k"])}" '
        'value="10"></label>'
        '<p id="status" role="status"></p><p id="error" role="alert" hidden></p>'
        '<div id="results"></div></main></body></html>\n'
    )


def script() -> bytes:
    """The page's JavaScript (`search_page.js` next to this module), UTF-8."""
    return Path(__file__).with_name("search_page.js").read_bytes()
