"""Tiny models for tests, built in the test session: nothing is downloaded.

A byte-level BPE tokenizer trained on a few standard-library files, a Llama target, and drafters
of two families (Llama, GPT-2) saved with save_pretrained, so the real loaders are exercised.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

EOS = "<|endoftext|>"


def corpus_text() -> str:
    import argparse
    import json as json_module
    import textwrap
    parts = [inspect.getsource(m) for m in (textwrap, json_module.decoder, argparse)]
    parts.append("héllo wörld — 日本語 🙂 naïve café\n" * 5)
    return "\n".join(parts)


def build_tokenizer(out: Path, vocab_size: int = 512) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus_text().splitlines(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS)
    fast.save_pretrained(out)
    return fast


def _sharpen(model, factor: float) -> None:
    """Scales the output head so random models have peaked, less uniform distributions."""
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(factor)


def build_llama(out: Path, vocab_size: int, hidden: int, layers: int, seed: int, max_positions: int = 160,
                eos_id: int = 0, sharpen: float = 1.0, tie: bool = False) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=max_positions, bos_token_id=eos_id, eos_token_id=eos_id,
                         pad_token_id=eos_id, tie_word_embeddings=tie)
    model = LlamaForCausalLM(config).eval()
    _sharpen(model, sharpen)
    model.save_pretrained(out)
    return model


def build_gpt2(out: Path, vocab_size: int, hidden: int, layers: int, seed: int, max_positions: int = 160,
               eos_id: int = 0, sharpen: float = 1.0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_embd=hidden, n_layer=layers, n_head=4,
                        n_positions=max_positions, bos_token_id=eos_id, eos_token_id=eos_id,
                        pad_token_id=eos_id, tie_word_embeddings=False)
    model = GPT2LMHeadModel(config).eval()
    _sharpen(model, sharpen)
    model.save_pretrained(out)
    return model


def perturbed_copy(src: Path, out: Path, noise: float, seed: int) -> None:
    """A drafter that mostly agrees with the target: its weights plus Gaussian noise."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM.from_pretrained(src)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * noise * p.std().clamp_min(1e-3))
    model.save_pretrained(out)


def copy_tokenizer(tokenizer: PreTrainedTokenizerFast, *dirs: Path) -> None:
    for d in dirs:
        tokenizer.save_pretrained(d)


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2))


def build_word_tokenizer(out: Path, vocab_size: int) -> PreTrainedTokenizerFast:
    """A tokenizer of `vocab_size` whole words w0, w1, ...; w0 is the EOS token."""
    from tokenizers import models as tok_models
    from tokenizers import pre_tokenizers as tok_pre
    vocab = {f"w{i}": i for i in range(vocab_size)}
    tok = Tokenizer(tok_models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = tok_pre.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="w0", pad_token="w0")
    fast.save_pretrained(out)
    return fast
