"""What a training stream does with an image it cannot read: stop naming it, or skip it.

`config.data.bad_images` (every task):

  'stop' (default)  the run stops with `BadImageError`, which names the file and says how to
                    skip such files instead; `reid-jax train` prints it as one line (status 2).
  'skip'            the example is replaced by a substitute record, the same one every time
                    (so every process, epoch and resume sees the same batch), and counted:
                    the train step logs `data/skipped_images`, the images replaced in the
                    steps since the previous log line; each replacement is logged with both
                    paths.

The substitute is the next record, cyclically in record order, of the same identity whose
image decodes; so the label is unchanged and a P x K batch keeps K images of each of its P
identities. Where no other image of that identity decodes, streams without identity groups
(SSAN, APTM) take the next decodable record of any identity, with its own label, while P x K
streams stop with `BadImageError`: no image can stand for that identity. A substitute's
augmentation is keyed exactly as the original's would have been, so a replaced example is a
pure function of (seed, epoch, position) and of the files, never of timing or worker count.
A file that is missing counts as unreadable too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from absl import logging

from reid_jax.data import transforms
from reid_jax.data.errors import DatasetFormatError

POLICIES = ("stop", "skip")
# A substitute search gives up after this many further unreadable files (a broken dataset
# is better reported than scanned file by file).
MAX_FAILED_SUBSTITUTES = 32
SKIPPED_METRIC = "skipped_images"  # the step's metric; logged as data/skipped_images
SKIPPED_FIELD = "skipped"  # the per-example batch field (int32, 1 = replaced), under 'skip'


class BadImageError(DatasetFormatError):
    """A training image cannot be decoded (or is missing); the message names the file."""


def check_policy(policy: str) -> str:
    """Returns `policy` if it is one of POLICIES.

    Raises:
      ValueError: naming `data.bad_images` and the choices.
    """
    if policy not in POLICIES:
        raise ValueError(f"data.bad_images must be one of {POLICIES}, got {policy!r}")
    return policy


def substitute_order(record: int, labels: np.ndarray, *, same_identity_only: bool) -> Iterator[int]:
    """Candidate substitutes of `record`, best first.

    Args:
      record: the record whose image failed.
      labels: int [N] identity of every record.
      same_identity_only: stop after the records of `record`'s identity.

    Returns:
      An iterator over the other records of the same identity, cyclically after `record`,
      then (unless `same_identity_only`) every other record, cyclically after `record`.
    """
    labels = np.asarray(labels)
    count = len(labels)
    after = (record + 1 + np.arange(count - 1)) % count  # every other record, cyclically
    same = labels[after] == labels[record]
    yield from (int(r) for r in after[same])
    if not same_identity_only:
        yield from (int(r) for r in after[~same])


class TrainingImages:
    """Decodes the image of a training record under a bad-image policy (module docstring).

    Picklable (paths and labels only), so it travels to grain worker processes.

    Args:
      paths: [N] image file of every record (records may share a file).
      labels: int [N] identity of every record.
      policy: 'stop' or 'skip'.
      same_identity_only: substitutes must have the record's identity (P x K streams).
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: np.ndarray,
        *,
        policy: str,
        same_identity_only: bool,
    ):
        self.paths = list(paths)
        self.labels = np.asarray(labels)
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} image paths for {len(self.labels)} labels")
        self.policy = check_policy(policy)
        self.same_identity_only = bool(same_identity_only)

    @property
    def counts_skips(self) -> bool:
        """Whether examples carry the SKIPPED_FIELD (only under 'skip')."""
        return self.policy == "skip"

    def read(self, record: int) -> tuple[int, np.ndarray, bool]:
        """The image of `record`, or of its substitute.

        Args:
          record: record index.

        Returns:
          (the record whose image this is, uint8 [h, w, 3] RGB, whether it is a substitute).

        Raises:
          BadImageError: 'stop' and the image is unreadable; or 'skip' and no substitute
            decodes (the message names the file and what was tried).
        """
        path = self.paths[record]
        try:
            return record, transforms.load_rgb(path), False
        except (DatasetFormatError, FileNotFoundError) as error:
            reason = _reason(error, path)
            if self.policy == "stop":
                raise BadImageError(
                    path,
                    f"cannot read this training image ({reason}); to replace unreadable images "
                    "by others of the same identity and count them (data/skipped_images), set "
                    "--config.data.bad_images=skip",
                    field="image",
                ) from None
        return self._substitute(record, reason)

    def _substitute(self, record: int, reason: str) -> tuple[int, np.ndarray, bool]:
        bad = {self.paths[record]}
        for candidate in substitute_order(
            record, self.labels, same_identity_only=self.same_identity_only
        ):
            path = self.paths[candidate]
            if path in bad:  # another caption of the same image
                continue
            try:
                image = transforms.load_rgb(path)
            except (DatasetFormatError, FileNotFoundError):
                bad.add(path)
                if len(bad) > MAX_FAILED_SUBSTITUTES:
                    break
                continue
            logging.warning(
                "data.bad_images=skip: %s is unreadable (%s); record %d uses record %d (%s)",
                *(self.paths[record], reason, record, candidate, path),
            )
            return candidate, image, True
        scope = "of its identity " if self.same_identity_only else ""
        raise BadImageError(
            self.paths[record],
            f"cannot read this training image ({reason}), and none of the {len(bad) - 1} "
            f"other images {scope}tried could replace it (data.bad_images=skip)",
            field="image",
        )


def _reason(error: Exception, path: str) -> str:
    """The error's message without the path it starts with."""
    text = str(error)
    for prefix in (f"{path}, field 'image': ", f"{path}: "):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text
