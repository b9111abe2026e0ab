"""`python -m bench NAME ...`: the benchmarks' command line; argument parsing and dispatch only.

    python -m bench engine [--zoo DIR]
    python -m bench router [--zoo DIR]
    python -m bench lookup [--zoo DIR]
    python -m bench target --variant NAME:steps=N,unlikelihood=W [...]
    python -m bench services [--zoo DIR]
    python -m bench scale [--zoo DIR] [--drafter NAME]
    python -m bench drafters [--zoo DIR]
    python -m bench steering [--zoo DIR]
    python -m bench mask [--zoo DIR]
    python -m bench stopping [--zoo DIR]

Every benchmark has --zoo (built from --preset when it has no manifest) and --out (results).
Each benchmark module is imported only when it runs, so `--help` is instant.
This module knows nothing about what a benchmark measures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _engine(args: argparse.Namespace) -> int:
    from bench.engine import run_engine_bench, run_tree_sweep
    common = dict(zoo=Path(args.zoo), preset=args.preset, prompts_per_task=args.prompts,
                  max_new_tokens=args.max_new_tokens, repeats=args.repeats, out=Path(args.out))
    if args.sweep:
        run_tree_sweep(**common)
    else:
        run_engine_bench(**common, **{k: v for k, v in (("chain", args.chain), ("tree", args.tree)) if v})
    return 0


def _router(args: argparse.Namespace) -> int:
    from bench.router import run_router_bench
    run_router_bench(zoo=Path(args.zoo), preset=args.preset, prompts_per_task=args.prompts,
                     max_new_tokens=args.max_new_tokens, out=Path(args.out))
    return 0


def _lookup(args: argparse.Namespace) -> int:
    from bench.lookup import run_lookup_bench
    run_lookup_bench(zoo=Path(args.zoo), preset=args.preset, prompts_per_task=args.prompts,
                     max_new_tokens=args.max_new_tokens, out=Path(args.out))
    return 0


def _target(args: argparse.Namespace) -> int:
    from bench.target import run
    run(args.preset, Path(args.zoo), Path(args.out), args.variant, args.prompts, args.max_new_tokens)
    return 0


def _scale(args: argparse.Namespace) -> int:
    from bench.scale import run_scale_bench
    run_scale_bench(zoo=Path(args.zoo), preset=args.preset, concurrencies=tuple(args.streams),
                    duration_s=args.duration, max_new_tokens=args.max_new_tokens, repeats=args.repeats,
                    out=Path(args.out), drafter=args.drafter,
                    verifier_threads=tuple(args.verifier_threads),
                    **({"modes": tuple(args.modes)} if args.modes else {}))
    return 0


def _services(args: argparse.Namespace) -> int:
    from bench.services import run_services_bench
    run_services_bench(zoo=Path(args.zoo), preset=args.preset, prompts_per_task=args.prompts,
                       max_new_tokens=args.max_new_tokens, repeats=args.repeats, out=Path(args.out),
                       verifier_threads=args.verifier_threads, stream_interval_ms=args.stream_interval_ms,
                       draft_ahead=args.draft_ahead, ray_cpus=args.ray_cpus, compute_cpus=args.compute_cpus)
    return 0


def _drafters(args: argparse.Namespace) -> int:
    from bench.drafters import run_drafters_bench
    run_drafters_bench(zoo=Path(args.zoo), preset=args.preset, prompts_per_task=args.prompts,
                       max_new_tokens=args.max_new_tokens, repeats=args.repeats, out=Path(args.out),
                       **({"tree": args.tree} if args.tree else {}))
    return 0


def _steering(args: argparse.Namespace) -> int:
    from bench.steering import run_steering_bench
    run_steering_bench(zoo=Path(args.zoo), preset=args.preset, prompts_per_task=args.prompts_per_task,
                       max_new_tokens=args.max_new_tokens, repeats=args.repeats, out=Path(args.out),
                       **({"tree": args.tree} if args.tree else {}))
    return 0


def _stopping(args: argparse.Namespace) -> int:
    from bench.stopping import run_stopping_bench
    run_stopping_bench(zoo=Path(args.zoo), preset=args.preset, prompts_per_task=args.prompts_per_task,
                       max_new_tokens=args.max_new_tokens, repeats=args.repeats, out=Path(args.out))
    return 0


def _mask(args: argparse.Namespace) -> int:
    from bench.mask import run_mask_bench
    run_mask_bench(out=Path(args.out), zoo=Path(args.zoo), rounds=args.rounds, repeats=args.repeats,
                   target_forward=not args.no_target_forward, shared_machine=args.shared_machine)
    return 0


def _tree_shape(text: str) -> dict:
    """'K,D,N' -> {"top_k": K, "max_depth": D, "max_nodes": N}."""
    try:
        top_k, depth, nodes = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected TOP_K,DEPTH,NODES, got {text!r}") from None
    return {"top_k": top_k, "max_depth": depth, "max_nodes": nodes}


def _bench_parser(sub, name: str, help_text: str, func) -> argparse.ArgumentParser:
    """A `python -m bench NAME` parser with the options every benchmark has: --zoo, --preset, --out."""
    parser = sub.add_parser(name, help=help_text)
    parser.add_argument("--zoo", default="zoo/bench", help="Zoo directory (built if it has no manifest).")
    parser.add_argument("--preset", default="bench", help="Preset to build when the zoo is missing.")
    parser.add_argument("--out", default="bench/results", help="Where the results are written.")
    parser.set_defaults(func=func)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description="specroute's benchmarks.")
    sub = parser.add_subparsers(dest="bench_command", required=True)
    engine = _bench_parser(sub, "engine", "Plain vs HF assisted vs specroute chain/tree/ngram.", _engine)
    engine.add_argument("--prompts", type=int, default=8, help="Test prompts per task.")
    engine.add_argument("--max-new-tokens", type=int, default=96)
    engine.add_argument("--repeats", type=int, default=3)
    engine.add_argument("--chain", type=_tree_shape, default=None, help="Chain shape 1,DEPTH,NODES (default: swept).")
    engine.add_argument("--tree", type=_tree_shape, default=None, help="Tree shape TOP_K,DEPTH,NODES (default: swept).")
    engine.add_argument("--sweep", action="store_true",
                        help="Measure tree shapes on validation prompts instead (how the defaults were chosen).")
    router_bench = _bench_parser(sub, "router", "Task detection, classifier and routed tau on the bench zoo.",
                                 _router)
    router_bench.add_argument("--prompts", type=int, default=12, help="Test prompts per task for the routed tau.")
    router_bench.add_argument("--max-new-tokens", type=int, default=64)
    lookup_bench = _bench_parser(sub, "lookup", "What a hybrid specialist's parts add: distillation, "
                                 "prompt lookup, its task's datastore.", _lookup)
    lookup_bench.add_argument("--prompts", type=int, default=12, help="Test prompts per task.")
    lookup_bench.add_argument("--max-new-tokens", type=int, default=64)
    target_bench = _bench_parser(sub, "target", "Target training levers: quality of each variant's output "
                                 "on validation prompts (does it loop?).", _target)
    target_bench.add_argument("--variant", action="append", required=True,
                              help="NAME:field=value,... overriding the preset's target (steps, batch_size, lr, "
                                   "unlikelihood, hidden, layers); repeatable.")
    target_bench.add_argument("--prompts", type=int, default=8, help="Validation prompts per task.")
    target_bench.add_argument("--max-new-tokens", type=int, default=96)
    services = _bench_parser(sub, "services", "One stream through the SDK and Ray Serve vs the in-process engine.",
                             _services)
    services.add_argument("--prompts", type=int, default=4, help="Test prompts per task.")
    services.add_argument("--max-new-tokens", type=int, default=96)
    services.add_argument("--repeats", type=int, default=3)
    services.add_argument("--verifier-threads", type=int, default=None,
                          help="torch threads of the verifier replica (default: the config's).")
    services.add_argument("--stream-interval-ms", type=float, default=None,
                          help="The drafters' stream_interval_ms for stream() (default: the config's).")
    services.add_argument("--draft-ahead", type=int, default=None,
                          help="The model drafters' verdicts guessed per round (default: the config's; 0: off).")
    services.add_argument("--ray-cpus", type=int, nargs="+", default=None,
                          help="CPUs the local Ray's processes start on (the config's ray_cpus; default: unpinned).")
    services.add_argument("--compute-cpus", type=int, nargs="+", default=None,
                          help="CPUs of the drafters' drafting and the verifier's forward threads "
                               "(deployment.cpus; default: unpinned).")
    scale = _bench_parser(sub, "scale", "Aggregate tokens/s at N streams: batched vs unbatched verification, "
                          "the even vs the acceptance-weighted split, vs plain decoding.", _scale)
    scale.add_argument("--streams", type=int, nargs="+", default=[1, 4, 8, 16], help="Concurrency levels.")
    scale.add_argument("--duration", type=float, default=15.0, help="Seconds of load per level.")
    scale.add_argument("--max-new-tokens", type=int, default=64)
    scale.add_argument("--repeats", type=int, default=3)
    scale.add_argument("--drafter", default=None, help="Every request to this drafter (default: routed).")
    scale.add_argument("--verifier-threads", type=int, nargs="+", default=[1, 2],
                       help="torch thread counts of the verifier to try, each mode with each; "
                            "a mode's figure is its best.")
    scale.add_argument("--modes", nargs="+", choices=["unbatched", "batched", "weighted", "plain"], default=None,
                       help="Modes to measure (default: all): batched is the even split; plain drafts nothing.")
    drafters = _bench_parser(sub, "drafters", "Token drafters vs feature drafters (EAGLE-style, PosS, FSPAD) "
                             "per task: tau, acceptance by position, speedup, state bytes.", _drafters)
    drafters.add_argument("--prompts", type=int, default=3, help="Test prompts per task.")
    drafters.add_argument("--max-new-tokens", type=int, default=64)
    drafters.add_argument("--repeats", type=int, default=2)
    drafters.add_argument("--tree", type=_tree_shape, default=None,
                          help="Tree shape TOP_K,DEPTH,NODES of every drafter (default: the engine bench's).")
    steering = _bench_parser(sub, "steering", "Steered drafters (SD²) vs the pretrained and distilled drafters they "
                             "started from, per task and out of distribution: tau, speedup, steering cost.", _steering)
    steering.add_argument("--prompts-per-task", type=int, default=4, help="Test prompts per task.")
    steering.add_argument("--max-new-tokens", type=int, default=64)
    steering.add_argument("--repeats", type=int, default=2)
    steering.add_argument("--tree", type=_tree_shape, default=None,
                          help="Tree shape TOP_K,DEPTH,NODES of every drafter (default: the engine bench's).")
    stopping = _bench_parser(sub, "stopping", "When to stop drafting: static tree, adaptive budget, decision models "
                             "(mlp, hard) and the survival rule, per task: tau, nodes, rejected share, speedup.",
                             _stopping)
    stopping.add_argument("--prompts-per-task", type=int, default=3, help="Test prompts per task.")
    stopping.add_argument("--max-new-tokens", type=int, default=64)
    stopping.add_argument("--repeats", type=int, default=2)
    mask = _bench_parser(sub, "mask", "Tree attention masks: built per tree vs sliced from a pre-built one "
                         "(DynaSD), with one target forward for scale.", _mask)
    mask.add_argument("--rounds", type=int, default=200, help="Trees per shape, one session seeing them in turn.")
    mask.add_argument("--repeats", type=int, default=7)
    mask.add_argument("--no-target-forward", action="store_true", help="Skip timing the zoo target's forward.")
    mask.add_argument("--shared-machine", action="store_true",
                      help="Note in the results that other work shared the machine while it ran.")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
