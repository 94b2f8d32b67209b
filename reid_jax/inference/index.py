"""A gallery index: every image under a folder embedded once by a bundle's `encode_image`.

    reid-jax index --bundle BUNDLE --images DIR --index INDEX

Format of the INDEX folder (all files written under a temporary name, then renamed):

    index.json            {"format_version": 1, "bundle": {task, fingerprint}, "generation": g,
                           "count": N, "dim": d, "images_root": DIR}; written last, so it
                           always names a complete generation
    embeddings-<g>.npy    float32 [N, d], unit rows (the bundle's 'embedding')
    extras-<g>.npz        the encoder's other outputs, row-aligned (e.g. 'attribute_logits'),
                          when it has any
    items-<g>.json        N entries {"path": relative to DIR, "size": bytes, "mtime_ns": ...},
                           row i of the embeddings
    approximate-<g>.faiss  with `--approximate`: a faiss IVF-Flat index of the embeddings
                          (`inference.approximate`); index.json's "approximate" names it with
                          its nlist and default nprobe (null without one)
    pending/chunk-*.npz   embedded chunks of an unfinished run (deleted when a run completes)

Incremental: a re-run reuses the rows of files whose (path, size, mtime) are unchanged,
embeds new or changed files and drops deleted ones. Resumable: each chunk of embedded images
is saved to pending/ as soon as it is done, so a killed run loses at most one chunk and the
next run picks the chunks up. A different bundle (other parameters) re-embeds everything.
Images: .jpg, .jpeg, .png, .bmp (any case), recursively, in sorted path order; a file that
cannot be decoded is left out with a warning (and tried again on the next run).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from absl import logging

from reid_jax.data.errors import DatasetFormatError
from reid_jax.inference.bundle import Bundle

FORMAT_VERSION = 1
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
INDEX_FILE = "index.json"
PENDING = "pending"


class IndexFormatError(ValueError):
    """An index folder that cannot be read or does not match."""


@dataclasses.dataclass(frozen=True)
class IndexStats:
    """What a build did: images embedded now, rows reused, files dropped, total rows, and
    the files that could not be decoded (left out, logged, tried again on the next run)."""

    embedded: int
    reused: int
    dropped: int
    total: int
    unreadable: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class GalleryIndex:
    """A loaded index: `embeddings` [N, d] float32, `paths` (absolute) and `extras` (other
    encoder outputs, name -> [N, ...]), row-aligned; `folder` the index folder."""

    embeddings: np.ndarray
    paths: tuple[str, ...]
    manifest: dict
    extras: dict
    folder: Path


def _write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Writes through `write(file)` into a temporary file next to `path`, then renames it over
    `path` (streamed: a large embeddings array is never copied into memory as bytes)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def list_images(root: str | os.PathLike) -> list[dict]:
    """Every image under `root` (recursive, sorted): {'path' (relative), 'size', 'mtime_ns'}."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder of images")
    items = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            stat = path.stat()
            items.append(
                {
                    "path": path.relative_to(root).as_posix(),
                    "size": stat.st_size,
                    "mtime_ns": stat.st_mtime_ns,
                }
            )
    return items


def bundle_fingerprint(bundle: Bundle) -> str:
    """sha1 of the bundle's manifest and parameters: a changed model re-embeds everything."""
    digest = hashlib.sha1((bundle.path / "bundle.json").read_bytes())
    with open(bundle.path / "params.npz", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _key(item: dict) -> tuple:
    return item["path"], item["size"], item["mtime_ns"]


def _read_current(index_dir: Path, fingerprint: str) -> dict[tuple, dict[str, np.ndarray]]:
    """Rows of the complete index made with the same bundle: key -> {output: row}."""
    manifest_path = index_dir / INDEX_FILE
    if not manifest_path.is_file():
        return {}
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexFormatError(f"{manifest_path}: format_version {manifest.get('format_version')}")
    if manifest["bundle"]["fingerprint"] != fingerprint:
        return {}
    outputs = _read_generation(index_dir, manifest["generation"])
    items = outputs.pop("items")
    return {
        _key(item): {name: value[i] for name, value in outputs.items()}
        for i, item in enumerate(items)
    }


def _read_generation(index_dir: Path, generation: int) -> dict:
    out = {"items": json.loads((index_dir / f"items-{generation}.json").read_text())}
    out["embedding"] = np.load(index_dir / f"embeddings-{generation}.npy", allow_pickle=False)
    extras = index_dir / f"extras-{generation}.npz"
    if extras.is_file():
        with np.load(extras, allow_pickle=False) as data:
            out.update({key: data[key] for key in data.files})
    return out


def _read_pending(index_dir: Path, fingerprint: str) -> dict[tuple, dict[str, np.ndarray]]:
    rows: dict[tuple, dict[str, np.ndarray]] = {}
    for chunk in sorted((index_dir / PENDING).glob("chunk-*.npz")):
        with np.load(chunk, allow_pickle=False) as data:
            if str(data["fingerprint"]) != fingerprint:
                continue
            items = json.loads(str(data["items"]))
            names = [k.removeprefix("out_") for k in data.files if k.startswith("out_")]
            outputs = {name: data[f"out_{name}"] for name in names}
            for i, item in enumerate(items):
                rows[_key(item)] = {name: value[i] for name, value in outputs.items()}
    return rows


def resize_for_bundle(image: np.ndarray, bundle: Bundle) -> np.ndarray:
    """uint8 [h, w, 3] RGB -> uint8 [H, W, 3] at the bundle's size, resized as its
    preprocessing says."""
    from reid_jax.data import transforms

    resize = {
        "bilinear_opencv": transforms.resize_bilinear,
        "bicubic_pil": transforms.resize_bicubic,
    }[bundle.preprocessing["resize"]]
    return resize(image, tuple(bundle.preprocessing["image_size"]))


def load_images(paths: list[Path], bundle: Bundle) -> np.ndarray:
    """uint8 [n, H, W, 3] at the bundle's size, resized as its preprocessing says."""
    from reid_jax.data import transforms

    return np.stack([resize_for_bundle(transforms.load_rgb(p), bundle) for p in paths])


def _chunks(items: list[dict], size: int) -> Iterator[list[dict]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def build_index(
    bundle: Bundle,
    images_root: str | os.PathLike,
    index_dir: str | os.PathLike,
    *,
    chunk_size: int = 256,
    batch_size: int = 64,
    progress: bool = True,
    approximate: bool = False,
    nlist: int | None = None,
) -> IndexStats:
    """Creates or updates the index of `images_root` (see the module docstring).

    Args:
      bundle: encodes the images (`encode_image`).
      images_root: the folder of images.
      index_dir: the index folder (created or updated).
      chunk_size: images per pending chunk (the most a killed run loses).
      batch_size: images per encoder call.
      progress: show a progress bar.
      approximate: also build a faiss IVF-Flat index of this generation (needs faiss).
      nlist: its cells (default about sqrt(N)).

    Returns:
      What was embedded, reused and dropped.
    """
    from tqdm import tqdm

    images_root, index_dir = Path(images_root).resolve(), Path(index_dir)
    (index_dir / PENDING).mkdir(parents=True, exist_ok=True)
    fingerprint = bundle_fingerprint(bundle)
    items = list_images(images_root)
    known = _read_current(index_dir, fingerprint)
    known.update(_read_pending(index_dir, fingerprint))
    todo = [item for item in items if _key(item) not in known]
    dropped = len({key[0] for key in known} - {item["path"] for item in items})
    bar = tqdm(total=len(todo), desc="index", unit="img", disable=not progress)
    unreadable = []
    for number, chunk in enumerate(_chunks(todo, chunk_size)):
        readable, arrays = [], []
        for item in chunk:
            try:
                arrays.append(load_images([images_root / item["path"]], bundle)[0])
                readable.append(item)
            except (DatasetFormatError, FileNotFoundError) as error:
                logging.warning("index: left out %s", error)
                unreadable.append(item["path"])
        bar.update(len(chunk) - len(readable))
        chunk = readable
        if not chunk:
            continue
        images = np.stack(arrays)
        outputs = bundle.encode("encode_image", images, batch_size=batch_size)
        name = f"chunk-{os.getpid()}-{number:06d}.npz"
        arrays = {f"out_{k}": v.astype(np.float32) for k, v in outputs.items()}
        arrays.update(items=np.asarray(json.dumps(chunk)), fingerprint=np.asarray(fingerprint))
        _write_atomically(index_dir / PENDING / name, lambda f, a=arrays: np.savez(f, **a))
        for i, item in enumerate(chunk):
            known[_key(item)] = {k: v[i] for k, v in outputs.items()}
        bar.update(len(chunk))
    bar.close()
    items = [item for item in items if _key(item) in known]
    ann = {"nlist": nlist} if approximate else None
    _write_generation(index_dir, items, known, fingerprint, bundle, images_root, ann)
    for chunk in (index_dir / PENDING).glob("chunk-*.npz"):
        chunk.unlink()
    embedded = len(todo) - len(unreadable)
    return IndexStats(
        embedded=embedded,
        reused=len(items) - embedded,
        dropped=dropped,
        total=len(items),
        unreadable=tuple(unreadable),
    )


def _write_generation(index_dir, items, known, fingerprint, bundle, images_root, ann) -> None:
    manifest_path = index_dir / INDEX_FILE
    old = json.loads(manifest_path.read_text())["generation"] if manifest_path.is_file() else 0
    generation = old + 1
    rows = [known[_key(i)] for i in items]
    stacked = (
        {name: np.stack([row[name] for row in rows]).astype(np.float32) for name in rows[0]}
        if rows
        else {}
    )
    embeddings = stacked.pop("embedding", np.zeros((0, 0), np.float32))
    dim = int(embeddings.shape[-1])
    _write_atomically(index_dir / f"embeddings-{generation}.npy", lambda f: np.save(f, embeddings))
    if stacked:
        _write_atomically(index_dir / f"extras-{generation}.npz", lambda f: np.savez(f, **stacked))
    approximate_entry = None
    if ann is not None and len(embeddings):
        from reid_jax.inference import approximate

        built = approximate.build(embeddings, nlist=ann["nlist"])
        file = f"approximate-{generation}.faiss"
        data = approximate.to_bytes(built)
        _write_atomically(index_dir / file, lambda f: f.write(data))
        approximate_entry = {
            "kind": approximate.KIND,
            "file": file,
            "nlist": int(built.nlist),
            "nprobe": int(built.nprobe),
        }
    items_json = json.dumps(items).encode()
    _write_atomically(index_dir / f"items-{generation}.json", lambda f: f.write(items_json))
    manifest = {
        "format_version": FORMAT_VERSION,
        "bundle": {"task": bundle.task, "fingerprint": fingerprint, "path": str(bundle.path)},
        "generation": generation,
        "count": len(items),
        "dim": dim,
        "images_root": str(images_root),
        "approximate": approximate_entry,
    }
    text = (json.dumps(manifest, indent=1) + "\n").encode()
    _write_atomically(manifest_path, lambda f: f.write(text))
    stale_files = ("embeddings-{}.npy", "items-{}.json", "extras-{}.npz", "approximate-{}.faiss")
    for stale in (name.format(old) for name in stale_files):
        (index_dir / stale).unlink(missing_ok=True)


def load_index(index_dir: str | os.PathLike) -> GalleryIndex:
    """Reads a complete index (the generation index.json names)."""
    index_dir = Path(index_dir)
    manifest_path = index_dir / INDEX_FILE
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{index_dir}: no {INDEX_FILE} (run reid-jax index first)")
    manifest = json.loads(manifest_path.read_text())
    outputs = _read_generation(index_dir, manifest["generation"])
    items, embeddings = outputs.pop("items"), outputs.pop("embedding")
    root = Path(manifest["images_root"])
    return GalleryIndex(
        embeddings=embeddings,
        paths=tuple(str(root / i["path"]) for i in items),
        manifest=manifest,
        extras=outputs,
        folder=index_dir,
    )
