"""APTM text->image evaluation (aptm §6): ITC ranking, ITM re-scoring of the top k, assembly.

1. Gallery images -> image tokens I [G, S, E] and ITC features v; caption queries -> text
   tokens T [Q, T, D] and t (eval mode, batches split over 'data').
2. Stage 1: C = t v^T (cosine, no temperature).
3. Stage 2: each query's top `eval.k_test` gallery images by C are re-scored by the cross
   encoder (raw class-1 ITM logit); pairs run in chunks of `eval.itm_batch_size`, split over
   the devices, with I and T kept on the devices and gathered there by index.
4. Score variants (aptm §6.2), each ranked over the whole gallery:
     itc            C alone (stage 1 only)
     itm            the original release: ITM logit on the top k, -1000 elsewhere
     fused          the current code on one device: ITM + 0.002 x normalised cosine
     fused_w<W>     the current code as its W-GPU evaluation computes it (W =
                    `eval.reference_gpus`, 4 behind the published tables): ITM + ~6-8 cosine
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from reid_jax import multihost, sharding
from reid_jax.data import aptm_attribute_images, aptm_examples, pipeline
from reid_jax.data.aptm_examples import AptmTestExamples
from reid_jax.evaluation import extract, itm_rerank


def score_variants(eval_config: Any) -> tuple[str, ...]:
    """Names of the reported score variants, in table order."""
    return ("itc", "itm", "fused", f"fused_w{int(eval_config.reference_gpus)}")


@functools.lru_cache(maxsize=8)
def _encoders(model: nn.Module, mesh: jax.sharding.Mesh) -> tuple[Any, Any, Any]:
    """Jitted eval-mode image encoder, text encoder and pair scorer (cached)."""

    def images(variables, batch):
        return model.apply(variables, batch["image"], train=False, method=model.encode_image)

    def texts(variables, batch):
        return model.apply(
            variables,
            batch["input_ids"],
            batch["attention_mask"],
            train=False,
            method=model.encode_text,
        )

    replicated = sharding.replicated(mesh)
    split = sharding.batch_sharding(mesh)

    def pairs(variables, image_tokens, text_tokens, text_mask, query_index, gallery_index):
        out = model.apply(
            variables,
            image_tokens[gallery_index],
            text_tokens[query_index],
            text_mask[query_index],
            train=False,
            method=model.match,
        )
        return out["itm_logits"][:, 1]

    scorer = jax.jit(
        pairs,
        in_shardings=(replicated, replicated, replicated, replicated, split, split),
        out_shardings=replicated,
    )
    scorer = multihost.lockstep(scorer, "itm_scorer")
    return (
        extract.make_sharded_encoder(images, mesh),
        extract.make_sharded_encoder(texts, mesh),
        scorer,
    )


def _text_batches(
    input_ids: np.ndarray, attention_mask: np.ndarray, batch_size: int
) -> Iterator[dict[str, np.ndarray]]:
    """Query id batches in order; the last one padded with single-[CLS] rows (mask False)."""
    for start in range(0, len(input_ids), batch_size):
        ids = input_ids[start : start + batch_size]
        mask = attention_mask[start : start + batch_size]
        pad = batch_size - len(ids)
        yield {
            "input_ids": np.pad(ids, ((0, pad), (0, 0))),
            "attention_mask": np.pad(mask, ((0, pad), (0, 0)), constant_values=0)
            | (np.arange(ids.shape[1]) == 0)[None].astype(mask.dtype),
            "mask": np.arange(batch_size) < len(ids),
        }


def encode_test_split(
    model: nn.Module, variables: dict, test: AptmTestExamples, config: Any, mesh
) -> tuple[dict, dict]:
    """(gallery {'image_tokens', 'image_feats'}, queries {'text_tokens', 'text_feats'}), host."""
    encode_images, encode_texts, _ = _encoders(model, mesh)
    mean, std = aptm_examples.NORMALISATION[config.data.test_normalisation]
    transform = functools.partial(aptm_examples.test_image_transform, mean=mean, std=std)
    image_batches = pipeline.make_eval_batches(
        test.gallery_paths,
        image_size=tuple(config.data.image_size),
        batch_size=config.eval.batch_size,
        transform=transform,
    )
    gallery = extract.extract_features(encode_images, variables, image_batches, mesh)
    text_batches = _text_batches(test.input_ids, test.attention_mask, config.eval.text_batch_size)
    queries = extract.extract_features(encode_texts, variables, text_batches, mesh)
    return gallery, queries


def itm_scores(
    model: nn.Module,
    variables: dict,
    gallery: dict,
    queries: dict,
    attention_mask: np.ndarray,
    candidates: np.ndarray,
    *,
    mesh,
    batch_size: int,
) -> np.ndarray:
    """[Q, k] class-1 ITM logits of every (query, candidate) pair."""
    _, _, scorer = _encoders(model, mesh)
    replicated = sharding.replicated(mesh)
    image_tokens = jax.device_put(gallery["image_tokens"], replicated)
    text_tokens = jax.device_put(queries["text_tokens"], replicated)
    text_mask = jax.device_put(np.asarray(attention_mask, np.int32), replicated)
    num_q, k = candidates.shape
    query_index = np.repeat(np.arange(num_q, dtype=np.int32), k)
    gallery_index = candidates.reshape(-1).astype(np.int32)
    total = len(query_index)
    outputs = []
    for start in range(0, total, batch_size):
        q = query_index[start : start + batch_size]
        g = gallery_index[start : start + batch_size]
        pad = batch_size - len(q)
        batch = sharding.host_batch_to_global(
            extract.process_slice({"q": np.pad(q, (0, pad)), "g": np.pad(g, (0, pad))}), mesh
        )
        outputs.append(
            scorer(variables, image_tokens, text_tokens, text_mask, batch["q"], batch["g"])
        )
    scores = np.concatenate(jax.device_get(outputs))[:total]
    return scores.reshape(num_q, k).astype(np.float32)


def evaluate_test_split(
    model: nn.Module,
    variables: dict[str, Any],
    test: AptmTestExamples,
    config: Any,
    *,
    mesh: jax.sharding.Mesh,
    out_dir: Path,
) -> dict[str, Any]:
    """Encodes the test split, re-scores the top k and reports every score variant.

    Returns:
      {variant: {'R1', 'R5', 'R10', 'mAP', 'mINP'} for `score_variants`, 'chance_R1',
       'num_queries', 'num_gallery', 'k_test'}.
    """
    from reid_jax.evaluation.report import print_results
    from reid_jax.evaluation.retrieval import retrieval_metrics
    from reid_jax.training.tasks.ssan_eval import chance_r1

    gallery, queries = encode_test_split(model, variables, test, config, mesh)
    itc = queries["text_feats"] @ gallery["image_feats"].T
    candidates = itm_rerank.top_k_candidates(itc, config.eval.k_test)
    itm = itm_scores(
        model,
        variables,
        gallery,
        queries,
        test.attention_mask,
        candidates,
        mesh=mesh,
        batch_size=config.eval.itm_batch_size,
    )
    workers = int(config.eval.reference_gpus)
    scores = {
        "itc": itc,
        "itm": itm_rerank.assemble_scores(itc, candidates, itm, assembly="itm_only"),
        "fused": itm_rerank.assemble_scores(itc, candidates, itm, reference_gpus=1),
        f"fused_w{workers}": itm_rerank.assemble_scores(
            itc, candidates, itm, reference_gpus=workers
        ),
    }
    results: dict[str, Any] = {}
    for variant, score in scores.items():
        metrics = retrieval_metrics(score, test.query_ids, test.gallery_ids)
        results[variant] = {name: float(value) for name, value in metrics.items()}
    results["chance_R1"] = chance_r1(test.query_ids, test.gallery_ids)
    results["num_queries"], results["num_gallery"] = len(test.query_ids), len(test.gallery_ids)
    results["k_test"] = int(candidates.shape[1])
    if jax.process_index() == 0:
        print_results(
            f"text->image retrieval, {results['num_queries']} queries x "
            f"{results['num_gallery']} images, ITM re-scores the top {results['k_test']} "
            f"(chance R@1 {results['chance_R1']:.2f}%):",
            {v: results[v] for v in scores},
        )
        from reid_jax.evaluation.rank_list import render_first_and_worst

        render_first_and_worst(
            out_dir,
            num_queries=config.eval.rank_list_queries,
            top_k=config.eval.rank_list_top_k,
            queries=test.query_texts,
            gallery_paths=test.gallery_paths,
            similarity=scores[f"fused_w{workers}"],
            query_ids=test.query_ids,
            gallery_ids=test.gallery_ids,
        )
    return results


# ----------------------------------------------------------------------------- attributes


def prompt_scores(
    model: nn.Module,
    variables: dict[str, Any],
    image_paths: tuple[str, ...],
    prompt_ids: np.ndarray,
    pad_id: int,
    config: Any,
    *,
    mesh: jax.sharding.Mesh,
) -> np.ndarray:
    """[N, 2K] class-1 ITM logits of every (image, prompt) pair (aptm §6.4): each image's
    tokens against every prompt of the set, prompts padded to the longest."""
    encode_images, encode_texts, _ = _encoders(model, mesh)
    mean, std = aptm_examples.NORMALISATION[config.data.test_normalisation]
    transform = functools.partial(aptm_examples.test_image_transform, mean=mean, std=std)
    image_batches = pipeline.make_eval_batches(
        list(image_paths),
        image_size=tuple(config.data.image_size),
        batch_size=config.eval.batch_size,
        transform=transform,
    )
    gallery = extract.extract_features(encode_images, variables, image_batches, mesh)
    prompt_mask = (np.asarray(prompt_ids) != pad_id).astype(np.int32)
    prompt_batches = _text_batches(np.asarray(prompt_ids), prompt_mask, config.eval.text_batch_size)
    prompts = extract.extract_features(encode_texts, variables, prompt_batches, mesh)
    candidates = np.tile(np.arange(len(image_paths), dtype=np.int64), (len(prompt_ids), 1))
    scores = itm_scores(
        model,
        variables,
        gallery,
        prompts,
        prompt_mask,
        candidates,
        mesh=mesh,
        batch_size=config.eval.itm_batch_size,
    )
    return scores.T  # [N, 2K]


def evaluate_attribute_images(
    model: nn.Module,
    variables: dict[str, Any],
    images: aptm_attribute_images.AttributeImages,
    prompt_ids: np.ndarray,
    pad_id: int,
    config: Any,
    *,
    mesh: jax.sharding.Mesh,
    out_dir: Path,
) -> dict[str, Any]:
    """Attribute recognition (aptm §6.4) and, where the split has the attribute-query protocol
    (attribute_reid §4), attribute queries scored by prompt margins (`prompt_scores`).

    Returns:
      {'recognition': {'mA', 'accuracy', 'precision', 'recall', 'F1'} (DeepMAR convention,
      attribute_reid §7.2), 'num_images', and with queries 'attribute_queries': {'R1', 'R5',
      'R10', 'mAP', 'mAP_trapezoid'}, 'chance_R1', 'num_queries'}.
    """
    from reid_jax.evaluation import attribute_retrieval, attributes
    from reid_jax.evaluation import prompt_scores as answers
    from reid_jax.evaluation.report import print_results
    from reid_jax.text.attribute_prompts import market_to_mals_labels

    scores = prompt_scores(
        model, variables, images.image_paths, prompt_ids, pad_id, config, mesh=mesh
    )
    predicted = answers.predict_labels(scores)
    known = images.labels >= 0
    recognition = attributes.attribute_metrics(
        np.where(known, predicted, 0), np.where(known, images.labels, 0)
    )
    results: dict[str, Any] = {
        "recognition": {k: float(v) for k, v in recognition.items()},
        "num_images": len(images.image_paths),
    }
    tables = {"recognition": results["recognition"]}
    dataset = images.query_dataset
    if dataset is not None:
        queries = market_to_mals_labels(dataset.query_records)
        query_scores = answers.query_scores(scores, queries)
        results["attribute_queries"] = attribute_retrieval.protocol_metrics(
            query_scores, dataset.protocol
        )
        results["chance_R1"] = attribute_retrieval.chance_r1(dataset.protocol)
        results["num_queries"] = len(queries)
        tables["attribute_queries"] = results["attribute_queries"]
    if jax.process_index() == 0:
        title = f"attribute recognition over {results['num_images']} images"
        if dataset is not None:
            title += (
                f"; attribute queries: {results['num_queries']} queries "
                f"(chance R1 {results['chance_R1']:.2f}%)"
            )
        print_results(title + ":", tables)
        if dataset is not None:
            from reid_jax.evaluation.rank_list import render_first_and_worst

            render_first_and_worst(
                out_dir,
                num_queries=config.eval.rank_list_queries,
                top_k=config.eval.rank_list_top_k,
                queries=dataset.query_texts(),
                gallery_paths=dataset.gallery_paths,
                similarity=query_scores.astype(np.float32),
                query_ids=dataset.protocol.query_ids,
                gallery_ids=dataset.protocol.gallery_ids,
            )
    return results
