"""The `specroute` command: argument parsing and dispatch only.

    specroute demo                       the README's main job
    specroute generate --target DIR --drafter {DIR|ngram|none} --prompt TEXT [...]
    specroute zoo build --preset {tiny,demo,bench} --out DIR
    specroute zoo eval --zoo DIR
    specroute zoo quality --zoo DIR
    specroute distill --target DIR --prompts FILE --student CONFIG_OR_DIR --out DIR
    specroute steer --target DIR --drafter DIR --prompts FILE --out DIR
    specroute log-acceptance --target DIR --drafter DIR --prompts FILE --out FILE
    specroute train-stop --logs FILE [FILE ...] --out DIR [--target DIR --drafter DIR --validation FILE]
    specroute tasks detect (--prompts FILE | --from-redis URL) --out DIR
    specroute tasks assign --tasks DIR (--zoo DIR | --target DIR --drafter NAME=DIR|ngram ...)
    specroute tasks route --tasks DIR --prompt TEXT [--task T] [--drafter D] [--redis-url URL]
    specroute tasks rename --tasks DIR OLD NEW
    specroute loadtest --target ADDRESS --concurrency N --duration S (--zoo DIR | --prompts FILE) [--mix TASKS]

Options that set a config model's fields (`specroute loadtest`: `LoadTestConfig`; `specroute generate`'s
sampling: `SamplingParams`) are built from the model: its fields' types, defaults and descriptions.
Benchmarks have their own command, `python -m bench`. The subcommands import what they run (transformers,
Ray, the zoo, the client) when they run; building the parser needs only the config models.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from core.sampling import SamplingParams
from specroute.loadtest.config import LoadTestConfig

# The `specroute loadtest` options that are LoadTestConfig fields: field -> flag (the rest: --field-name).
LOADTEST_FLAGS = {"target": "--target", "concurrency": "--concurrency", "duration_s": "--duration", "mix": "--mix",
                  "max_requests": "--max-requests", "max_new_tokens": "--max-new-tokens",
                  "temperature": "--temperature", "warmup_requests": "--warmup", "seed": "--seed",
                  "request_timeout_s": "--timeout", "drain_s": "--drain", "retries": "--retries",
                  "drafter": "--drafter", "api_key": "--api-key"}
# The `specroute generate` options that are SamplingParams fields.
SAMPLING_FLAGS = {"temperature": "--temperature", "top_p": "--top-p", "top_k": "--top-k", "seed": "--seed"}


def _scalar_type(annotation: Any) -> type:
    """The argparse type of a pydantic field: int, float or str (Optional unwrapped; anything else: str,
    which the model's own validators parse)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = kinds[0] if len(kinds) == 1 else str
    return annotation if annotation in (int, float, str) else str


def add_model_options(parser: argparse.ArgumentParser, model: type, flags: dict[str, str],
                      metavars: dict[str, str] | None = None, notes: dict[str, str] | None = None) -> None:
    """One option per field of the pydantic `model` named in `flags` (field -> flag), its type, default
    and help taken from the field; `notes` add to a field's help."""
    for name, flag in flags.items():
        info = model.model_fields[name]
        default = info.get_default(call_default_factory=True)
        text = " ".join(t for t in (info.description, (notes or {}).get(name)) if t)
        if default is not None:
            text += f" (default: {default})"
        parser.add_argument(flag, dest=name, type=_scalar_type(info.annotation), default=default,
                            metavar=(metavars or {}).get(name), help=text or None)


def model_from_args(model: type, args: argparse.Namespace, flags: dict[str, str], **values):
    """`model(**{field: args.field for each flag} | values)`; pydantic's ValidationError as is."""
    return model(**({name: getattr(args, name) for name in flags} | values))


def validation_error(err, flags: dict[str, str], what: str) -> str:
    """'--flag: message' of a pydantic ValidationError's first error."""
    first = err.errors()[0]
    name = flags.get(str(first["loc"][0]), str(first["loc"][0])) if first["loc"] else what
    return f"{name}: {first['msg'].removeprefix('Value error, ')}"


def _generate(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from specroute.engine import Engine

    try:
        sampling = model_from_args(SamplingParams, args, SAMPLING_FLAGS)
    except ValidationError as err:
        print(f"error: invalid sampling parameters: {err.errors()[0]['loc'][0]}: {err.errors()[0]['msg']}",
              file=sys.stderr)
        return 2
    if args.max_new_tokens < 0:
        print("error: --max-new-tokens must be >= 0", file=sys.stderr)
        return 2
    tree = {k: v for k, v in (("top_k", args.tree_top_k), ("max_depth", args.tree_depth),
                              ("max_nodes", args.tree_nodes), ("stop_model", args.stop_model)) if v is not None}
    try:
        engine = Engine.load(args.target, args.drafter, device=args.device, tree=tree)
    except ValueError as err:  # a bad drafter setting (a stop model for another drafter, ...)
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        result = engine.generate(args.prompt, args.max_new_tokens, sampling, tuple(args.stop))
        print(json.dumps({"text": result.text, "token_ids": result.token_ids, "finish_reason": result.finish_reason,
                          "stats": result.stats.as_dict()}))
        return 0
    from core.reports import GenerationReport
    stats = GenerationReport()
    for chunk in engine.stream(args.prompt, args.max_new_tokens, sampling, tuple(args.stop), stats):
        print(chunk.text, end="", flush=True)
    print()
    print(f"[{stats.num_generated} tokens, {stats.rounds} rounds, tau {stats.tau:.2f}, "
          f"acceptance {stats.acceptance_rate:.2f}, {stats.tokens_per_s:.1f} tokens/s]", file=sys.stderr)
    return 0


def _zoo_build(args: argparse.Namespace) -> int:
    from specroute.zoo.build import build_zoo
    from specroute.zoo.manifest import summary_table
    manifest = build_zoo(args.preset, Path(args.out), device=args.device)
    print(summary_table(manifest))
    return 0


def _distill(args: argparse.Namespace) -> int:
    from specroute.zoo.distill import DistillConfig, run_distill
    try:
        config = DistillConfig(divergence=args.divergence, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                               max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                               heldout_fraction=args.heldout_fraction, device=args.device, seed=args.seed)
        run_distill(Path(args.target), Path(args.prompts), args.student, Path(args.out), config)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _steer(args: argparse.Namespace) -> int:
    from specroute.zoo.steer import SteerConfig, SteerTrainSpec, run_steer
    try:
        train = SteerTrainSpec(steps=args.steps, batch_size=args.batch_size, lr=args.lr, max_offset=args.max_offset,
                               freeze_drafter=args.freeze_drafter)
        config = SteerConfig(train=train, layers=tuple(args.layers) if args.layers else None,
                             max_new_tokens=args.max_new_tokens, heldout_fraction=args.heldout_fraction,
                             device=args.device, seed=args.seed)
        run_steer(Path(args.target), Path(args.drafter), Path(args.prompts), Path(args.out), config)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _log_acceptance(args: argparse.Namespace) -> int:
    from specroute.zoo.distill import load_prompts
    from specroute.zoo.stop import run_log_acceptance
    try:
        prompts = load_prompts(Path(args.prompts))[: args.max_prompts]
        log = run_log_acceptance(Path(args.target), args.drafter, prompts, Path(args.out), args.max_new_tokens,
                                 tuple(args.temperatures), args.device)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(log)} drafted nodes logged to {args.out}")
    return 0


def _train_stop(args: argparse.Namespace) -> int:
    from specroute.zoo.distill import load_prompts
    from specroute.zoo.stop import StopTrainSpec, run_train_stop
    try:
        spec = StopTrainSpec(variant=args.variant, labels=args.labels, epochs=args.epochs, seed=args.seed)
        if args.validation and not (args.target and args.drafter):
            raise ValueError("--validation needs --target and --drafter (the sweep measures the drafter's speed)")
        validation = load_prompts(Path(args.validation))[: args.max_prompts] if args.validation else None
        file = run_train_stop([Path(p) for p in args.logs], Path(args.out), spec,
                              Path(args.target) if args.target else None, args.drafter, validation,
                              args.max_new_tokens, tuple(args.temperatures), args.device)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    training = file.report["training"]
    auroc = training["heldout_auroc"]
    print(f"stop model written to {args.out}: held-out AUROC {'-' if auroc is None else f'{auroc:.3f}'}, "
          f"rule {file.rule}, threshold {file.threshold:g}")
    return 0


def _zoo_quality(args: argparse.Namespace) -> int:
    from specroute.zoo.quality import quality_of_zoo
    quality_of_zoo(Path(args.zoo), args.prompts, args.max_new_tokens, Path(args.out) if args.out else None)
    return 0


def _zoo_eval(args: argparse.Namespace) -> int:
    from specroute.zoo.evaluate import evaluate_zoo
    evaluate_zoo(Path(args.zoo), args.prompts, args.max_new_tokens, Path(args.out) if args.out else None)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from specroute.demo import run_demo, run_engine_demo
    (run_engine_demo if args.in_process else run_demo)(zoo=Path(args.zoo), preset=args.preset,
                                                       max_new_tokens=args.max_new_tokens)
    return 0


def _serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from specroute.config import ConfigError, load_config
    from specroute.zoo.serving import config_for_zoo
    from specroute.serve import LocalSystem
    if bool(args.config) == bool(args.zoo):
        return _fail("give exactly one of --config FILE and --zoo DIR")
    try:
        if args.config:
            config = load_config(args.config)
        else:
            from specroute.zoo.routing import ensure_routing
            ensure_routing(Path(args.zoo))
            config = config_for_zoo(Path(args.zoo))
        config = with_log_flags(config, args)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        return _fail(str(err))
    system = LocalSystem.start(config, address=args.address)
    print(f"specroute is serving (up in {system.startup_s:.0f} s)\n"
          f"  gRPC  {system.grpc_address}   (specroute.v1.SpecRoute; SDK: specroute.client.Client)\n"
          f"  HTTP  {system.http_url}/v1/completions   (OpenAI-compatible)\n"
          f"  Redis {system.config.redis.url}\n"
          f"  metrics {system.metrics_url}   (Prometheus: Ray's endpoint, every replica's specroute_* metrics)\n"
          f"  logs  {config.logs.dir or 'stderr of each replica (Ray worker logs)'}   ({config.logs.format})\n"
          "Ctrl-C stops it.", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    system.stop()
    return 0


def with_log_flags(config, args: argparse.Namespace):
    """The config with `specroute serve`'s --log-format and --log-dir in its `logs` (a flag given
    overrides the config file's value; one not given keeps it). The directory is made absolute:
    replicas do not run in this shell's working directory."""
    log_dir = str(Path(args.log_dir).resolve()) if args.log_dir is not None else None
    overrides = {field: value for field, value in (("format", args.log_format), ("dir", log_dir)) if value is not None}
    if not overrides:
        return config
    logs = type(config.logs).model_validate({**config.logs.model_dump(), **overrides})
    return config.model_copy(update={"logs": logs})


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _tasks_detect(args: argparse.Namespace) -> int:
    from router.stats import logged_prompts
    from specroute.offline.detect import detect_tasks, save_tasks
    from specroute.zoo.distill import load_prompts
    if bool(args.prompts) == bool(args.from_redis):
        return _fail("give exactly one of --prompts FILE and --from-redis URL")
    try:
        prompts = load_prompts(Path(args.prompts)) if args.prompts else logged_prompts(args.from_redis)
        options = {"model_dir": args.embedding_model} if args.featuriser == "embedding" else {}
        detection = detect_tasks(prompts, args.featuriser, options, args.k_min, args.k_max, args.seed)
    except (ValueError, RuntimeError) as err:
        return _fail(str(err))
    save_tasks(detection, Path(args.out))
    print(f"{len(detection.tasks)} tasks in {len(detection.prompts)} prompts (merge-height gap by k: "
          + ", ".join(f"{k}: {v:.2f}" for k, v in detection.meta["merge_gap"].items()) + ")")
    for task in detection.tasks:
        print(f"  {task['name']:<28} {task['size']:>6} prompts   {' '.join(task['top_terms'])}")
    print(f"saved to {args.out} (version {detection.meta['version']})")
    return 0


def _tasks_assign(args: argparse.Namespace) -> int:
    from router.assign import ROUTING_FILE
    from router.detect import load_tasks
    from specroute.offline.assign import DrafterRef, assign_drafters, routing_summary, zoo_drafters
    try:
        tasks = load_tasks(Path(args.tasks))
        if args.zoo:
            target, drafters, default = zoo_drafters(Path(args.zoo))
        elif args.target and args.drafter:
            target, drafters = Path(args.target), [_drafter_ref(DrafterRef, spec) for spec in args.drafter]
            default = drafters[0].name
        else:
            return _fail("give --zoo DIR, or --target DIR with one --drafter NAME=DIR|ngram per drafter")
        table = assign_drafters(tasks.samples(), target, drafters, args.default or default, tasks.version,
                                args.prompts, args.max_new_tokens, args.device)
    except (ValueError, FileNotFoundError) as err:
        return _fail(str(err))
    out = Path(args.out) if args.out else Path(args.tasks) / ROUTING_FILE
    table.save(out)
    print(routing_summary(table))
    print(f"routing table saved to {out}")
    return 0


def _drafter_ref(cls, spec: str):
    """NAME=DIR (a model drafter) or NAME=KIND (a registered kind without weights, e.g. ngram)."""
    from specroute.engine import drafter_spec
    name, _, where = spec.partition("=")
    if not name or not where:
        raise ValueError(f"--drafter {spec!r}: expected NAME=DIR or NAME=ngram")
    kind, options = drafter_spec(where)
    return cls(name, kind, {k: Path(v) if k == "path" else v for k, v in options.items()})


def _tasks_rename(args: argparse.Namespace) -> int:
    from specroute.offline.rename import rename_task
    try:
        done = rename_task(Path(args.tasks), args.old, args.new)
    except (ValueError, FileNotFoundError) as err:
        return _fail(str(err))
    print(f"renamed task {done.old!r} to {done.new!r} in {args.tasks} ({', '.join(done.files)}); "
          f"version {done.version}")
    return 0


def _tasks_route(args: argparse.Namespace) -> int:
    from router.assign import RoutingTable
    from router.detect import load_tasks
    from router.router import Router, RouterConfig
    from router.stats import RoutingStats
    try:
        tasks = load_tasks(Path(args.tasks))
        table = RoutingTable.load(Path(args.routing) if args.routing else Path(args.tasks))
        stats = RoutingStats(args.redis_url) if args.redis_url else None
        router = Router(tasks, table, stats, RouterConfig(confidence_threshold=args.threshold))
        decision = router.route(args.prompt, args.task, args.drafter, greedy=not args.sampled)
    except (ValueError, FileNotFoundError) as err:
        return _fail(str(err))
    print(json.dumps(decision.__dict__))
    return 0


def _loadtest(args: argparse.Namespace) -> int:
    import os

    from pydantic import ValidationError

    from specroute.loadtest import PromptMix, load_prompt_source, ray_replica_counter, run_loadtest
    if bool(args.zoo) == bool(args.prompts):
        return _fail("give exactly one of --zoo DIR and --prompts FILE")
    try:
        config = model_from_args(LoadTestConfig, args, LOADTEST_FLAGS,
                                 api_key=args.api_key or os.environ.get("SPECROUTE_API_KEY"))
    except ValidationError as err:
        return _fail(validation_error(err, LOADTEST_FLAGS, "loadtest"))
    try:
        prompts = load_prompt_source(zoo=args.zoo, prompts_file=args.prompts)
        PromptMix(prompts, config.mix, config.seed)  # an unknown --mix task fails here, before any connection
    except (ValueError, FileNotFoundError) as err:
        return _fail(str(err))
    counter, note, disconnect = ray_replica_counter(args.ray_address)
    if counter is None:
        print(f"note: {note}", file=sys.stderr)
    try:
        report = run_loadtest(config, prompts, replica_counts=counter, out_dir=Path(args.out),
                              progress=not args.no_progress, replica_note=note)
    finally:
        disconnect()
    print(report.markdown())
    print(f"wrote {Path(args.out) / 'report.md'}, report.json and loadtest.png")
    return 0 if report.summary["requests"]["ok"] else 1


def _serving_commands(sub) -> None:
    """`specroute demo` and `specroute serve`: the whole system."""
    demo = sub.add_parser("demo", help="Build the demo zoo if missing, start the whole system, send every task's "
                                       "prompts through the SDK, shut down.")
    demo.add_argument("--zoo", default="zoo/demo", help="Zoo directory (built if it has no manifest).")
    demo.add_argument("--preset", default="demo", help="Preset to build when the zoo is missing.")
    demo.add_argument("--max-new-tokens", type=int, default=64)
    demo.add_argument("--in-process", action="store_true",
                      help="Instead: every drafter in one process beside plain decoding (speedup, losslessness).")
    demo.set_defaults(func=_demo)

    serve_cmd = sub.add_parser("serve", help="Start the system on Ray Serve: router, drafters, verifier, Redis.")
    serve_cmd.add_argument("--config", default=None, help="The system's YAML config (see README).")
    serve_cmd.add_argument("--zoo", default=None, help="Or serve a built zoo with default settings.")
    serve_cmd.add_argument("--address", default=None, help="An existing Ray cluster (default: start a local one).")
    serve_cmd.add_argument("--log-format", choices=("text", "json"), default=None,
                           help="Every replica's log lines as text or JSON lines (overrides the config's logs.format).")
    serve_cmd.add_argument("--log-dir", default=None, metavar="DIR",
                           help="Write logs to DIR/<component>-<pid>.log instead of stderr (overrides logs.dir).")
    serve_cmd.set_defaults(func=_serve)


def _generate_command(sub) -> None:
    """`specroute generate`: in-process generation."""
    gen = sub.add_parser("generate", help="Generate in-process with a target and a drafter.")
    gen.add_argument("--target", required=True, help="Target model directory (save_pretrained format).")
    gen.add_argument("--drafter", default="none", help="A model directory, 'ngram', or 'none' (plain decoding).")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--max-new-tokens", type=int, default=64)
    add_model_options(gen, SamplingParams, SAMPLING_FLAGS)
    gen.add_argument("--stop", action="append", default=[], help="A stop string (repeatable).")
    gen.add_argument("--tree-top-k", type=int, default=None, help="Model drafter: children per node (1: chain).")
    gen.add_argument("--tree-depth", type=int, default=None, help="Model drafter: most drafted levels.")
    gen.add_argument("--tree-nodes", type=int, default=None, help="Model drafter: most nodes per tree.")
    gen.add_argument("--stop-model", default=None, help="A stop model directory (`specroute train-stop`): it "
                                                       "decides when the drafter stops drafting.")
    gen.add_argument("--device", default="auto", help="auto (cuda when present, else cpu), cpu or cuda.")
    gen.add_argument("--json", action="store_true", help="Print one JSON object: text, token_ids, stats.")
    gen.set_defaults(func=_generate)


def _distill_command(sub) -> None:
    """`specroute distill`: align a drafter to a target."""
    distill = sub.add_parser("distill", help="Align a drafter to any target by distillation (DistillSpec).")
    distill.add_argument("--target", required=True, help="Target model directory.")
    distill.add_argument("--prompts", required=True, help="Prompts: JSONL with a 'prompt' field, or one per line.")
    distill.add_argument("--student", required=True,
                         help="A drafter directory to refine, or a JSON architecture, e.g. "
                              '{"family": "llama", "hidden": 128, "layers": 2, "heads": 4}, in a file.')
    distill.add_argument("--out", required=True, help="Where the distilled drafter is saved.")
    distill.add_argument("--divergence", default="forward_kl", help="forward_kl, reverse_kl or tv.")
    distill.add_argument("--steps", type=int, default=200)
    distill.add_argument("--batch-size", type=int, default=16)
    distill.add_argument("--lr", type=float, default=1e-3)
    distill.add_argument("--max-new-tokens", type=int, default=64, help="On-policy continuation length.")
    distill.add_argument("--temperature", type=float, default=0.7, help="Sampling temperature of the continuations.")
    distill.add_argument("--heldout-fraction", type=float, default=0.1)
    distill.add_argument("--device", default="auto")
    distill.add_argument("--seed", type=int, default=0)
    distill.set_defaults(func=_distill)


def _steer_command(sub) -> None:
    """`specroute steer`: steer a model drafter with the target's hidden states (SD²)."""
    steer = sub.add_parser("steer", help="Steer a drafter with the target's hidden states (SD²).")
    steer.add_argument("--target", required=True, help="Target model directory.")
    steer.add_argument("--drafter", required=True, help="Model drafter directory to start from (pretrained or distilled).")
    steer.add_argument("--prompts", required=True, help="Prompts: JSONL with a 'prompt' field, or one per line.")
    steer.add_argument("--out", required=True, help="Where the steered drafter directory is written.")
    steer.add_argument("--layers", type=int, nargs=3, metavar=("LOW", "MID", "HIGH"),
                       help="Target layers read (0: embeddings, k: decoder layer k; default: spread over its depth).")
    steer.add_argument("--steps", type=int, default=200)
    steer.add_argument("--batch-size", type=int, default=16)
    steer.add_argument("--lr", type=float, default=1e-3)
    steer.add_argument("--max-offset", type=int, default=8, help="k: position t is steered by the state of t - e, "
                                                                 "e in [1, k].")
    steer.add_argument("--freeze-drafter", action="store_true", help="Train the steering maps only.")
    steer.add_argument("--max-new-tokens", type=int, default=64, help="Continuation length (sampled and greedy).")
    steer.add_argument("--heldout-fraction", type=float, default=0.1)
    steer.add_argument("--device", default="auto")
    steer.add_argument("--seed", type=int, default=0)
    steer.set_defaults(func=_steer)


def _stop_commands(sub) -> None:
    """`specroute log-acceptance` and `specroute train-stop`: learned stopping (DynaSD, SpecDec++)."""
    log = sub.add_parser("log-acceptance", help="Log every drafted node's features and verdict (greedy and sampled).")
    log.add_argument("--target", required=True, help="Target model directory.")
    log.add_argument("--drafter", required=True, help="A drafter directory with a model (model, feature, steered, "
                                                      "hybrid).")
    log.add_argument("--prompts", required=True, help="Prompts (a task's training prompts): JSONL with a 'prompt' "
                                                      "field, or one per line.")
    log.add_argument("--out", required=True, help="The log file to write (.safetensors).")
    log.add_argument("--max-prompts", type=int, default=None)
    log.add_argument("--max-new-tokens", type=int, default=64)
    log.add_argument("--temperatures", type=float, nargs="+", default=[0.0, 1.0])
    log.add_argument("--device", default="auto")
    log.set_defaults(func=_log_acceptance)
    train = sub.add_parser("train-stop", help="Train a decision model that stops drafting, on acceptance logs.")
    train.add_argument("--logs", required=True, nargs="+", help="Acceptance log files (`specroute log-acceptance`).")
    train.add_argument("--out", required=True, help="The stop model directory to write (a drafter's `stop_model`).")
    train.add_argument("--variant", choices=["mlp", "hard"], default="mlp",
                       help="mlp: on the drafter's hidden state; hard: on entropy and top-10 probabilities of q.")
    train.add_argument("--labels", choices=["soft", "hard"], default="soft",
                       help="soft: any child of the node accepted; hard: its first child accepted.")
    train.add_argument("--epochs", type=int, default=40)
    train.add_argument("--target", help="With --drafter and --validation: choose the rule and threshold by speed.")
    train.add_argument("--drafter", help="The drafter the logs came from.")
    train.add_argument("--validation", help="Validation prompts (never test prompts) for the threshold sweep.")
    train.add_argument("--max-prompts", type=int, default=None)
    train.add_argument("--max-new-tokens", type=int, default=64)
    train.add_argument("--temperatures", type=float, nargs="+", default=[0.0, 1.0])
    train.add_argument("--device", default="auto")
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(func=_train_stop)


def _zoo_commands(sub) -> None:
    """`specroute zoo build|eval|quality`: the offline model zoo."""
    zoo = sub.add_parser("zoo", help="Build the offline model zoo.")
    zoo_sub = zoo.add_subparsers(dest="zoo_command", required=True)
    build = zoo_sub.add_parser("build", help="Corpus, tokenizer, target and distilled drafters.")
    build.add_argument("--preset", choices=["tiny", "demo", "bench"], default="tiny")
    build.add_argument("--out", required=True)
    build.add_argument("--device", default="cpu", help="cpu or cuda.")
    build.set_defaults(func=_zoo_build)
    evaluate = zoo_sub.add_parser("eval", help="tau of every drafter on every task's test prompts (matrix, JSON, PNG).")
    evaluate.add_argument("--zoo", required=True)
    evaluate.add_argument("--prompts", type=int, default=8, help="Test prompts per task.")
    evaluate.add_argument("--max-new-tokens", type=int, default=64)
    evaluate.add_argument("--out", default=None, help="Directory for eval.json and eval_tau.png (default: the zoo).")
    evaluate.set_defaults(func=_zoo_eval)
    quality = zoo_sub.add_parser("quality", help="does the target loop? held-out loss, distinct-n and repeat share "
                                                 "per task: greedy, T=1 and the reference text.")
    quality.add_argument("--zoo", required=True)
    quality.add_argument("--prompts", type=int, default=8, help="Test prompts per task.")
    quality.add_argument("--max-new-tokens", type=int, default=96)
    quality.add_argument("--out", default=None, help="Directory for quality.json (default: the zoo).")
    quality.set_defaults(func=_zoo_quality)


def _tasks_commands(sub) -> None:
    """`specroute tasks detect|assign|route|rename`: the offline task steps, one routing decision, a rename."""
    tasks = sub.add_parser("tasks", help="Task detection and drafter assignment (offline), and one routing decision.")
    tasks_sub = tasks.add_subparsers(dest="tasks_command", required=True)
    detect = tasks_sub.add_parser("detect", help="Cluster prompts into tasks, name them, train the classifier.")
    detect.add_argument("--prompts", help="Prompts: JSONL with a 'prompt' field, or one per line.")
    detect.add_argument("--from-redis", metavar="URL", help="Use the query log of the Redis server at URL instead.")
    detect.add_argument("--out", required=True, help="Directory of the versioned task artifact.")
    detect.add_argument("--k-min", type=int, default=2)
    detect.add_argument("--k-max", type=int, default=12)
    detect.add_argument("--featuriser", default="tfidf", choices=["tfidf", "embedding"])
    detect.add_argument("--embedding-model", help="Local sentence-transformers directory (embedding featuriser).")
    detect.add_argument("--seed", type=int, default=0)
    detect.set_defaults(func=_tasks_detect)
    assign = tasks_sub.add_parser("assign", help="Measure every drafter on every task; write the routing table.")
    assign.add_argument("--tasks", required=True, help="Task artifact directory (from `tasks detect`).")
    assign.add_argument("--zoo", help="A built zoo: its target and all its drafters.")
    assign.add_argument("--target", help="Or a target directory ...")
    assign.add_argument("--drafter", action="append", default=[], help="... and NAME=DIR or NAME=ngram (repeatable).")
    assign.add_argument("--default", help="Drafter for unsure prompts (default: the zoo's generic drafter).")
    assign.add_argument("--prompts", type=int, default=8, help="Sample prompts per task.")
    assign.add_argument("--max-new-tokens", type=int, default=64)
    assign.add_argument("--device", default="auto")
    assign.add_argument("--out", help="Routing table file (default: TASKS/routing.json).")
    assign.set_defaults(func=_tasks_assign)
    route = tasks_sub.add_parser("route", help="Route one prompt: print its task, drafter and confidence.")
    route.add_argument("--tasks", required=True)
    route.add_argument("--routing", help="Routing table (default: TASKS/routing.json).")
    route.add_argument("--prompt", required=True)
    route.add_argument("--task", help="Explicit task (skips the classifier).")
    route.add_argument("--drafter", help="Explicit drafter.")
    route.add_argument("--threshold", type=float, default=0.5, help="Confidence below which the default drafter serves.")
    route.add_argument("--redis-url", help="Shared statistics for the adaptive policy.")
    route.add_argument("--sampled", action="store_true", help="Route as a sampled request (temperature > 0); "
                                                              "default: greedy.")
    route.set_defaults(func=_tasks_route)
    rename = tasks_sub.add_parser("rename", help="Rename a task in the artifact: tasks.json, samples, the "
                                                 "classifier's labels and the routing table beside them.")
    rename.add_argument("--tasks", required=True, help="Task artifact directory (from `tasks detect`).")
    rename.add_argument("old", help="The task's current name.")
    rename.add_argument("new", help="Its new name (letters, digits, '_', '.', '-').")
    rename.set_defaults(func=_tasks_rename)


def _loadtest_command(sub) -> None:
    """`specroute loadtest`: a bounded load test of one endpoint."""
    load = sub.add_parser("loadtest", help="Bounded closed-loop load test of one gRPC endpoint: throughput, TTFT, "
                                           "inter-token latency, tau, errors, replicas over time.",
                          description="N workers each send one streaming request after another to the one address "
                                      "given, until --duration or --max-requests; requests still running at the end "
                                      "get --drain seconds, then are cancelled. Writes report.md, report.json and "
                                      "loadtest.png to --out. Exit code 0 if any request succeeded, 1 if none did, "
                                      "2 for bad arguments.")
    add_model_options(load, LoadTestConfig, LOADTEST_FLAGS,
                      metavars={"target": "ADDRESS", "concurrency": "N", "duration_s": "S", "mix": "TASKS",
                                "max_requests": "N", "max_new_tokens": "N", "warmup_requests": "N",
                                "request_timeout_s": "S", "drain_s": "S", "drafter": "NAME", "api_key": "KEY"},
                      notes={"api_key": "Sent as authorization: Bearer KEY (default: $SPECROUTE_API_KEY)."})
    load.add_argument("--zoo", default=None, metavar="DIR", help="Prompts: a built zoo's held-out test split.")
    load.add_argument("--prompts", default=None, metavar="FILE", help='Or JSONL lines {"prompt": ..., "task": ...}.')
    load.add_argument("--out", default="loadtest-results", metavar="DIR", help="Output directory.")
    load.add_argument("--ray-address", default="auto", metavar="ADDR",
                      help="Ray cluster for replica counts (ray.init address: auto, HOST:PORT, ray://...), or none; "
                           "unreachable: the report says so and the run goes on.")
    load.add_argument("--no-progress", action="store_true", help="No progress bar.")
    load.set_defaults(func=_loadtest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="specroute", description="Task-routed speculative decoding.")
    sub = parser.add_subparsers(dest="command", required=True)
    _serving_commands(sub)
    _generate_command(sub)
    _distill_command(sub)
    _steer_command(sub)
    _stop_commands(sub)
    _zoo_commands(sub)
    _tasks_commands(sub)
    _loadtest_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
