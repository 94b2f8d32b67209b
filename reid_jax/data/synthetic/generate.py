"""Generates the whole synthetic dataset atomically, and reuses a complete copy when present.

The tree is built in a temporary sibling folder, a completion marker is written last, and the
folder is renamed into place, so a reader never sees a partial dataset.
"""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import shutil
import uuid

from reid_jax.data.synthetic.config import GENERATOR_VERSION, SyntheticConfig
from reid_jax.data.synthetic.cuhk_pedes import build_cuhk_pedes
from reid_jax.data.synthetic.mals import build_mals, mals_annotation_paths
from reid_jax.data.synthetic.market1501 import build_market1501
from reid_jax.data.synthetic.render import camera_looks

MARKER_NAME = "SYNTHETIC_DATASET.json"


def dataset_paths(root: str | os.PathLike, config: SyntheticConfig) -> dict:
    """Where each part of a generated dataset lives.

    Args:
      root: dataset root.
      config: the config it was generated with (number of MALS files).

    Returns:
      dict of pathlib.Path: root, marker, cuhk_pedes (folder), cuhk_pedes_json (reid_raw.json),
      cuhk_pedes_images (imgs/), market1501 (folder), market_attribute (.mat), mals (the MALS
      image root); plus mals_annotations: tuple of the MALS annotation files in order.
    """
    root = pathlib.Path(root)
    return {
        "root": root,
        "marker": root / MARKER_NAME,
        "cuhk_pedes": root / "CUHK-PEDES",
        "cuhk_pedes_json": root / "CUHK-PEDES" / "reid_raw.json",
        "cuhk_pedes_images": root / "CUHK-PEDES" / "imgs",
        "market1501": root / "Market-1501",
        "market_attribute": root / "Market-1501" / "market_attribute.mat",
        "mals": root / "MALS",
        "mals_annotations": tuple(mals_annotation_paths(root, config)),
    }


def _marker(config: SyntheticConfig) -> dict:
    return {"generator_version": GENERATOR_VERSION, "config": config.to_json()}


def read_marker(root: str | os.PathLike) -> dict | None:
    """The completion marker of a dataset folder.

    Args:
      root: dataset root.

    Returns:
      the parsed SYNTHETIC_DATASET.json (generator_version, config, stats), or None if it is
      absent or unreadable.
    """
    try:
        return json.loads((pathlib.Path(root) / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_complete(root: str | os.PathLike, config: SyntheticConfig) -> bool:
    """Whether root holds a finished dataset of this generator version and config.

    Args:
      root: dataset root.
      config: the wanted options.

    Returns:
      True if the marker matches GENERATOR_VERSION and config exactly.
    """
    marker = read_marker(root)
    return marker is not None and all(marker.get(k) == v for k, v in _marker(config).items())


def _build(tmp: pathlib.Path, config: SyntheticConfig) -> None:
    looks = camera_looks(config.seed)
    stats = {
        "cuhk_pedes": build_cuhk_pedes(tmp, config, looks),
        "market1501": build_market1501(tmp, config, looks),
        "mals": build_mals(tmp, config, looks),
    }
    marker = {**_marker(config), "stats": stats}
    (tmp / MARKER_NAME).write_text(
        json.dumps(marker, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )


def generate_dataset(
    out_dir: str | os.PathLike, config: SyntheticConfig | None = None, *, overwrite: bool = False
) -> dict:
    """Generates CUHK-PEDES, Market-1501 and MALS copies under out_dir, atomically.

    Args:
      out_dir: dataset root to create.
      config: what to generate (default: the embedded default dataset).
      overwrite: replace an existing out_dir; otherwise an existing non-empty out_dir raises.

    Returns:
      dataset_paths(out_dir, config).

    Raises:
      FileExistsError: out_dir exists, is not empty, and overwrite is False.
    """
    config = config or SyntheticConfig()
    out = pathlib.Path(out_dir).absolute()
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: exists and is not empty (pass overwrite=True)")
    out.parent.mkdir(parents=True, exist_ok=True)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = out.parent / f".{out.name}.tmp-{token}"
    try:
        tmp.mkdir()
        _build(tmp, config)
        if out.exists():
            old = out.parent / f".{out.name}.old-{token}"
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.rename(tmp, out)
            except OSError:
                # Another process finished the same dataset first: keep theirs.
                if not is_complete(out, config):
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dataset_paths(out, config)


def ensure_dataset(
    root: str | os.PathLike,
    *,
    seed: int = 0,
    image_size: tuple[int, int] = (128, 64),
    **size_overrides,
) -> pathlib.Path:
    """Returns the synthetic dataset at root, generating it unless a complete copy is there.

    A copy is complete when its marker names this generator version and exactly these
    options; otherwise (missing, partial, other options) root is regenerated and replaced.

    Args:
      root: dataset folder (created if needed).
      seed: dataset seed.
      image_size: (H, W), up to (384, 128).
      **size_overrides: other SyntheticConfig fields, e.g. cuhk_train_ids=20.

    Returns:
      the dataset root as an absolute pathlib.Path (see dataset_paths for its parts).

    Raises:
      ValueError: an unknown or invalid option (the message names it).
      FileExistsError: root is a non-empty folder without a synthetic-dataset marker.
    """
    fields = set(SyntheticConfig.__dataclass_fields__) - {"seed", "image_size"}
    unknown = sorted(set(size_overrides) - fields)
    if unknown:
        raise ValueError(f"ensure_dataset: unknown option(s) {unknown}; known: {sorted(fields)}")
    config = SyntheticConfig(seed=seed, image_size=tuple(image_size), **size_overrides)
    out = pathlib.Path(root).absolute()
    if is_complete(out, config):
        return out
    # Several processes of one run (multi-process training on a shared disk) may call this at
    # once: the first generates under an exclusive lock, the others then find it complete.
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_complete(out, config):
            return out
        if out.exists() and any(out.iterdir()) and read_marker(out) is None:
            # Never delete a folder this generator did not make.
            raise FileExistsError(
                f"{out}: not empty and not a synthetic dataset ({MARKER_NAME} "
                "missing); choose another folder"
            )
        generate_dataset(out, config, overwrite=True)
    return out
