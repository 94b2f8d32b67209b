"""Search an index by a sentence, by attributes or by a photo.

    reid-jax search --index INDEX --text "a woman in a red coat"        (SSAN, APTM bundles)
    reid-jax search --index INDEX --attributes "gender=female upper=red" (attribute bundle)
    reid-jax search --index INDEX --image query.jpg                     (any image bundle)

Stage 1 is one matrix product of the query embedding with the gallery's unit embeddings
(exact), or the index's faiss IVF index when it has one (`reid-jax index --approximate`;
`exact=True` forces the product). Scores: the dot product of unit embeddings (SSAN: a third
of its summed cosine). Attribute queries use the query language of `text.attribute_query`
over the bundle's dataset vocabulary; a query that fixes every field goes through the concept
generator ψ (the joint space), a partial one is scored by the image heads' log-probability of
the asked values (attribute-prediction retrieval, attribute_reid §3.8), which needs no value
for the rest.

`rerank=True` adds the method's second stage (`second_stage`): APTM's ITM re-scoring of the
top `rerank_k` images for a sentence (scores become ITM logits), k-reciprocal re-ranking of
the top `rerank_k` for a photo (scores become minus the re-ranked distance).

`search()` loads the index and bundle for one query; `Searcher` keeps them loaded for many
(`reid-jax serve`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
from absl import logging

from reid_jax.inference import second_stage
from reid_jax.inference.bundle import Bundle, BundleError, load_bundle
from reid_jax.inference.index import GalleryIndex, load_images, load_index, resize_for_bundle

QUERY_ENCODERS = {"text": "encode_text", "attributes": "encode_attributes", "image": "encode_image"}
"""Query kind -> the bundle encoder it needs."""


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """Top-k of one query: `indices` into the index, `scores` (higher = better), `paths`,
    the query as given, and `method` (how it was scored, e.g. 'embedding (exact)')."""

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


@dataclasses.dataclass(frozen=True)
class TextQuery:
    """A sentence as the bundle's `encode_text` takes it, and its [d] embedding."""

    inputs: tuple[np.ndarray, ...]
    embedding: np.ndarray


def encode_sentence(bundle: Bundle, text: str) -> TextQuery:
    """Tokenises a sentence as the bundle's run did and embeds it (`encode_text`).

    SSAN bundles ('words'): lower-cased word tokens mapped through the run's vocab.json;
    APTM bundles ('wordpiece'): the test captions' cleaning, then WordPiece with vocab.txt.
    """
    if "encode_text" not in bundle.encoders:
        raise BundleError(f"{bundle.path}: the {bundle.task} bundle cannot encode text")
    facts = bundle.preprocessing
    kind = facts.get("text_tokenizer", "words")  # bundles written before APTM's had no key
    if kind == "words":
        from reid_jax.text.cleaning import tokenize_caption
        from reid_jax.text.vocab import Vocabulary, encode_batch

        vocab = Vocabulary.load(_bundle_file(bundle, "vocab.json"))
        length = int(facts["max_length"])
        inputs = encode_batch(vocab, [tokenize_caption(text)], max_length=length)
    elif kind == "wordpiece":
        from reid_jax.text.cleaning import clean_caption
        from reid_jax.text.wordpiece import WordPieceTokenizer

        tokenizer = WordPieceTokenizer.from_vocab_file(_bundle_file(bundle, "vocab.txt"))
        words = clean_caption(
            text, int(facts["max_words"]), alphanumeric_only=bool(facts["alphanumeric_only"])
        )
        inputs = tokenizer.encode_batch([words], max_length=int(facts["max_tokens"]))
    else:
        raise BundleError(f"{bundle.path}: unknown text_tokenizer {kind!r} in bundle.json")
    inputs = tuple(np.asarray(x, np.int32) for x in inputs)
    embedding = bundle.encode("encode_text", *inputs)["embedding"][0]
    return TextQuery(inputs=tuple(x[0] for x in inputs), embedding=embedding)


def text_embedding(bundle: Bundle, text: str) -> np.ndarray:
    """[d] embedding of a sentence (see `encode_sentence`)."""
    return encode_sentence(bundle, text).embedding


def _bundle_file(bundle: Bundle, name: str) -> Path:
    path = bundle.path / name
    if not path.is_file():
        raise BundleError(f"{bundle.path}: no {name} to tokenise the query")
    return path


def attribute_query(bundle: Bundle, index: GalleryIndex, query: str) -> np.ndarray | tuple:
    """A full query's [d] concept embedding, or ([N] scores, 'attribute heads') for a partial
    one (see the module docstring)."""
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
        return bundle.encode("encode_attributes", vector.astype(np.float32))["embedding"][0]
    if "attribute_logits" not in index.extras:
        raise BundleError("the index holds no attribute logits for a partial attribute query")
    groups = [tuple(g) for g in bundle.preprocessing["softmax_groups"]]
    scores = attribute_prediction_scores(index.extras["attribute_logits"], vector, groups)
    return scores[0].astype(np.float32), "attribute heads"


class Searcher:
    """An index and the bundle that encodes its queries, loaded once for many queries.

    Args:
      index: the gallery (`load_index`).
      bundle: encodes queries; the index's own bundle by default.
      exact: ignore the index's approximate (faiss) index.
    """

    def __init__(self, index: GalleryIndex, bundle: Bundle | None = None, *, exact=False):
        self.index = index
        self.bundle = bundle or load_bundle(index.manifest["bundle"]["path"])
        self.approximate = None
        entry = index.manifest.get("approximate")
        if entry and not exact:
            from reid_jax.inference import approximate

            path = index.folder / entry["file"]
            try:
                self.approximate = approximate.load(path, nprobe=entry["nprobe"])
            except approximate.ApproximateIndexError as error:
                logging.warning("search: exact search instead of the approximate index: %s", error)

    def nearest(self, query: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
        """Stage 1 for a [d] query: (rows int [k'], scores float32 [k'], best first; all [N]
        scores, or None when the approximate index answered)."""
        if self.approximate is not None:
            from reid_jax.inference import approximate

            scores, rows = approximate.search(self.approximate, query[None], k)
            found = rows[0] >= 0
            return rows[0][found], scores[0][found], None
        everything = np.asarray(self.index.embeddings @ query, np.float32)
        rows = top_k_rows(everything, k)
        return rows, everything[rows], everything

    @classmethod
    def open(
        cls, index_dir: str | os.PathLike, bundle: Bundle | None = None, *, exact: bool = False
    ) -> Searcher:
        """Loads `index_dir` and `bundle` (default: the bundle the index was built with)."""
        return cls(load_index(index_dir), bundle, exact=exact)

    @property
    def query_kinds(self) -> tuple[str, ...]:
        """The query kinds the bundle can encode, of 'text', 'attributes', 'image'."""
        return tuple(kind for kind, name in QUERY_ENCODERS.items() if name in self.bundle.encoders)

    def _stage_one_name(self) -> str:
        return "embedding (approximate)" if self.approximate is not None else "embedding (exact)"

    def search(
        self,
        *,
        text: str | None = None,
        attributes: str | None = None,
        image: str | os.PathLike | np.ndarray | None = None,
        top_k: int = 10,
        rerank: bool = False,
        rerank_k: int | None = None,
    ) -> SearchResult:
        """Runs one query (exactly one of text, attributes, image); see the module docstring.

        Args:
          text: a sentence.
          attributes: an attribute query (`text.attribute_query`).
          image: a photo file, or a decoded photo, uint8 [h, w, 3] RGB (any size; the query
            of the result is then 'uploaded photo').
          top_k: results to return (fewer when the index is smaller).
          rerank: add the method's second stage.
          rerank_k: first-stage candidates the second stage sees (default: APTM's k_test for
            a sentence, 100 for a photo); at least top_k.

        Raises:
          ValueError: not exactly one query.
          BundleError: the bundle cannot encode this kind of query, or has no second stage
            for it.
          AttributeQueryError: a bad attribute query (the message names the term).
          FileNotFoundError: the photo file does not exist.
        """
        given = [q for q in (text, attributes, image) if q is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of text, attributes, image")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if image is not None:
            rows, scores, method = self._photo(image, top_k, rerank, rerank_k)
        elif text is not None:
            rows, scores, method = self._sentence(text, top_k, rerank, rerank_k)
        else:
            if rerank:
                raise BundleError("attribute queries have no second stage to --rerank with")
            rows, scores, method = self._attributes(attributes, top_k)
        return SearchResult(
            query="uploaded photo" if isinstance(image, np.ndarray) else str(given[0]),
            query_is_image=image is not None,
            indices=rows,
            scores=np.asarray(scores, np.float32),
            paths=tuple(self.index.paths[i] for i in rows),
            method=method,
        )

    def _sentence(self, text, top_k, rerank, rerank_k):
        sentence = encode_sentence(self.bundle, text)
        if not rerank:
            rows, scores, _ = self.nearest(sentence.embedding, top_k)
            return rows, scores, self._stage_one_name()
        if "score_pairs" not in self.bundle.encoders:
            raise BundleError(
                f"{self.bundle.path}: the {self.bundle.task} bundle has no second stage for "
                "sentences (APTM bundles carry the ITM pair scorer)"
            )
        k = max(top_k, rerank_k or int(self.bundle.preprocessing["rerank_k"]))
        rows, scores, everything = self.nearest(sentence.embedding, k)
        paths = [self.index.paths[i] for i in rows]
        itm = second_stage.itm_rescore(self.bundle, paths, *sentence.inputs)
        if everything is None:  # approximate: the tie-breaker sees the candidates only
            order = second_stage.itm_order(scores, np.arange(len(rows)), itm)
        else:
            position = {row: i for i, row in enumerate(rows)}
            full = second_stage.itm_order(everything, rows, itm)
            order = np.array([position[r] for r in full[: len(rows)]])
        order = order[:top_k]
        method = f"{self._stage_one_name()}, top {len(rows)} re-scored by ITM"
        return rows[order], itm[order], method

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

    def _photo(self, image, top_k, rerank, rerank_k):
        query = self._image_embedding(image)
        if not rerank:
            rows, scores, _ = self.nearest(query, top_k)
            return rows, scores, self._stage_one_name()
        k = max(top_k, rerank_k or second_stage.PHOTO_CANDIDATES)
        rows, _, _ = self.nearest(query, k)
        order, distances = second_stage.k_reciprocal_order(query, self.index.embeddings[rows])
        method = f"{self._stage_one_name()}, top {len(rows)} k-reciprocal re-ranked"
        return rows[order[:top_k]], -distances[:top_k], method

    def _attributes(self, query, top_k):
        concept = attribute_query(self.bundle, self.index, query)
        if isinstance(concept, tuple):
            everything, method = concept
            rows = top_k_rows(everything, top_k)
            return rows, everything[rows], method
        rows, scores, _ = self.nearest(concept, top_k)
        return rows, scores, self._stage_one_name()


def search(
    index_dir: str | os.PathLike,
    *,
    text: str | None = None,
    attributes: str | None = None,
    image: str | os.PathLike | None = None,
    top_k: int = 10,
    bundle: Bundle | None = None,
    rerank: bool = False,
    rerank_k: int | None = None,
    exact: bool = False,
) -> SearchResult:
    """One query against an index folder (`reid-jax index`); see `Searcher.search`.

    Loads the index and the bundle for this one query; to run many, keep a `Searcher`.

    Args:
      index_dir: the index folder.
      text, attributes, image: the query (exactly one).
      top_k: results to return.
      bundle: the bundle to encode the query with; default the one the index was built with.
      rerank: add the method's second stage.
      rerank_k: first-stage candidates the second stage sees (default: APTM's k_test for a
        sentence, 100 for a photo); at least top_k.
      exact: exact search even when the index has an approximate index.
    """
    given = [q for q in (text, attributes, image) if q is not None]
    if len(given) != 1:  # before anything is loaded
        raise ValueError("give exactly one of text, attributes, image")
    searcher = Searcher.open(index_dir, bundle, exact=exact)
    return searcher.search(
        text=text, attributes=attributes, image=image, top_k=top_k, rerank=rerank, rerank_k=rerank_k
    )


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
