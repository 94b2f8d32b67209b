"""Base TFDS builder: parse a manually downloaded dataset root, write one example per record.

How the builders work without TensorFlow (checked with tensorflow-datasets 4.9.10, no TF):

* `builder.download_and_prepare(download_config=DownloadConfig(manual_dir=root))` with
  `file_format='array_record'` parses `root` with a `reid_jax.data.formats` parser and writes
  ArrayRecord shards. Each record is a `tf.train.Example` protobuf serialised and parsed by
  TFDS's own protobuf/NumPy code; TFDS writes into `incomplete.*` and renames the folder when
  done, so a failed build leaves no partial dataset.
* `tfds.data_source(name, data_dir=..., split=...)` (or `builder.as_data_source()`) reads them
  as random-access sources of NumPy values; `tfds.features.Image` decodes with PIL.
* Not usable without TF: encoding a NumPy image through `tfds.features.Image` (needs
  `tf.image.encode_*`), hence `image_encoding.rgb_image_bytes`; `tf.data` (`as_dataset`).
  `dataset_info_from_configs` is avoided (it reads metadata files next to the module).
* Examples are written in the order of their integer keys (`disable_shuffling`, version
  1.1.0; 1.0.0 stored them in a hash order), and the key is the record's file-order
  position, also stored as `index`. So position p of a split is the p-th example of that
  split in file order, which `image_positions` states and `records_file` relies on: a
  training run finds an image by (split, position) without reading the rest. TFDS cannot
  write an empty split, so splits without records are left out with a warning.
"""

from __future__ import annotations

import abc
import inspect
import os
from collections.abc import Iterator, Sequence

import tensorflow_datasets as tfds
from absl import logging
from etils import epath


def group_by_split(records: Sequence, splits: Sequence[str], *, source: str) -> dict[str, list]:
    """Groups `(index, record)` pairs by `record.split`, dropping (with a warning) empty splits.

    Args:
      records: parsed records in file order, each with a `split` attribute.
      splits: the splits the dataset defines, in output order.
      source: dataset root, for messages.

    Returns:
      split -> list of (file-order index, record), only for non-empty splits.

    Raises:
      ValueError: a record has a split outside `splits`.
    """
    grouped = {split: [] for split in splits}
    for index, record in enumerate(records):
        if record.split not in grouped:
            raise ValueError(
                f"{source}: record {index} has split {record.split!r}, "
                f"expected one of {tuple(splits)}"
            )
        grouped[record.split].append((index, record))
    empty = [split for split, items in grouped.items() if not items]
    if empty:
        logging.warning("%s: no record in split(s) %s; they are not written", source, empty)
    return {split: items for split, items in grouped.items() if items}


class ManualRecordsBuilder(tfds.core.GeneratorBasedBuilder, abc.ABC):
    """Builder whose manual dir is a dataset root read by one parser; one example per record.

    Subclasses set `SPLITS`, `DESCRIPTION`, `HOMEPAGE`, `MANUAL_DOWNLOAD_INSTRUCTIONS` and
    implement `features`, `load_records` and `record_example`. A builder that stores several
    records per example (MALS: one example per image) overrides `split_examples` and
    `image_positions` together.
    """

    # Set by `_split_generators`: the records just written, so that `registry.prepare_dataset`
    # writes the records file without parsing the dataset a second time.
    parsed_records: list | None = None

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release.",
        "1.1.0": "Examples in file order (key order), so positions follow the annotations.",
    }
    SPLITS: tuple[str, ...] = ()
    DESCRIPTION = ""
    HOMEPAGE = ""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS's own lookup imports the `importlib_resources` backport, which a minimal
        # environment may lack; the source file is what it resolves to for a plain package.
        return epath.Path(inspect.getfile(cls))

    @abc.abstractmethod
    def features(self) -> tfds.features.FeaturesDict:
        """The feature spec of one example."""

    @abc.abstractmethod
    def load_records(self, root: str) -> list:
        """Parses the dataset root into records with a `split` attribute, in file order."""

    @abc.abstractmethod
    def record_example(self, record, index: int, root: str) -> dict:
        """Turns one record (file-order position `index`) into an example dict."""

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=self.features(),
            homepage=self.HOMEPAGE,
            disable_shuffling=True,
        )

    def split_examples(self, records: Sequence, root: str) -> dict[str, Iterator]:
        """split -> generator of (key, example), keys ascending in file order."""
        grouped = group_by_split(records, self.SPLITS, source=root)
        return {split: self._generate_examples(items, root) for split, items in grouped.items()}

    def image_positions(self, records: Sequence) -> list[tuple[str, int]]:
        """(split, position) of each record's example: its rank among its split's records.

        Args:
          records: the parsed records in file order (as `load_records` returns them).

        Returns:
          one (split, position) per record, in the same order.
        """
        counts: dict[str, int] = {}
        positions = []
        for record in records:
            positions.append((record.split, counts.get(record.split, 0)))
            counts[record.split] = positions[-1][1] + 1
        return positions

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        root = os.fspath(dl_manager.manual_dir)
        self.parsed_records = self.load_records(root)
        return self.split_examples(self.parsed_records, root)

    def _generate_examples(self, items: list, root: str) -> Iterator[tuple[int, dict]]:
        for index, record in items:
            yield index, self.record_example(record, index, root)
