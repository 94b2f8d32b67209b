"""Shared parser for the per-image caption JSON lists (CUHK-PEDES, ICFG-PEDES, RSTPReid).

All three files are JSON lists with one object per image: an identity, a relative image path,
a list of captions, a split and (CUHK/ICFG) `processed_tokens`. Only field names, split
vocabularies and the usual number of captions differ; the dataset modules pass those in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.formats import _files, _json
from reid_jax.data.records import CaptionedImage


@dataclasses.dataclass(frozen=True)
class CaptionSchema:
    """Field names and conventions of one caption-JSON dialect.

    Attributes:
      id_field: integer person id.
      path_field: image path relative to the image folder.
      captions_field: list of sentences.
      split_field: split string.
      tokens_field: list of token lists aligned with the captions, or None if the file has none.
      usual_captions: captions per image in the real data; other counts are kept but logged.
      normalise_split: maps the lower-cased split string to 'train'/'val'/'test', or returns
        None for an unknown value (an error); it may add quirk warnings to the counter.
    """

    id_field: str
    path_field: str
    captions_field: str
    split_field: str
    tokens_field: str | None
    usual_captions: int
    normalise_split: Callable[[str, _files.WarningCounter], str | None]


def _tokens(
    entry: dict, schema: CaptionSchema, n_captions: int, *, path: str, index: int
) -> list[tuple[str, ...]]:
    """Validates the token lists of one record; returns one tuple per caption."""
    field = schema.tokens_field
    value = _json.require(entry, field, path=path, index=index)
    if not isinstance(value, list):
        raise DatasetFormatError(
            path,
            f"expected a list of token lists, got {type(value).__name__}",
            record=index,
            field=field,
        )
    if len(value) != n_captions:
        raise DatasetFormatError(
            path, f"{len(value)} token lists for {n_captions} captions", record=index, field=field
        )
    out = []
    for j, toks in enumerate(value):
        if not isinstance(toks, list) or not all(isinstance(t, str) for t in toks):
            raise DatasetFormatError(
                path, "expected a list of strings", record=index, field=f"{field}[{j}]"
            )
        out.append(tuple(toks))
    return out


def parse_captioned_images(
    entries: list, schema: CaptionSchema, *, json_path: str, image_dir: str, check_images: bool
) -> list[CaptionedImage]:
    """Turns a decoded caption-JSON list into `CaptionedImage` records, in file order.

    Known quirks are kept or mapped, and logged once with their count: captions whose token list
    is empty are dropped (a record left without captions is skipped), images with an unusual
    number of captions are kept whole, repeated image paths are kept (the references keep them).

    Args:
      entries: the decoded top-level JSON list.
      schema: field names and split rules of the dialect.
      json_path: the annotation file (for errors and warnings).
      image_dir: folder the relative image paths are joined to.
      check_images: stat every image and raise if it is missing.

    Returns:
      One record per (kept) JSON object; `person_id` exactly as stored.
    """
    warnings = _files.WarningCounter()
    records = []
    seen_paths: dict[str, int] = {}
    for index, entry in enumerate(entries):
        person_id = _json.get_int(entry, schema.id_field, path=json_path, index=index, minimum=0)
        rel_path = _json.get_str(entry, schema.path_field, path=json_path, index=index)
        captions = _json.get_captions(entry, schema.captions_field, path=json_path, index=index)
        raw_split = _json.get_str(entry, schema.split_field, path=json_path, index=index)
        split = schema.normalise_split(raw_split.strip().lower(), warnings)
        if split is None:
            raise DatasetFormatError(
                json_path,
                f"unknown split value {raw_split!r}",
                record=index,
                field=schema.split_field,
            )
        tokens = None
        if schema.tokens_field is not None:
            tokens = _tokens(entry, schema, len(captions), path=json_path, index=index)
            keep = [j for j, toks in enumerate(tokens) if toks]
            if len(keep) < len(captions):
                for j in sorted(set(range(len(captions))) - set(keep)):
                    warnings.add(
                        "captions with an empty token list dropped", f"record {index}[{j}]"
                    )
                captions = tuple(captions[j] for j in keep)
                tokens = [tokens[j] for j in keep]
            if not captions:
                warnings.add("records skipped: no caption with tokens left", f"record {index}")
                continue
            tokens = tuple(tokens)
        if len(captions) != schema.usual_captions:
            warnings.add(
                f"images with a caption count other than {schema.usual_captions} "
                "(all captions kept)",
                f"record {index}",
            )
        image_path = _files.resolve_image(
            image_dir,
            rel_path,
            source=json_path,
            record=index,
            field=schema.path_field,
            check_exists=check_images,
        )
        if rel_path in seen_paths:
            other = records[seen_paths[rel_path]]
            kind = "same" if other.person_id == person_id else "DIFFERENT"
            warnings.add(
                f"records repeat an earlier image path with the {kind} id (kept)",
                f"record {index}: {rel_path}",
            )
        else:
            seen_paths[rel_path] = len(records)
        records.append(
            CaptionedImage(
                image_path=image_path,
                person_id=person_id,
                captions=captions,
                tokens=tokens,
                split=split,
            )
        )
    warnings.flush(json_path)
    return records
