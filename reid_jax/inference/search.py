"""Search an index by a sentence, by attributes or by a photo (exact: one matrix product).

    reid-jax search --index INDEX --text "a woman in a red coat"        (SSAN bundle)
    reid-jax search --index INDEX --attributes "gender=female upper=red" (attribute bundle)
    reid-jax search --index INDEX --image query.jpg                     (any image bundle)

Scores: the dot product of unit embeddings (SSAN: a third of its summed cosine). Attribute
queries use the query language of `text.attribute_query` over the bundle's dataset
vocabulary; a query that fixes every field goes through the concept generator ψ (the joint
space), a partial one is scored by the image heads' log-probability of the asked values
(attribute-prediction retrieval, attribute_reid §3.8), which needs no value for the rest.

`search()` loads the index and bundle for one query; `Searcher` keeps them loaded for many
(`reid-jax serve`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from reid_jax.inference.bundle import Bundle, BundleError, load_bundle
from reid_jax.inference.index import GalleryIndex, load_images, load_index, resize_for_bundle

QUERY_ENCODERS = {"text": "encode_text", "attributes": "encode_attributes", "image": "encode_image"}
"""Query kind -> the bundle encoder it needs."""


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """Top-k of one query: `indices` into the index, `scores` (higher = better), `paths`,
    the query as given, and `method` ('embedding' or 'attribute heads')."""

    query: str
    query_is_image: bool
    indices: np.ndarray
    scores: np.ndarray
    paths: tuple[str, ...]
    method: str


def top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, best first, ties by index (argpartition + sort)."""
    k = min(k, len(scores))
    candidates = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    return candidates[np.lexsort((candidates, -scores[candidates]))]  # stable: ties by row


def text_embedding(bundle: Bundle, text: str) -> np.ndarray:
    """[d] embedding of a sentence (a bundle with `encode_text` and the run's vocab.json)."""
    from reid_jax.text.cleaning import tokenize_caption
    from reid_jax.text.vocab import Vocabulary, encode_batch

    if "encode_text" not in bundle.encoders:
        raise BundleError(f"{bundle.path}: the {bundle.task} bundle cannot encode text")
    vocab_path = bundle.path / "vocab.json"
    if not vocab_path.is_file():
        raise BundleError(f"{bundle.path}: no vocab.json to tokenise the query")
    vocab = Vocabulary.load(vocab_path)
    length = int(bundle.preprocessing["max_length"])
    ids, lengths = encode_batch(vocab, [tokenize_caption(text)], max_length=length)
    return bundle.encode("encode_text", ids, lengths)["embedding"][0]


def attribute_scores(bundle: Bundle, index: GalleryIndex, query: str) -> tuple[np.ndarray, str]:
    """[N] scores of an attribute query and the method used (see the module docstring)."""
    from reid_jax.data import attribute_examples
    from reid_jax.evaluation.attribute_retrieval import attribute_prediction_scores
    from reid_jax.text.attribute_query import parse_query

    if "encode_attributes" not in bundle.encoders:
        raise BundleError(f"{bundle.path}: the {bundle.task} bundle cannot encode attributes")
    dataset = bundle.preprocessing["dataset"]
    vocabulary = attribute_examples.query_vocabulary(dataset)
    values = parse_query(query, vocabulary).values
    vector = attribute_examples.model_encoding(dataset, values[None])
    if (vector >= 0).all():
        concept = bundle.encode("encode_attributes", vector.astype(np.float32))["embedding"][0]
        return index.embeddings @ concept, "embedding"
    if "attribute_logits" not in index.extras:
        raise BundleError("the index holds no attribute logits for a partial attribute query")
    groups = [tuple(g) for g in bundle.preprocessing["softmax_groups"]]
    scores = attribute_prediction_scores(index.extras["attribute_logits"], vector, groups)
    return scores[0].astype(np.float32), "attribute heads"


@dataclasses.dataclass(frozen=True)
class Searcher:
    """An index and the bundle that encodes its queries, loaded once and reused for many
    queries (`reid-jax serve`); `search()` is one query through a fresh one.

    Attributes:
      index: the loaded index (embeddings [N, d] float32, paths, extras).
      bundle: the bundle queries are encoded with.
    """

    index: GalleryIndex
    bundle: Bundle

    @classmethod
    def open(cls, index_dir: str | os.PathLike, bundle: Bundle | None = None) -> Searcher:
        """Loads `index_dir` and `bundle` (default: the bundle the index was built with)."""
        index = load_index(index_dir)
        return cls(index=index, bundle=bundle or load_bundle(index.manifest["bundle"]["path"]))

    @property
    def query_kinds(self) -> tuple[str, ...]:
        """The query kinds the bundle can encode, of 'text', 'attributes', 'image'."""
        return tuple(kind for kind, name in QUERY_ENCODERS.items() if name in self.bundle.encoders)

    def search(
        self,
        *,
        text: str | None = None,
        attributes: str | None = None,
        image: str | os.PathLike | np.ndarray | None = None,
        top_k: int = 10,
    ) -> SearchResult:
        """Runs one query (exactly one of text, attributes, image).

        Args:
          text: a sentence.
          attributes: an attribute query (`text.attribute_query`).
          image: a photo file, or a decoded photo, uint8 [h, w, 3] RGB (any size; the query
            of the result is then 'uploaded photo').
          top_k: results to return (fewer when the index is smaller).

        Raises:
          ValueError: not exactly one query.
          BundleError: the bundle cannot encode this kind of query.
          AttributeQueryError: a bad attribute query (the message names the term).
          FileNotFoundError: the photo file does not exist.
        """
        given = [q for q in (text, attributes, image) if q is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of text, attributes, image")
        index, bundle = self.index, self.bundle
        method = "embedding"
        if text is not None:
            scores = index.embeddings @ text_embedding(bundle, text)
        elif attributes is not None:
            scores, method = attribute_scores(bundle, index, attributes)
        else:
            scores = index.embeddings @ self._image_embedding(image)
        scores = np.asarray(scores, np.float32)
        order = top_k_rows(scores, top_k)
        query = "uploaded photo" if isinstance(image, np.ndarray) else str(given[0])
        return SearchResult(
            query=query,
            query_is_image=image is not None,
            indices=order,
            scores=scores[order],
            paths=tuple(index.paths[i] for i in order),
            method=method,
        )

    def _image_embedding(self, image: str | os.PathLike | np.ndarray) -> np.ndarray:
        """[d] embedding of a photo file or a decoded uint8 [h, w, 3] photo."""
        if "encode_image" not in self.bundle.encoders:
            raise BundleError(
                f"{self.bundle.path}: the {self.bundle.task} bundle cannot encode images"
            )
        if isinstance(image, np.ndarray):
            pixels = resize_for_bundle(image, self.bundle)[None]
        elif Path(image).is_file():
            pixels = load_images([Path(image)], self.bundle)
        else:
            raise FileNotFoundError(f"{image}: query image not found")
        return self.bundle.encode("encode_image", pixels)["embedding"][0]


def search(
    index_dir: str | os.PathLike,
    *,
    text: str | None = None,
    attributes: str | None = None,
    image: str | None = None,
    top_k: int = 10,
    bundle: Bundle | None = None,
) -> SearchResult:
    """Runs one query (exactly one of text, attributes, image) against an index.

    Loads the index and the bundle for this one query; to run many, keep a `Searcher`.

    Args:
      index_dir: an index folder (`reid-jax index`).
      text, attributes, image: the query (image: a photo file).
      top_k: results to return.
      bundle: the bundle to encode the query with; default the one the index was built with.
    """
    given = [q for q in (text, attributes, image) if q is not None]
    if len(given) != 1:  # before anything is loaded
        raise ValueError("give exactly one of text, attributes, image")
    searcher = Searcher.open(index_dir, bundle)
    return searcher.search(text=text, attributes=attributes, image=image, top_k=top_k)


def write_result_pictures(result: SearchResult, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """search.png and search.html of a result under `out_dir` (created)."""
    from reid_jax.evaluation.rank_list import render_search_results

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png, page = out_dir / "search.png", out_dir / "search.html"
    render_search_results(
        query=result.query,
        query_is_image=result.query_is_image,
        paths=result.paths,
        scores=[float(s) for s in result.scores],
        out_png=str(png),
        out_html=str(page),
    )
    return png, page
