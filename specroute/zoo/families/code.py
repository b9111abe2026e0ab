"""The `code` family: functions of the Python standard library's own source.

Prompt: a function's signature and docstring; continuation: its body. The source ships with the
interpreter, so this builds offline; it is the same for every seed (the corpus shuffles and
splits it). Test modules are skipped. This module knows nothing about tokenizers or splits.
"""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path
from typing import Iterator

from specroute.zoo.families import MAX_CONTINUATION_CHARS, MAX_PROMPT_CHARS, Example



def examples(seed: int) -> Iterator[Example]:
    del seed  # the standard library is what it is; the corpus shuffles
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/*.py")):
        if "test" in path.parts[-2] or path.name.startswith("test"):
            continue
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        lines = source.splitlines(keepends=True)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or len(node.body) < 2:
                continue
            doc = node.body[0]
            if not (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
                    and isinstance(doc.value.value, str)):
                continue
            head = "".join(lines[node.lineno - 1: doc.end_lineno])
            body = "".join(lines[doc.end_lineno: node.end_lineno])
            if 0 < len(head) <= MAX_PROMPT_CHARS and 20 <= len(body.strip()):
                yield Example("code", _dedent(head, head), _dedent(head, body)[:MAX_CONTINUATION_CHARS])


def _dedent(head: str, text: str) -> str:
    """Removes the function's own indentation (that of its `def` line) from every line."""
    indent = len(head) - len(head.lstrip(" "))
    return "".join(line[indent:] if line[:indent].isspace() else line for line in text.splitlines(keepends=True))
