"""Session-wide fixtures: tiny models built once per test session (see tests/tiny_models.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests import tiny_models

torch.set_num_threads(2)


@dataclass(frozen=True)
class TinyZoo:
    target: Path
    llama_drafter: Path  # the target's weights plus noise: high but imperfect acceptance
    gpt2_drafter: Path  # an unrelated GPT-2: low acceptance
    self_drafter: Path  # the target itself: everything is accepted
    vocab_size: int
    eos_id: int
    max_positions: int


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory) -> TinyZoo:
    root = tmp_path_factory.mktemp("tiny_zoo")
    dirs = {name: root / name for name in ("target", "llama_drafter", "gpt2_drafter", "self_drafter")}
    tokenizer = tiny_models.build_tokenizer(dirs["target"])
    vocab, eos = len(tokenizer), tokenizer.eos_token_id
    max_positions = 160
    tiny_models.build_llama(dirs["target"], vocab, hidden=64, layers=2, seed=1, eos_id=eos,
                            max_positions=max_positions, sharpen=4.0)
    tiny_models.perturbed_copy(dirs["target"], dirs["llama_drafter"], noise=0.3, seed=2)
    tiny_models.perturbed_copy(dirs["target"], dirs["self_drafter"], noise=0.0, seed=3)
    tiny_models.build_gpt2(dirs["gpt2_drafter"], vocab, hidden=32, layers=1, seed=4, eos_id=eos,
                           max_positions=max_positions, sharpen=4.0)
    tiny_models.copy_tokenizer(tokenizer, dirs["llama_drafter"], dirs["gpt2_drafter"], dirs["self_drafter"])
    return TinyZoo(dirs["target"], dirs["llama_drafter"], dirs["gpt2_drafter"], dirs["self_drafter"],
                   vocab, eos, max_positions)


@pytest.fixture(scope="session")
def target(tiny_zoo):
    from verifier_service.target import TargetModel
    return TargetModel.from_dir(tiny_zoo.target)


PROMPTS = [
    "def __init__(self, width=70, initial_indent=\"\",",
    "import re",
    "class JSONDecodeError(ValueError):",
    "    def _split_chunks(self, text):",
    "héllo wörld",
    "return",
    "if not self.break_on_hyphens:",
    "parser.add_argument(",
    "The quick brown fox",
    "for i in range(10):",
    "    chunks = self.wordsep_re.split(text)",
    "x = {\"a\": [1, 2, 3]}",
    "# -*- coding: utf-8 -*-",
    "    while chunks:",
    "日本語",
    "raise TypeError(",
    "lines = []",
    "def fill(text, width=70, **kwargs):",
    "    \"\"\"Wrap a single paragraph of text",
    "self.",
    "else:",
    "w",
]


@pytest.fixture(scope="session")
def built_zoo(tmp_path_factory) -> Path:
    """The zoo's `tiny` preset, built once per test session (about 20 s)."""
    from specroute.zoo.build import build_zoo
    out = tmp_path_factory.mktemp("zoo") / "tiny"
    build_zoo("tiny", out)
    return out
