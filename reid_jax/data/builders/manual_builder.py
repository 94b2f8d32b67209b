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
* Examples are stored in a hash order of their keys, not in file order; every builder stores
  the record's file-order position as `index`. TFDS cannot write an empty split, so splits
  without records are left out with a warning.
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
    implement `features`, `load_records` and `record_example`.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
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
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        root = os.fspath(dl_manager.manual_dir)
        grouped = group_by_split(self.load_records(root), self.SPLITS, source=root)
        return {split: self._generate_examples(items, root) for split, items in grouped.items()}

    def _generate_examples(self, items: list, root: str) -> Iterator[tuple[int, dict]]:
        for index, record in items:
            yield index, self.record_example(record, index, root)
