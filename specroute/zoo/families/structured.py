"""The `structured` family: small record sets converted between key-value lines, JSON and CSV.

Each example draws 1-4 records of one schema (people, products, orders, servers, books, weather
readings, flights) from `random.Random(seed)`, keeps a random subset of the schema's fields (the
identifying first field always), and converts them from one format into another; the six
directions take turns. Prompt: `Convert <source> to <target>:` and the records in the source
format; continuation: a newline and the same records in the target format. The three formats,
exactly as rendered (`render`):

- `key-value lines`: one `key: value` line per field, records separated by a blank line.
- `JSON`: `json.dumps(records, indent=2, separators=(",", ": "))`, always a list of objects.
- `CSV`: `csv.writer` with the excel dialect and `lineterminator="\\n"`: a header row of field
  names, then one row per record; values with a comma are quoted.

Values are strings, integers, decimals, ISO dates and booleans. Outside JSON they are written as
JSON writes them: booleans as `true` / `false`, decimals as Python's shortest repr. Decimals
always have two places and a nonzero last digit, so that repr shows both places and a value
reads the same in all three formats: a conversion only moves text, it never reformats a number.
No string value looks like a number or a boolean, holds a double quote or is padded with spaces,
so a reader can recover the types from any of the formats.

Renderings are trimmed of their final newline; examples that would exceed the corpus's prompt
or continuation limits lose records until they fit. This module knows nothing about tokenizers,
models or splits; `specroute.zoo.corpus` deduplicates and splits what it yields.
"""

from __future__ import annotations

import csv
import io
import json
import random
from datetime import date, timedelta
from typing import Callable, Iterator

from specroute.zoo.families import MAX_CONTINUATION_CHARS, MAX_PROMPT_CHARS, Example

TASK = "structured"
MAX_EXAMPLES = 4000
MAX_RECORDS = 4

FORMATS = ("kv", "json", "csv")
FORMAT_NAMES = {"kv": "key-value lines", "json": "JSON", "csv": "CSV"}
DIRECTIONS = tuple((source, target) for source in FORMATS for target in FORMATS if source != target)

Value = str | int | float | bool
Record = dict[str, Value]

FIRST = ("Ada", "Bruno", "Chen", "Dalia", "Emeka", "Freya", "Goran", "Hana", "Ines", "Jonas",
         "Kemal", "Lena", "Mateo", "Nadia", "Oskar", "Priya", "Quinn", "Rosa", "Sven", "Tariq",
         "Uma", "Viktor", "Wen", "Ximena", "Yusuf", "Zoe")
LAST = ("Abbott", "Baptiste", "Castro", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad",
        "Ivanova", "Jensen", "Kowalski", "Lindqvist", "Moreau", "Nakamura", "Okafor", "Petrov",
        "Quispe", "Rossi", "Sato", "Tanaka", "Varga", "Weber", "Yilmaz", "Zhang")
CITIES = ("Austin", "Berlin", "Cairo", "Dublin", "Lagos", "Lima", "Lisbon", "Madrid", "Mumbai",
          "Nairobi", "Oslo", "Osaka", "Porto", "Quito", "Seoul", "Tallinn", "Toronto", "Vienna")
ADJECTIVES = ("Compact", "Classic", "Deluxe", "Folding", "Heavy", "Mini", "Portable", "Quiet",
              "Rugged", "Smart", "Steel", "Wireless")
NOUNS = ("Lamp", "Kettle", "Backpack", "Speaker", "Drill", "Chair", "Router", "Blender",
         "Monitor", "Tent", "Keyboard", "Bottle")
TITLE_WORDS = ("Salt", "Smoke", "Stars", "River", "Iron", "Glass", "Winter", "Orchard", "Harbor",
               "Silence", "Ashes", "Lanterns", "Tides", "Wolves", "Paper", "Thunder")
AIRPORTS = ("AMS", "BOS", "CDG", "DXB", "FRA", "HND", "JFK", "LHR", "MAD", "NRT", "SFO", "SIN")


def _name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def _title(rng: random.Random) -> str:
    a, b, c = rng.sample(TITLE_WORDS, 3)
    return rng.choice((f"The {a} of {b}", f"{a}, {b} and {c}", f"{a} and {b}", f"{a} Without {b}"))


def _decimal(rng: random.Random, low_cents: int, high_cents: int) -> float:
    cents = rng.randint(low_cents // 10, high_cents // 10) * 10 + rng.randint(1, 9)
    return cents / 100  # the nearest double to a 2-place decimal: its repr has both places


def _date(rng: random.Random) -> str:
    return (date(2015, 1, 1) + timedelta(days=rng.randrange(3650))).isoformat()


def _choice(options: tuple[str, ...]) -> Callable[[random.Random], str]:
    return lambda rng: rng.choice(options)


def _int(low: int, high: int) -> Callable[[random.Random], int]:
    return lambda rng: rng.randint(low, high)


def _money(low_cents: int, high_cents: int) -> Callable[[random.Random], float]:
    return lambda rng: _decimal(rng, low_cents, high_cents)


def _tag(prefixes: tuple[str, ...], low: int, high: int,
         width: int) -> Callable[[random.Random], str]:
    # A prefix keeps an identifier from reading as a number.
    return lambda rng: f"{rng.choice(prefixes)}{rng.randint(low, high):0{width}d}"


def _bool(rng: random.Random) -> bool:
    return rng.random() < 0.5


def _ip(rng: random.Random) -> str:
    return f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def _isbn(rng: random.Random) -> str:
    return f"978-{rng.randint(0, 9)}-{rng.randint(1000, 9999)}-{rng.randint(100, 999)}"


Schema = tuple[tuple[str, Callable[[random.Random], Value]], ...]

SCHEMAS: dict[str, Schema] = {
    "people": (("id", _int(1000, 9999)), ("name", _name), ("age", _int(18, 90)),
               ("city", _choice(CITIES)), ("member", _bool), ("joined", _date),
               ("balance", _money(-50000, 500000))),
    "products": (("sku", _tag(("P-",), 0, 9999, 4)),
                 ("name", lambda rng: f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"),
                 ("category", _choice(("home", "garden", "office", "outdoor", "kitchen"))),
                 ("price", _money(100, 99999)), ("in_stock", _bool), ("quantity", _int(0, 500))),
    "orders": (("order_id", _int(10000, 99999)), ("customer", _name), ("item", _choice(NOUNS)),
               ("quantity", _int(1, 12)), ("total", _money(500, 250000)),
               ("status", _choice(("pending", "paid", "shipped", "delivered", "cancelled"))),
               ("ordered", _date)),
    "servers": (("hostname", _tag(("web-", "db-", "api-"), 1, 40, 2)), ("ip", _ip),
                ("region", _choice(("us-east", "us-west", "eu-central", "ap-south"))),
                ("cpu_cores", lambda rng: rng.choice((2, 4, 8, 16, 32))),
                ("load", _money(1, 999)), ("healthy", _bool), ("booted", _date)),
    "books": (("isbn", _isbn), ("title", _title), ("author", _name), ("year", _int(1850, 2024)),
              ("pages", _int(80, 1200)),
              ("genre", _choice(("fiction", "history", "poetry", "science"))),
              ("available", _bool)),
    "weather": (("station", _choice(CITIES)), ("date", _date), ("temp_c", _money(-3000, 4500)),
                ("humidity", _int(5, 100)), ("wind_kph", _money(0, 12000)),
                ("condition", _choice(("clear", "cloudy", "rain", "snow", "fog"))),
                ("alert", _bool)),
    "flights": (("flight", _tag(("LH", "BA", "AF", "UA", "NH"), 10, 999, 0)),
                ("origin", _choice(AIRPORTS)), ("destination", _choice(AIRPORTS)),
                ("departs", _date), ("seats", _int(0, 300)), ("fare", _money(3000, 150000)),
                ("delayed", _bool)),
}


def _text(value: Value) -> str:
    """A value as JSON writes it, so that kv and CSV carry the same characters."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else repr(value)


def render(records: list[Record], fmt: str) -> str:
    """The records in one of `FORMATS`, without a final newline."""
    if fmt == "kv":
        return "\n\n".join("\n".join(f"{k}: {_text(v)}" for k, v in r.items()) for r in records)
    if fmt == "json":
        return json.dumps(records, indent=2, separators=(",", ": "))
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(list(records[0]))
        writer.writerows([_text(v) for v in r.values()] for r in records)
        return out.getvalue().rstrip("\n")
    raise ValueError(f"unknown format {fmt!r}; known: {FORMATS}")


def _records(rng: random.Random) -> list[Record]:
    schema = SCHEMAS[rng.choice(sorted(SCHEMAS))]
    rest = rng.sample(range(1, len(schema)), rng.randint(2, len(schema) - 1))
    fields = [schema[0]] + [schema[i] for i in sorted(rest)]
    return [{name: draw(rng) for name, draw in fields} for _ in range(rng.randint(1, MAX_RECORDS))]


def _example(records: list[Record], source: str, target: str) -> Example:
    # Fewer records until both sides fit; one record always does.
    while True:
        header = f"Convert {FORMAT_NAMES[source]} to {FORMAT_NAMES[target]}:"
        prompt = f"{header}\n{render(records, source)}"
        continuation = "\n" + render(records, target)
        if len(records) == 1 or (len(prompt) <= MAX_PROMPT_CHARS
                                 and len(continuation) <= MAX_CONTINUATION_CHARS):
            return Example(TASK, prompt, continuation)
        records = records[:-1]


def examples(seed: int) -> Iterator[Example]:
    """Up to `MAX_EXAMPLES` examples with unique prompts, the same sequence for the same seed."""
    rng = random.Random(seed)
    seen: set[str] = set()
    for _ in range(10 * MAX_EXAMPLES):
        if len(seen) == MAX_EXAMPLES:
            return
        source, target = DIRECTIONS[len(seen) % len(DIRECTIONS)]
        example = _example(_records(rng), source, target)
        if example.prompt not in seen:
            seen.add(example.prompt)
            yield example
