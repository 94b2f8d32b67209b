"""reid-jax command line: flags in, library calls out.

    reid-jax train --config configs/ssan.py[:variant,smoke] --workdir DIR [--config.x.y=v ...]
    reid-jax evaluate --workdir DIR [--best | --step N] [--config.eval.x=v ...]
    reid-jax evaluate --features FILE.npz --workdir OUT [--rerank]
    reid-jax import-weights --kind KIND --input FILE --config FILE[:ARG] --workdir OUT
    reid-jax export --workdir RUN --out BUNDLE [--best | --step N] [--onnx]
    reid-jax index --bundle BUNDLE --images DIR --index INDEX
    reid-jax search --index INDEX (--text T | --attributes A | --image FILE) [--top-k K]
    reid-jax serve --index INDEX [--host 127.0.0.1] [--port 8000] [--bundle BUNDLE]
    reid-jax prepare --dataset NAME --root DATASET_FOLDER --tfds-dir DIR

Config errors, dataset format errors, missing paths and mistyped overrides print one line and
exit with status 2 (`--debug` shows the traceback instead).

Multi-host runs set `--config.mesh.distributed=True` (or REID_JAX_DISTRIBUTED=1) so that
`jax.distributed.initialize()` runs before anything touches the devices. jax finds the
coordinator, process count and process id itself only under SLURM, Open MPI, Kubernetes or
Cloud TPU; elsewhere set REID_JAX_COORDINATOR (host:port of process 0),
REID_JAX_NUM_PROCESSES and REID_JAX_PROCESS_ID (launch/multihost.sh does).

When one process of a multi-process run dies, the others stop with status 1 and a line saying
so: at once when their next collective fails (its connection to the dead process is reset),
else when the coordination service misses the dead process's heartbeats for
$REID_JAX_HEARTBEAT_TIMEOUT_S seconds (default 100). A failed process exits without jax's
shutdown barrier, which would wait for the dead one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from reid_jax.cli_errors import USAGE_ERROR, UsageError, multi_process, report  # noqa: F401

PROG = "reid-jax"
# Seconds without a heartbeat after which the coordination service declares a process dead
# and ends the others (jax's default: 100).
HEARTBEAT_VARIABLE = "REID_JAX_HEARTBEAT_TIMEOUT_S"

COMMANDS = {
    "train": (
        "train a model, or resume the run in --workdir",
        "reid-jax train --config configs/ssan.py --workdir runs/ssan",
    ),
    "evaluate": (
        "evaluate a run folder's checkpoint, or a saved features file",
        "reid-jax evaluate --workdir runs/ssan",
    ),
    "import-weights": (
        "convert a PyTorch checkpoint into a run folder (evaluate it, or fine-tune from it)",
        "reid-jax import-weights --kind ssan_official --input best.pth.tar "
        "--config configs/ssan.py:cuhk_pedes --workdir runs/ssan_official",
    ),
    "export": (
        "write an inference bundle (StableHLO encoders + parameters) of a run's checkpoint",
        "reid-jax export --workdir runs/ssan --out bundles/ssan",
    ),
    "index": (
        "embed every image under a folder with a bundle (incremental, resumable)",
        "reid-jax index --bundle bundles/ssan --images /data/crops --index indexes/crops",
    ),
    "search": (
        "find people in an index by a sentence, attributes or a photo (prints, PNG + HTML)",
        'reid-jax search --index indexes/crops --text "a woman in a red coat"',
    ),
    "serve": (
        "a local search page (text, attributes or a photo) and its JSON API over an index",
        "reid-jax serve --index indexes/crops --port 8000",
    ),
    "prepare": (
        "write a dataset folder as ArrayRecord files to train from (--config.data.tfds_dir)",
        "reid-jax prepare --dataset cuhk_pedes --root /data/CUHK-PEDES --tfds-dir /data/tfds",
    ),
}

# `reid-jax prepare --dataset` choices (the TFDS builders of reid_jax.data.builders.registry).
PREPARED_DATASETS = ("cuhk_pedes", "icfg_pedes", "rstpreid", "market1501", "mals")


class _Parser(argparse.ArgumentParser):
    """argparse that reports mistakes as one line (UsageError) instead of usage + exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _build_parser() -> _Parser:
    from reid_jax.weights import KINDS as weight_kinds

    epilog = "commands:\n" + "\n".join(
        f"  {name:<10} {summary}\n             e.g. {example}"
        for name, (summary, example) in COMMANDS.items()
    )
    parser = _Parser(
        prog=PROG,
        description="Find people in camera footage by a sentence, attributes or a photo.",
        epilog=epilog + "\n\nConfig fields are overridden as --config.section.field=value.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    train = commands.add_parser("train", help=COMMANDS["train"][0], epilog=COMMANDS["train"][1])
    train.add_argument(
        "--config", required=True, help="config file[:arg], e.g. configs/ssan.py:smoke"
    )
    train.add_argument("--workdir", required=True, help="run folder (created; re-run to resume)")

    evaluate = commands.add_parser(
        "evaluate", help=COMMANDS["evaluate"][0], epilog=COMMANDS["evaluate"][1]
    )
    evaluate.add_argument(
        "--workdir", required=True, help="run folder (or output folder with --features)"
    )
    evaluate.add_argument("--config", help="config file[:arg]; default: the run's config.json")
    which = evaluate.add_mutually_exclusive_group()
    which.add_argument(
        "--best", action="store_true", help="the best evaluation's checkpoint (best/)"
    )
    which.add_argument("--step", type=int, help="this checkpoint step (default: the latest)")
    which.add_argument("--features", help="a features .npz to evaluate instead of a checkpoint")
    evaluate.add_argument(
        "--rerank", action="store_true", help="--features: k-reciprocal re-ranking"
    )

    imports = commands.add_parser(
        "import-weights", help=COMMANDS["import-weights"][0], epilog=COMMANDS["import-weights"][1]
    )
    imports.add_argument(
        "--kind",
        required=True,
        choices=sorted(weight_kinds),
        help="which converter (reid_jax.weights.KINDS)",
    )
    imports.add_argument(
        "--input", required=True, help="the weights file (.pth, .safetensors, .npz)"
    )
    imports.add_argument("--config", required=True, help="config file[:arg] of the target model")
    imports.add_argument("--workdir", required=True, help="run folder to write (must be new)")

    exports = commands.add_parser(
        "export", help=COMMANDS["export"][0], epilog=COMMANDS["export"][1]
    )
    exports.add_argument("--workdir", required=True, help="the run folder")
    exports.add_argument("--out", required=True, help="bundle folder to write (must be new)")
    which = exports.add_mutually_exclusive_group()
    which.add_argument("--best", action="store_true", help="the best evaluation's checkpoint")
    which.add_argument("--step", type=int, help="this checkpoint step (default: the latest)")
    exports.add_argument(
        "--onnx",
        action="store_true",
        help="also write each image encoder as ONNX, checked with onnxruntime ('onnx' extra)",
    )

    index = commands.add_parser("index", help=COMMANDS["index"][0], epilog=COMMANDS["index"][1])
    index.add_argument("--bundle", required=True, help="an exported bundle (reid-jax export)")
    index.add_argument("--images", required=True, help="folder of person crops (recursive)")
    index.add_argument("--index", required=True, help="index folder (created or updated)")
    index.add_argument("--chunk-size", type=int, default=256, help="images per saved chunk")
    index.add_argument("--batch-size", type=int, default=64, help="images per encoder call")
    index.add_argument(
        "--approximate",
        action="store_true",
        help="also build a faiss IVF index for large galleries (pip install 'reid_jax[ann]')",
    )
    index.add_argument("--nlist", type=int, help="its k-means cells (default: about sqrt(N))")

    search = commands.add_parser("search", help=COMMANDS["search"][0], epilog=COMMANDS["search"][1])
    search.add_argument("--index", required=True, help="an index folder (reid-jax index)")
    query = search.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help="a sentence (SSAN, APTM bundles)")
    query.add_argument(
        "--attributes", help="e.g. 'gender=female upper=red backpack=yes' (attribute bundles)"
    )
    query.add_argument("--image", help="a query photo")
    search.add_argument("--top-k", type=int, default=10, help="results to show")
    search.add_argument("--out", default="search_results", help="folder for search.png/.html")
    search.add_argument("--bundle", help="encode the query with this bundle (default: the index's)")
    search.add_argument(
        "--rerank",
        action="store_true",
        help="second stage: APTM's ITM re-scoring (sentences), k-reciprocal re-ranking (photos)",
    )
    search.add_argument(
        "--rerank-k", type=int, help="candidates it sees (default: APTM's k_test; 100 for photos)"
    )
    search.add_argument(
        "--exact", action="store_true", help="exact search even if the index has an approximate one"
    )

    serve = commands.add_parser("serve", help=COMMANDS["serve"][0], epilog=COMMANDS["serve"][1])
    serve.add_argument("--index", required=True, help="an index folder (reid-jax index)")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: this machine only)"
    )
    serve.add_argument(
        "--port", type=int, default=8000, help="port (default 8000; 0: any free port)"
    )
    serve.add_argument("--bundle", help="encode queries with this bundle (default: the index's)")

    prepare = commands.add_parser(
        "prepare", help=COMMANDS["prepare"][0], epilog=COMMANDS["prepare"][1]
    )
    prepare.add_argument("--dataset", required=True, choices=PREPARED_DATASETS)
    prepare.add_argument(
        "--root",
        required=True,
        help="the dataset folder, as data.root (MALS: the folder holding gene_attrs/)",
    )
    prepare.add_argument(
        "--tfds-dir", required=True, help="TFDS data directory to write (data.tfds_dir)"
    )

    for sub in (train, evaluate, imports, exports, index, search, serve, prepare):
        sub.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return parser


def _split_overrides(argv: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Separates `--config.a.b=v` / `--config.a.b v` overrides from the other arguments."""
    rest, overrides, index = [], [], 0
    while index < len(argv):
        arg = argv[index]
        if arg.startswith("--config."):
            name, has_value, value = arg[len("--config.") :].partition("=")
            if not has_value:
                if index + 1 >= len(argv):
                    raise UsageError(f"{PROG}: {arg} needs a value (--config.{name}=VALUE)")
                index, value = index + 1, argv[index + 1]
            overrides.append((name, value))
        else:
            rest.append(arg)
        index += 1
    return rest, overrides


def _load_config(args: argparse.Namespace, overrides: list[tuple[str, str]]) -> Any:
    from reid_jax import config_lib

    if args.config:
        config = config_lib.load_config_file(args.config)
        config.lock()
    else:
        from reid_jax.training import run_folder

        config = run_folder.load_config(args.workdir)
    config_lib.apply_overrides(config, overrides)
    return config


def _distributed(config: Any) -> bool:
    return os.environ.get("REID_JAX_DISTRIBUTED", "0") not in ("", "0") or bool(
        config.mesh.distributed
    )


def _distributed_arguments() -> dict[str, str | int]:
    """`jax.distributed.initialize` arguments from the REID_JAX_* variables that are set."""
    arguments: dict[str, str | int] = {}
    for name, key, kind in (
        ("REID_JAX_COORDINATOR", "coordinator_address", str),
        ("REID_JAX_NUM_PROCESSES", "num_processes", int),
        ("REID_JAX_PROCESS_ID", "process_id", int),
        (HEARTBEAT_VARIABLE, "heartbeat_timeout_seconds", int),
    ):
        if value := os.environ.get(name, ""):
            try:
                arguments[key] = kind(value)
            except ValueError:
                raise UsageError(f"${name} must be an integer, got {value!r}") from None
    if {"coordinator_address", "num_processes", "process_id"} <= set(arguments):
        # All given: skip jax's cluster detection, which under SLURM would also restrict each
        # process to the one GPU numbered SLURM_LOCALID.
        arguments["cluster_detection_method"] = "deactivate"
    return arguments


def _start(config: Any) -> None:
    if _distributed(config):
        import jax

        jax.distributed.initialize(**_distributed_arguments())


def _train(args: argparse.Namespace, overrides: list[tuple[str, str]]) -> None:
    from reid_jax.training import loop

    config = _load_config(args, overrides)
    _start(config)
    loop.train_and_evaluate(config, args.workdir)


def _evaluate(args: argparse.Namespace, overrides: list[tuple[str, str]]) -> None:
    if args.features:
        if overrides or args.config:
            raise UsageError(f"{PROG} evaluate: --features takes no --config or overrides")
        from reid_jax.evaluation.report import run_evaluate_features

        run_evaluate_features(args.features, args.workdir, rerank=args.rerank)
        return
    if args.rerank:
        raise UsageError(f"{PROG} evaluate: --rerank applies to --features only")
    from reid_jax.training import evaluate

    # Checked before the config is read, so an empty folder fails fast and stays empty.
    evaluate.checkpoint_to_evaluate(Path(args.workdir), step=args.step, best=args.best)
    config = _load_config(args, overrides)
    _start(config)
    evaluate.evaluate_checkpoint(args.workdir, config, step=args.step, best=args.best)


def _import_weights(args: argparse.Namespace, overrides: list[tuple[str, str]]) -> None:
    from reid_jax.weights.run_folder_export import import_to_run_folder

    config = _load_config(args, overrides)
    workdir = import_to_run_folder(args.kind, args.input, config, args.workdir)
    print(
        f"imported {args.input} ({args.kind}) into {workdir}; evaluate with: reid-jax evaluate "
        f"--workdir {workdir}; fine-tune with: --config.init_from={workdir}",
        flush=True,
    )


def _refuse_overrides(command: str, overrides: list[tuple[str, str]]) -> None:
    """The bundle commands work from files, not configs: an override is a mistake."""
    if overrides:
        raise UsageError(f"{PROG} {command}: takes no --config overrides")


def _export(args: argparse.Namespace, overrides: list[tuple[str, str]]) -> None:
    _refuse_overrides("export", overrides)
    from reid_jax.export.run_export import export_run

    out = export_run(args.workdir, args.out, step=args.step, best=args.best, onnx=args.onnx)
    if args.onnx:
        from reid_jax.export.onnx import summary_lines

        print("\n".join(summary_lines(out)))
    print(
        f"exported {args.workdir} into {out}; load it with reid_jax.inference.load_bundle",
        flush=True,
    )


def _index(args: argparse.Namespace, overrides: list[tuple[str, str]]) -> None:
    _refuse_overrides("index", overrides)
    from reid_jax.inference import load_bundle
    from reid_jax.inference.index import build_index

    stats = build_index(
        load_bundle(args.bundle),
        args.images,
        args.index,
        chunk_size=args.chunk_size,
        batch_size=args.batch_size,
        approximate=args.approximate,
        nlist=args.nlist,
    )
    print(
        f"indexed {stats.total} images into {args.index}: {stats.embedded} embedded, "
        f"{stats.reused} reused, {stats.dropped} dropped"
        + (f", {len(stats.unreadable)} unreadable files left out" if stats.unreadable else ""),
        flush=True,
    )
    if args.approximate:
        entry = json.loads((Path(args.index) / "index.json").read_text())["approximate"]
        if entry:
            print(
                f"approximate index: {entry['kind']}, {entry['nlist']} cells, {entry['nprobe']} "
                "scanned per query",
                flush=True,
            )


def _search(args: argparse.Namespace, overrides: list[tuple[str, str]]) -> None:
    _refuse_overrides("search", overrides)
    from reid_jax.inference import load_bundle
    from reid_jax.inference.search import search, write_result_pictures

    result = search(
        args.index,
        text=args.text,
        attributes=args.attributes,
        image=args.image,
        top_k=args.top_k,
        bundle=load_bundle(args.bundle) if args.bundle else None,
        rerank=args.rerank,
        rerank_k=args.rerank_k,
        exact=args.exact,
    )
    print(f"top {len(result.paths)} for {result.query!r} (scored by {result.method}):")
    for rank, (score, path) in enumerate(zip(result.scores, result.paths, strict=True), 1):
        print(f"{rank:4d}  {score:9.4f}  {path}")
    png, page = write_result_pictures(result, args.out)
    print(f"pictures: {png} {page}", flush=True)


def _serve(args: argparse.Namespace, overrides: list[tuple[str, str]]) -> None:
    _refuse_overrides("serve", overrides)
    from reid_jax.inference import load_bundle
    from reid_jax.inference.search import Searcher
    from reid_jax.inference.serve import SearchServer, serve_until_interrupted

    searcher = Searcher.open(args.index, load_bundle(args.bundle) if args.bundle else None)
    try:
        server = SearchServer(searcher, args.host, args.port)
    except OSError as error:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {error.strerror}") from None
    print(
        f"searching {len(searcher.index.paths)} images of {args.index} "
        f"({', '.join(searcher.query_kinds)} queries) at {server.url} (Ctrl-C stops)",
        flush=True,
    )
    serve_until_interrupted(server)
    print("stopped", flush=True)


def _prepare(args: argparse.Namespace, overrides: list[tuple[str, str]]) -> None:
    _refuse_overrides("prepare", overrides)
    if not os.path.isdir(args.root):
        raise FileNotFoundError(f"--root {args.root}: no such folder")
    from reid_jax.data.builders import registry

    print(f"preparing {args.dataset} from {args.root} into {args.tfds_dir}", flush=True)
    builder = registry.prepare_dataset(args.dataset, manual_dir=args.root, data_dir=args.tfds_dir)
    counts = ", ".join(f"{s} {i.num_examples}" for s, i in builder.info.splits.items())
    print(
        f"prepared {args.dataset} in {builder.data_dir} ({counts} examples); train from it "
        f"with --config.data.tfds_dir={args.tfds_dir}",
        flush=True,
    )


RUNNERS: dict[str, Callable[[argparse.Namespace, list[tuple[str, str]]], None]] = {
    "train": _train,
    "evaluate": _evaluate,
    "import-weights": _import_weights,
    "export": _export,
    "index": _index,
    "search": _search,
    "serve": _serve,
    "prepare": _prepare,
}


def _setup_logging() -> None:
    from absl import flags
    from absl import logging as absl_logging

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()  # grain workers read absl flags
    absl_logging.use_absl_handler()
    absl_logging.set_verbosity(absl_logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (`reid-jax`); `argv` defaults to sys.argv[1:].

    Returns:
      The exit status: 0 on success, 2 for usage, config, dataset or path errors.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        rest, overrides = _split_overrides(argv)
        args = _build_parser().parse_args(rest)
        _setup_logging()
        RUNNERS[args.command](args, overrides)
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    except Exception as error:
        status = report(error, debug=debug)
        if multi_process():
            from reid_jax import multihost

            multihost.exit_now(status)  # the other processes fail fast instead of waiting
        return status
    return 0


def run() -> NoReturn:
    """`reid-jax` console script: `main` with its status as the exit code."""
    sys.exit(main())


if __name__ == "__main__":
    run()
