"""`python -m bench mask`: building each tree's attention mask vs slicing a pre-built one.

DynaSD (Lu et al., 2024, arXiv 2409.10644) pre-builds the mask of its largest tree and slices it
per round; `core.tree_mask.AncestorRows` is that idea for dynamic trees. This benchmark times,
per tree shape (EAGLE-2 trees drafted the way `drafter_service.model_drafter` shapes them, from
random draft probabilities), side by side and interleaved, median of repeats:

- `ancestors`: the tree's ancestor matrix (what the batched verifier builds per tree);
- `mask P=...`: the single-session verifier's whole additive mask over a committed prefix of P;
- `pool P=...`: the batched verifier's additive mask (`verifier_service.kv_pool.pool_mask`) of one
  session with P cached slots;
- `drafter levels`: the model drafter's ancestor matrix of its candidate set after every level
  (its candidates grow level by level within a round; slice: one `AncestorRows` per round).

Each method sees the same sequence of trees, as one session sees them round after round. For
scale it times one target forward of a tree of each size over the zoo's target (when the zoo is
there), so a saving reads as a share of a verification round. Writes bench/results/mask.md and
mask.json. This module knows nothing about serving or acceptance.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from bench.common import provenance, provenance_lines, write_results
from core.contracts import NO_PARENT
from core.kv_cache import truncate
from core.tree_mask import AncestorRows, ancestor_matrix, tree_attention_mask
from verifier_service.kv_pool import pool_mask

NODE_COUNTS = (8, 16, 32, 64)
MAX_DEPTH = 8
PREFIXES = (64, 512)


@dataclass(frozen=True)
class DraftedRound:
    """One drafting round: the candidates' parents, their count after each level, the tree sent."""

    candidate_parents: tuple[int, ...]
    level_sizes: tuple[int, ...]
    tree_parents: tuple[int, ...]


def candidate_count(top_k: int, max_depth: int) -> int:
    """Most candidates a round has: the root, its top_k children, then top_k * top_k per level."""
    return 1 + top_k + (max_depth - 1) * top_k * top_k


def default_shapes(node_counts=NODE_COUNTS, max_depth: int = MAX_DEPTH) -> list[tuple[int, int, int]]:
    """(top_k, depth, nodes) for top_k 1..4 and each node count whose tree the candidates can fill
    (a chain holds depth + 1 nodes)."""
    shapes = []
    for top_k in range(1, 5):
        for nodes in node_counts:
            depth = min(max_depth, nodes - 1) if top_k == 1 else max_depth
            if candidate_count(top_k, depth) >= nodes and (top_k > 1 or nodes == depth + 1):
                shapes.append((top_k, depth, nodes))
    return shapes


def drafted_round(rng: random.Random, top_k: int, max_depth: int, max_nodes: int) -> DraftedRound:
    """A greedy EAGLE-2 round: level by level the top_k best-scoring frontier nodes get their top_k
    children (score: cumulative log-probability), then the best max_nodes form the tree, in
    generation order (as `model_drafter._select` orders it)."""
    parents, scores, depths, frontier, sizes = [NO_PARENT], [0.0], [0], [0], []
    for depth in range(1, max_depth + 1):
        for node in frontier:
            raw = sorted((rng.random() ** 3 for _ in range(top_k + 4)), reverse=True)  # skewed, like q
            total = sum(raw)
            for value in raw[:top_k]:
                parents.append(node)
                scores.append(scores[node] + math.log(max(value / total, 1e-12)))
                depths.append(depth)
        sizes.append(len(parents))
        level = [i for i in range(len(parents)) if depths[i] == depth]
        frontier = sorted(level, key=lambda i: -scores[i])[:top_k]
    kept = sorted(range(1, len(parents)), key=lambda i: (-scores[i], i))[: max_nodes - 1]
    order = [0, *sorted(kept)]
    index_of = {c: i for i, c in enumerate(order)}
    tree = tuple(NO_PARENT if c == 0 else index_of[parents[c]] for c in order)
    # the drafter runs a level's frontier before expanding it: its matrix is asked for at each size but the last
    return DraftedRound(tuple(parents), tuple(sizes[:-1]), tree)


def _methods(rounds: list[DraftedRound], top_k: int, depth: int, nodes: int,
             prefixes: tuple[int, ...]) -> dict[str, dict[str, Callable[[], None]]]:
    """{measure: {"build": run, "slice": run}}: each run does the measure for every round in turn."""
    trees = [r.tree_parents for r in rounds]
    cap = max(len(t) for t in trees)
    out: dict[str, dict[str, Callable[[], None]]] = {}

    def slicing(step: Callable[[AncestorRows, tuple[int, ...]], object], capacity: int = cap) -> Callable[[], None]:
        def run():
            rows = AncestorRows(capacity)  # once per session
            for parents in trees:
                step(rows, parents)
        return run

    out["ancestors"] = {"build": lambda: [ancestor_matrix(t) for t in trees],
                        "slice": slicing(lambda rows, t: rows.rows(t))}
    for prefix in prefixes:
        out[f"mask P={prefix}"] = {
            "build": lambda p=prefix: [tree_attention_mask(t, p) for t in trees],
            "slice": slicing(lambda rows, t, p=prefix: tree_attention_mask(t, p, ancestors=rows))}
        cached = list(range(prefix))

        def pooled(anc: Callable[[tuple[int, ...]], torch.Tensor], p=prefix, cached=cached) -> None:
            for t in trees:
                pool_mask([(cached, list(range(p, p + len(t))), anc(t))], p + len(t), torch.float32)

        def pool_slice(p=prefix, pooled=pooled) -> None:
            rows = AncestorRows(cap)
            pooled(rows.rows)

        out[f"pool P={prefix}"] = {"build": lambda pooled=pooled: pooled(ancestor_matrix), "slice": pool_slice}

    def levels_build():
        for r in rounds:
            for size in r.level_sizes:
                ancestor_matrix(r.candidate_parents[:size])

    def levels_slice():
        for r in rounds:
            rows = AncestorRows(candidate_count(top_k, depth))  # once per round: its candidates only grow
            for size in r.level_sizes:
                rows.rows(r.candidate_parents[:size])

    out["drafter levels"] = {"build": levels_build, "slice": levels_slice}
    return out


def _target_forward_ms(zoo: Path, node_counts: list[int], prefixes: tuple[int, ...], repeats: int,
                       rng: random.Random) -> dict[str, float] | None:
    """Median ms of one target forward over a tree of each size (top_k 4 where it fills) at each
    prefix, or None without a zoo."""
    if not (zoo / "manifest.json").is_file():
        return None
    from specroute.zoo.manifest import load_manifest
    from verifier_service.target import TargetModel
    target = TargetModel.from_dir(zoo / load_manifest(zoo)["target"]["path"])
    figures = {}
    for prefix in prefixes:
        for nodes in node_counts:
            if prefix + nodes > target.max_context:
                continue
            tree = drafted_round(rng, 4 if nodes > 9 else 2, MAX_DEPTH, nodes).tree_parents
            cache = target.new_cache()
            target.forward_tree([1] * prefix, [NO_PARENT, *range(prefix - 1)], cache)
            tokens = [rng.randrange(target.vocab_size) for _ in tree]
            times = []
            for _ in range(repeats + 1):  # the first is a warm-up
                start = time.perf_counter()
                target.forward_tree(tokens, tree, cache)
                times.append(time.perf_counter() - start)
                truncate(cache, prefix)
            figures[f"P={prefix} n={len(tree)}"] = 1e3 * statistics.median(times[1:])
    return figures


def run_mask_bench(out: Path, zoo: Path = Path("zoo/bench"), rounds: int = 200, repeats: int = 7,
                   shapes: list[tuple[int, int, int]] | None = None, prefixes: tuple[int, ...] = PREFIXES,
                   target_forward: bool = True, seed: int = 0, shared_machine: bool = False) -> dict:
    """Measures every shape (top_k, depth, nodes) and writes OUT/mask.json and mask.md."""
    shapes = shapes or default_shapes()
    rng = random.Random(seed)
    torch.set_num_threads(1)
    plans = {}
    for top_k, depth, nodes in shapes:
        sequence = [drafted_round(rng, top_k, depth, nodes) for _ in range(rounds)]
        plans[f"k={top_k} d={depth} n={nodes}"] = _methods(sequence, top_k, depth, nodes, prefixes)
    samples = {s: {m: {"build": [], "slice": [], "ratio": []} for m in ms} for s, ms in plans.items()}
    for ms in plans.values():  # warm-up, unmeasured
        for pair in ms.values():
            pair["build"](), pair["slice"]()
    total = repeats * sum(len(ms) for ms in plans.values())
    with tqdm(total=total, desc="bench mask") as bar:
        for rep in range(repeats):
            for shape, ms in plans.items():
                for measure, pair in ms.items():
                    order = ("build", "slice") if rep % 2 == 0 else ("slice", "build")
                    took = {}
                    for method in order:
                        start = time.perf_counter()
                        pair[method]()
                        took[method] = 1e6 * (time.perf_counter() - start) / rounds
                    rec = samples[shape][measure]
                    rec["build"].append(took["build"])
                    rec["slice"].append(took["slice"])
                    rec["ratio"].append(took["build"] / took["slice"])
                    bar.update()
    figures = {shape: {measure: {"build_us": statistics.median(rec["build"]),
                                 "slice_us": statistics.median(rec["slice"]),
                                 "build_over_slice": statistics.median(rec["ratio"])}
                       for measure, rec in ms.items()} for shape, ms in samples.items()}
    node_counts = sorted({n for _, _, n in shapes})
    forward = _target_forward_ms(zoo, node_counts, prefixes, repeats, rng) if target_forward else None
    result = {"provenance": provenance("mask", zoo), "shared_machine": shared_machine, "rounds": rounds,
              "repeats": repeats, "seed": seed, "shapes": figures, "target_forward_ms": forward}
    write_results(out, "mask", result, _markdown(result))
    return result


def _markdown(result: dict) -> str:
    shapes = result["shapes"]
    measures = list(next(iter(shapes.values())))
    lines = ["# Tree mask: built per tree vs sliced from a pre-built one", "", *provenance_lines(result["provenance"]),
             f"Workload: {result['rounds']} greedy EAGLE-2 trees per shape (seed {result['seed']}), one session "
             f"seeing them in turn; build and slice interleaved (order alternating), median of {result['repeats']} "
             "repeats; 1 torch thread. " + ("The machine was shared with other work while this ran: read the "
                                             "interleaved ratios rather than absolute times.  "
                                             if result["shared_machine"] else " "),
             "",
             "build = `ancestor_matrix` per tree (today); slice = one `AncestorRows` per session, reusing the rows of "
             "the parents it shares with the tree before and slicing them (for `drafter levels`: one per round, "
             "as its candidates grow level by level). us = microseconds per tree (per round for `drafter levels`); "
             "build/slice = the median of the interleaved per-repeat ratios (> 1: slicing "
             "is faster).", ""]
    lines += ["| shape | " + " | ".join(f"{m} build us | slice us | build/slice" for m in measures) + " |",
              "|---|" + "---|---|---|" * len(measures)]
    for shape, ms in shapes.items():
        cells = [f"{ms[m]['build_us']:.1f} | {ms[m]['slice_us']:.1f} | {ms[m]['build_over_slice']:.2f}x"
                 for m in measures]
        lines.append(f"| {shape} | " + " | ".join(cells) + " |")
    ratios = [f["build_over_slice"] for ms in shapes.values() for f in ms.values()]
    faster = sum(r > 1 for r in ratios)
    lines += ["", f"Slicing is faster in {faster} of {len(ratios)} (shape, measure) cells; build/slice ranges "
              f"{min(ratios):.2f}x to {max(ratios):.2f}x. "
              + ("Kept: slicing, in the batched verifier (`PagedSession.ancestors`)." if faster == len(ratios) else
                 "Where it is not faster the per-tree build is the better choice.")]
    forward = result.get("target_forward_ms")
    if forward:
        lines += ["", "For scale, one target forward of the zoo's target (median ms, same machine), and what slicing "
                  "saves of it (the batched verifier's mask `pool`, top_k 4 where the tree fills, else 2):", "",
                  "| tree | forward ms | pool mask saved ms | share of the forward |", "|---|---|---|---|"]
        for key, ms in forward.items():
            prefix, nodes = (int(part.split("=")[1]) for part in key.split())
            candidates = (f"k=4 d={MAX_DEPTH} n={nodes}", f"k=2 d={MAX_DEPTH} n={nodes}")
            shape = next((s for s in candidates if s in shapes), None)
            pool = shapes.get(shape, {}).get(f"pool P={prefix}")
            if pool is None:
                lines.append(f"| {key} | {ms:.2f} | - | - |")
                continue
            saved = (pool["build_us"] - pool["slice_us"]) / 1e3
            lines.append(f"| {key} | {ms:.2f} | {saved:.3f} | {100 * saved / ms:.2f}% |")
    return "\n".join(lines) + "\n"
