"""APTM data: records per dataset, the WordPiece vocabulary, host-side training examples.

Where the records come from (`config.data`):

  dataset='embedded'  the embedded dataset: its MALS part (embedded_part='mals') or the train
                      split of its CUHK-PEDES part (embedded_part='cuhk'); the test split of
                      its CUHK-PEDES part for evaluation.
  dataset='mals'      real MALS: `train_files` (the 91 JSONs, in order) under
                      `train_image_root`; evaluation on `test_file` (cuhk_test.json).
  dataset='cuhk_pedes' | 'icfg_pedes' | 'rstpreid'
                      the APTM fine-tuning JSONs: `train_files` (e.g. cuhk_train.json) under
                      `train_image_root`, `test_file` under `test_image_root` (aptm §1.2).

Attribute images without captions (dataset='pa100k', or embedded_part='market') come from
`data.aptm_attribute_images` and train as pairs with an empty caption.

Identities are integerised in first-appearance order (aptm §1.1). Captions are tokenised
once, on the host, to exactly `max_tokens` ids (aptm §1.5); the per-example randomness (image
augmentation, EDA view, MLM and MAM masks) happens in `AptmTrainMap`, keyed by
(seed, stream, epoch, record) so a resumed run sees the same stream.

Vocabulary: `data.vocab_file` (a BERT `vocab.txt`, e.g. bert-base-uncased's) or, when empty,
one built from the dataset's own words (`build_word_vocab`): the embedded data has no BERT
vocabulary and BERT's 30,522 rows would dominate a tiny model. The run keeps its copy as
`vocab.txt`, and fine-tuning refuses a vocabulary that differs from its init_from run's.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grain
import numpy as np

from reid_jax.data import randaugment, transforms
from reid_jax.data.bad_images import SKIPPED_FIELD, TrainingImages
from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.formats.mals import mals_annotation_files
from reid_jax.data.records import CaptionedImage, CaptionPair
from reid_jax.data.samplers import SampleIndex, keyed_rng
from reid_jax.text import masking
from reid_jax.text.attribute_prompts import prompt_set
from reid_jax.text.cleaning import clean_caption
from reid_jax.text.eda import eda_caption, letters_only
from reid_jax.text.wordpiece import SPECIAL_TOKENS, WordPieceTokenizer, basic_tokenize

# Keyed random streams of the APTM map (distinct from the SSAN/PK streams' meaning).
STREAM_IMAGE = 10
STREAM_EDA = 11
STREAM_MLM = 12
STREAM_MAM = 13

# aptm §1.4: per-dataset normalisation (mean, std) of the [0, 1] RGB image.
NORMALISATION = {
    "mals": ((0.4416847, 0.41812873, 0.4237452), (0.3088255, 0.29743394, 0.301009)),
    "cuhk": ((0.38901278, 0.3651612, 0.34836376), (0.24344306, 0.23738699, 0.23368555)),
    "icfg": ((0.30941582, 0.28956893, 0.30347288), (0.25849792, 0.24547698, 0.2366199)),
    "rstp": ((0.27722597, 0.26065794, 0.3036557), (0.2609547, 0.2508087, 0.25293276)),
    "pa100k": ((0.46485138, 0.45038012, 0.4632019), (0.25088054, 0.24609283, 0.24240193)),
}
DATASETS = ("embedded", "mals", "cuhk_pedes", "icfg_pedes", "rstpreid", "pa100k")
EMBEDDED_PARTS = ("mals", "cuhk")  # the caption parts (the vocabulary covers both)


def trains_on_mals(data_config: Any) -> bool:
    """Whether the training pairs are MALS (pre-training, with attribute labels)."""
    if data_config.dataset == "embedded":
        return data_config.embedded_part == "mals"
    return data_config.dataset == "mals"


def _embedded_root(data_config: Any) -> Path:
    from reid_jax.data import dataset_root

    return dataset_root.dataset_root(data_config, "")


def _expand_train_files(data_config: Any) -> list[str]:
    """`data.train_files`, with a MALS annotation folder expanded to its 91 files."""
    files: list[str] = []
    for entry in data_config.train_files:
        if trains_on_mals(data_config) and os.path.isdir(entry):
            files += mals_annotation_files(entry)
        else:
            files.append(entry)
    return files


def load_train_pairs(data_config: Any) -> list[CaptionPair]:
    """Training image-caption pairs of the configured source (aptm §1.1-1.2); attribute
    images (`aptm_attribute_images.trains_on_attributes`) come as pairs with an empty caption."""
    from reid_jax.data.aptm_attribute_images import load_attribute_images, trains_on_attributes
    from reid_jax.data.formats.aptm_json import load_aptm_train
    from reid_jax.data.formats.mals import load_mals

    if trains_on_attributes(data_config):
        if data_config.tfds_dir:
            raise ValueError(
                "config.data.tfds_dir: attribute images are read from their folder; set tfds_dir=''"
            )
        images = load_attribute_images(data_config, "train")
        return [
            CaptionPair(path, "", identity, tuple(int(v) for v in labels))
            for path, identity, labels in zip(
                images.image_paths, images.identities, images.labels, strict=True
            )
        ]

    if data_config.dataset == "embedded":
        if trains_on_mals(data_config):
            if data_config.tfds_dir:
                return list(_prepared(data_config, "mals", "MALS"))
            root = _embedded_root(data_config)
            files = sorted((root / "MALS" / "gene_attrs").glob("*.json"))
            return load_mals(files, root / "MALS")
        return [
            CaptionPair(r.image_path, caption, str(r.person_id), None)
            for r in _embedded_cuhk(data_config)
            if r.split == "train"
            for caption in r.captions
        ]
    if trains_on_mals(data_config):
        if data_config.tfds_dir:
            return list(_prepared(data_config, "mals", ""))
        return load_mals(_expand_train_files(data_config), data_config.train_image_root)
    if data_config.tfds_dir:
        raise ValueError(
            f"config.data.tfds_dir: the APTM fine-tuning files of '{data_config.dataset}' are "
            "read from their folder (prepared datasets: MALS and the embedded data); "
            "set tfds_dir=''"
        )
    pairs: list[CaptionPair] = []
    for path in _expand_train_files(data_config):
        pairs += load_aptm_train(path, data_config.train_image_root)
    return pairs


def _prepared(data_config: Any, builder_name: str, embedded_part: str) -> tuple:
    """Records of the prepared copy in `data.tfds_dir` (see `dataset_root.prepared_records`)."""
    from reid_jax.data import dataset_root

    return dataset_root.prepared_records(data_config, builder_name, embedded_part)


def _embedded_cuhk(data_config: Any) -> list[CaptionedImage]:
    """The embedded CUHK-PEDES part: parsed, or prepared when `data.tfds_dir` is set."""
    from reid_jax.data.formats.cuhk_pedes import load_cuhk_pedes

    if data_config.tfds_dir:
        return list(_prepared(data_config, "cuhk_pedes", "CUHK-PEDES"))
    return load_cuhk_pedes(_embedded_root(data_config) / "CUHK-PEDES")


def load_test_images(data_config: Any) -> list[CaptionedImage]:
    """Evaluation gallery images with their caption queries (aptm §1.2, §6). Real datasets
    read `test_file` from its folder even with `data.tfds_dir` (a few thousand images)."""
    from reid_jax.data.formats.aptm_json import load_aptm_test

    if data_config.dataset == "embedded":
        return [r for r in _embedded_cuhk(data_config) if r.split == "test"]
    return load_aptm_test(
        data_config.test_file,
        data_config.test_image_root,
        first_caption_only=data_config.first_caption_only,
    )


def build_word_vocab(texts: Sequence[str]) -> list[str]:
    """A WordPiece vocabulary holding every word of `texts` whole, plus single characters.

    Order: [PAD] [UNK] [CLS] [SEP] [MASK], the words by decreasing count (ties
    alphabetical), then every character c and '##c' seen, so an unseen word still splits
    into pieces instead of becoming [UNK].

    Args:
      texts: captions and prompts (raw; lower-cased and split like the tokenizer).

    Returns:
      the vocabulary tokens in id order.
    """
    counts: dict[str, int] = {}
    for text in texts:
        for word in basic_tokenize(text):
            counts[word] = counts.get(word, 0) + 1
    words = sorted(counts, key=lambda w: (-counts[w], w))
    chars = sorted({c for w in words for c in w})
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert set(specials) == set(SPECIAL_TOKENS)
    tokens = specials + words
    seen = set(tokens)
    for piece in [*chars, *(f"##{c}" for c in chars)]:
        if piece not in seen:
            tokens.append(piece)
            seen.add(piece)
    return tokens


def caption_tokenizer_texts(data_config: Any) -> list[str]:
    """Texts a built vocabulary covers: training captions (+ EDA letters-only forms) and
    the attribute prompts."""
    texts = [p.caption for p in load_train_pairs(data_config)]
    texts += [letters_only(t) for t in texts]
    return texts + list(prompt_set("mals"))


@dataclasses.dataclass(frozen=True)
class AptmTrainExamples:
    """Tokenised training pairs.

    Attributes:
      image_paths: [N] image files.
      captions: [N] raw captions (the EDA view is made from these).
      labels: int32 [N] identity (first-appearance order, 0-based).
      input_ids, attention_mask: int32 [N, T] the tokenised captions.
      attributes: int32 [N, K] labels in {-1, 0, 1}, or None.
      num_identities: distinct identities.
    """

    image_paths: tuple[str, ...]
    captions: tuple[str, ...]
    labels: np.ndarray
    input_ids: np.ndarray
    attention_mask: np.ndarray
    attributes: np.ndarray | None
    num_identities: int

    def __len__(self) -> int:
        return len(self.labels)


def prepare_train(
    pairs: Sequence[CaptionPair], tokenizer: WordPieceTokenizer, *, max_tokens: int
) -> AptmTrainExamples:
    """Integerises identities and tokenises the (uncleaned, aptm §1.5) training captions."""
    if not pairs:
        raise DatasetFormatError("<train files>", "no training pairs")
    ids: dict[str, int] = {}
    labels = np.array([ids.setdefault(p.image_id, len(ids)) for p in pairs], np.int32)
    captions = tuple(p.caption for p in pairs)
    input_ids, mask = tokenizer.encode_batch(captions, max_length=max_tokens)
    with_labels = [p.label is not None for p in pairs]
    attributes = None
    if all(with_labels):
        attributes = np.array([p.label for p in pairs], np.int32)
    return AptmTrainExamples(
        image_paths=tuple(p.image_path for p in pairs),
        captions=captions,
        labels=labels,
        input_ids=input_ids,
        attention_mask=mask,
        attributes=attributes,
        num_identities=len(ids),
    )


@dataclasses.dataclass(frozen=True)
class AptmTestExamples:
    """Evaluation gallery and caption queries (aptm §6.1).

    Attributes:
      gallery_paths: [G] image files; gallery_ids: int [G] person ids.
      query_texts: [Q] captions as given to the tokenizer; query_ids: int [Q].
      input_ids, attention_mask: int32 [Q, T].
    """

    gallery_paths: tuple[str, ...]
    gallery_ids: np.ndarray
    query_texts: tuple[str, ...]
    query_ids: np.ndarray
    input_ids: np.ndarray
    attention_mask: np.ndarray


def prepare_test(
    records: Sequence[CaptionedImage],
    tokenizer: WordPieceTokenizer,
    *,
    max_tokens: int,
    max_words: int,
    clean: bool,
) -> AptmTestExamples:
    """Gallery = images in file order; queries = all captions flattened in that order.

    Test captions are cleaned (lower-case, [0-9a-z] only) for ICFG/RSTP (`clean`) and
    truncated to `max_words` words in every case (aptm §1.5).
    """
    texts, query_ids = [], []
    for record in records:
        for caption in record.captions:
            texts.append(clean_caption(caption, max_words, alphanumeric_only=clean))
            query_ids.append(record.person_id)
    input_ids, mask = tokenizer.encode_batch(texts, max_length=max_tokens)
    return AptmTestExamples(
        gallery_paths=tuple(r.image_path for r in records),
        gallery_ids=np.array([r.person_id for r in records], np.int64),
        query_texts=tuple(texts),
        query_ids=np.array(query_ids, np.int64),
        input_ids=input_ids,
        attention_mask=mask,
    )


def no_synonyms(word: str) -> list[str]:
    """EDA without WordNet: synonym replacement and insertion leave the sentence as is."""
    del word
    return []


def train_image_transform(
    image: np.ndarray,
    *,
    image_size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    erasing_p: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """aptm §1.4 training transform: bicubic resize, flip, RandAugment, normalise, erase."""
    resized = transforms.resize_bicubic(image, tuple(image_size))
    if rng.random() < 0.5:
        resized = transforms.horizontal_flip(resized)
    augmented = randaugment.rand_augment(resized, rng)
    normalised = transforms.normalize(augmented, mean, std)
    return randaugment.random_erasing(normalised, rng, probability=erasing_p)


def test_image_transform(
    image: np.ndarray, *, image_size: tuple[int, int], mean: Sequence[float], std: Sequence[float]
) -> np.ndarray:
    """aptm §1.4 test transform: bicubic resize, normalise."""
    return transforms.normalize(transforms.resize_bicubic(image, tuple(image_size)), mean, std)


class AptmTrainMap(grain.transforms.Map):
    """`SampleIndex` -> one APTM training example (everything host-side, aptm §8.3).

    Output (T caption tokens, M = 10 masked positions, P = 2K prompts of Lp tokens):
      image float32 [H, W, 3]; label int32 []; input_ids / attention_mask int32 [T];
      mlm_ids int32 [T], mlm_positions int32 [M], mlm_labels int32 [M] (-100 padding);
      with `eda`: eda_ids / eda_mask int32 [T];
      with attributes: attributes int32 [K], mam_ids int32 [P, Lp], mam_positions and
      mam_labels int32 [P, Mp] — a freshly masked prompt set per example; the step uses the
      first example's set in each reference group (one mask per GPU and step, aptm §4.5).
    Without `captions` (attribute images) the caption fields are left out. An unreadable image
    stops the run or replaces the whole example by a substitute record's (`bad_images`, see
    `reid_jax.data.bad_images`; then the example also has skipped int32 [], 1 = replaced).
    """

    def __init__(
        self,
        examples: AptmTrainExamples,
        tokenizer: WordPieceTokenizer,
        *,
        image_size: tuple[int, int],
        normalisation: tuple[Sequence[float], Sequence[float]],
        erasing_p: float,
        max_tokens: int,
        max_words: int,
        eda: bool,
        clean_eda: bool,
        eda_synonyms: str,
        prompt_ids: np.ndarray | None,
        seed: int,
        captions: bool = True,
        bad_images: str = "stop",
    ):
        self.examples = examples
        self.images = TrainingImages(
            examples.image_paths, examples.labels, policy=bad_images, same_identity_only=False
        )
        self.captions = bool(captions)
        self.tokenizer = tokenizer
        self.image_size = tuple(image_size)
        self.mean, self.std = normalisation
        self.erasing_p = float(erasing_p)
        self.max_tokens = int(max_tokens)
        self.max_words = int(max_words)
        self.eda = bool(eda)
        self.clean_eda = bool(clean_eda)
        if eda_synonyms not in ("wordnet", "none"):
            raise ValueError(f"data.eda_synonyms must be 'wordnet' or 'none', got {eda_synonyms!r}")
        self.eda_synonyms = eda_synonyms
        self.prompt_ids = prompt_ids
        self.seed = int(seed)
        self.continuation = masking.continuation_table(tokenizer.vocab)
        self.vocab_size = tokenizer.vocab_size

    def _mask(self, ids: np.ndarray, rng: np.random.Generator):
        return masking.mask_batch(
            ids[None] if ids.ndim == 1 else ids,
            self.continuation,
            rng,
            mask_id=self.tokenizer.mask_id,
            vocab_size=self.vocab_size,
        )

    def map(self, element: SampleIndex) -> dict[str, np.ndarray]:
        ex, epoch = self.examples, element.epoch
        record, image, skipped = self.images.read(element.record)
        out = {
            "image": train_image_transform(
                image,
                image_size=self.image_size,
                mean=self.mean,
                std=self.std,
                erasing_p=self.erasing_p,
                rng=keyed_rng(self.seed, STREAM_IMAGE, epoch, element.position),
            ),
            "label": ex.labels[record],
        }
        if self.captions:
            out.update(input_ids=ex.input_ids[record], attention_mask=ex.attention_mask[record])
            mlm_ids, positions, labels = self._mask(
                ex.input_ids[record], keyed_rng(self.seed, STREAM_MLM, epoch, element.position)
            )
            out.update(mlm_ids=mlm_ids[0], mlm_positions=positions[0], mlm_labels=labels[0])
        if self.eda and self.captions:
            out["eda_ids"], out["eda_mask"] = self._eda(record, epoch, element.position)
        if ex.attributes is not None and self.prompt_ids is not None:
            mam = self._mask(
                self.prompt_ids, keyed_rng(self.seed, STREAM_MAM, epoch, element.position)
            )
            out["attributes"] = ex.attributes[record]
            out["mam_ids"], out["mam_positions"], out["mam_labels"] = mam
        if self.images.counts_skips:
            out[SKIPPED_FIELD] = np.int32(skipped)
        return out

    def _eda(self, record: int, epoch: int, position: int) -> tuple[np.ndarray, np.ndarray]:
        from reid_jax.text.eda import wordnet_synonyms

        caption = self.examples.captions[record]
        if self.clean_eda:
            caption = clean_caption(caption, self.max_words)
        synonyms = wordnet_synonyms if self.eda_synonyms == "wordnet" else no_synonyms
        rng = keyed_rng(self.seed, STREAM_EDA, epoch, position)
        try:
            view = eda_caption(caption, rng, synonyms=synonyms, max_words=self.max_words)
        except ValueError:  # a caption without letters has no EDA view: use it as is
            view = caption
        ids, mask = self.tokenizer.encode(view, self.max_tokens)
        return ids, mask


def encode_prompts(tokenizer: WordPieceTokenizer, prompt_set_name: str) -> np.ndarray:
    """The attribute prompt set tokenised together, padded to the longest (aptm §1.5)."""
    ids, _ = tokenizer.encode_batch(prompt_set(prompt_set_name))
    return ids
