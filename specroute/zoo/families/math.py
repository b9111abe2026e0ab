"""The `math` family: arithmetic word problems with step-by-step worked solutions.

Each example is a short story (shopping, travel, sharing, ages, rates, percentages, savings and
other multi-step combinations) ending in a question; the continuation is the solution in one
regular format, one binary operation per step and the last step's result as the answer:

    Step 1: 4 pens at $3 each cost 4 * 3 = 12.
    Step 2: The change from $20 is 20 - 12 = 8.
    Answer: 8

All numbers are integers and every division is exact. Everything is drawn from
`random.Random(seed)`, so a seed fixes the sequence. This module knows nothing about tokenizers,
models or splits; `specroute.zoo.corpus` deduplicates and splits what it yields.
"""

from __future__ import annotations

import random
from typing import Callable, Iterator

from specroute.zoo.families import MAX_CONTINUATION_CHARS, MAX_PROMPT_CHARS, Example

MAX_EXAMPLES = 4000
# Consecutive rejected draws (duplicate or too long) after which the templates count as exhausted.
MAX_DUPLICATE_RUN = 1000

NAMES = ("Mia", "Liam", "Ava", "Noah", "Zoe", "Omar", "Priya", "Lucas", "Sofia", "Kenji", "Amara",
         "Ethan", "Chloe", "Mateo", "Hana", "Felix", "Nadia", "Ravi", "Elena", "Tom", "Grace", "Ali",
         "Yuki", "Ben", "Lena", "Diego", "Iris", "Sam", "Fatima", "Oscar")
ITEMS = ("apples", "pencils", "marbles", "stickers", "cookies", "books", "cards", "shells",
         "oranges", "stamps", "candles", "buttons", "crayons", "muffins", "tickets", "balloons")
GOODS = (("notebooks", 3), ("sandwiches", 6), ("pens", 2), ("plants", 9), ("scarves", 12),
         ("mugs", 7), ("t-shirts", 11), ("lamps", 15), ("puzzles", 8), ("toy cars", 4))
VEHICLES = ("car", "bus", "train", "bike", "boat", "truck")
TASKS = (("bakes", "loaves"), ("paints", "tiles"), ("packs", "boxes"), ("sews", "buttons"),
         ("types", "pages"), ("folds", "shirts"), ("assembles", "chairs"), ("washes", "dishes"))

Steps = list[str]


def _op(a: int, op: str, b: int) -> tuple[str, int]:
    """`a op b = c` and c, for integers; a division must be exact."""
    if op == "+":
        c = a + b
    elif op == "-":
        c = a - b
    elif op == "*":
        c = a * b
    elif op == "/":
        if b == 0 or a % b:
            raise ValueError(f"inexact division {a} / {b}")
        c = a // b
    else:
        raise ValueError(f"unknown operator {op!r}")
    return f"{a} {op} {b} = {c}", c


def _shopping(rng: random.Random) -> tuple[str, Steps, int]:
    name, (goods, price), n = rng.choice(NAMES), rng.choice(GOODS), rng.randint(2, 9)
    price += rng.randint(0, 5)
    cost_text, cost = _op(n, "*", price)
    bill = rng.choice([b for b in (20, 50, 100, 200) if b >= cost])  # cost is at most 9 * 20
    change_text, change = _op(bill, "-", cost)
    prompt = rng.choice((
        f"{name} buys {n} {goods} that cost ${price} each and pays with ${bill}. How much change does {name} get, in dollars?",
        f"At the market, {goods} sell for ${price} apiece. {name} picks {n} of them and hands the cashier ${bill}. How many dollars of change should {name} receive?",
    ))
    return prompt, [f"{n} {goods} at ${price} each cost {cost_text}.", f"The change from ${bill} is {change_text}."], change


def _give_away(rng: random.Random) -> tuple[str, Steps, int]:
    (name, friend), items = rng.sample(NAMES, 2), rng.choice(ITEMS)
    start, more = rng.randint(5, 60), rng.randint(2, 40)
    total_text, total = _op(start, "+", more)
    given = rng.randint(1, total - 1)
    left_text, left = _op(total, "-", given)
    prompt = rng.choice((
        f"{name} has {start} {items}. {name} gets {more} more, then gives {given} to {friend}. How many {items} does {name} have left?",
        f"There are {start} {items} in {name}'s bag. After finding {more} more, {name} hands {given} of them to {friend}. How many {items} remain in the bag?",
    ))
    return prompt, [f"{name} starts with {start} and gets {more} more: {total_text}.", f"After giving away {given}: {left_text}."], left


def _travel_distance(rng: random.Random) -> tuple[str, Steps, int]:
    name, vehicle = rng.choice(NAMES), rng.choice(VEHICLES)
    s1, t1, s2, t2 = rng.randint(10, 90), rng.randint(1, 6), rng.randint(10, 90), rng.randint(1, 6)
    d1_text, d1 = _op(s1, "*", t1)
    d2_text, d2 = _op(s2, "*", t2)
    total_text, total = _op(d1, "+", d2)
    prompt = rng.choice((
        f"{name} drives a {vehicle} at {s1} km per hour for {t1} hours, then at {s2} km per hour for {t2} hours. How many kilometers does {name} travel in total?",
        f"A {vehicle} carrying {name} moves at {s1} km/h for {t1} hours. It then continues at {s2} km/h for another {t2} hours. What is the total distance in km?",
    ))
    return prompt, [f"First part: {d1_text} km.", f"Second part: {d2_text} km.", f"Total distance: {total_text} km."], total


def _travel_time(rng: random.Random) -> tuple[str, Steps, int]:
    name, vehicle = rng.choice(NAMES), rng.choice(VEHICLES)
    speed, hours, stop = rng.randint(5, 80), rng.randint(2, 12), rng.randint(1, 3)
    distance = speed * hours
    time_text, time = _op(distance, "/", speed)
    total_text, total = _op(time, "+", stop)
    prompt = rng.choice((
        f"{name} travels {distance} km by {vehicle} at a steady {speed} km per hour and also takes a {stop}-hour break. How many hours does the whole trip take?",
        f"A trip of {distance} km is made by {vehicle} at {speed} km/h. {name} stops to rest for {stop} hours on the way. How long is the trip in hours, including the rest?",
    ))
    return prompt, [f"Driving time is {time_text} hours.", f"Adding the break: {total_text} hours."], total


def _sharing(rng: random.Random) -> tuple[str, Steps, int]:
    name, items = rng.choice(NAMES), rng.choice(ITEMS)
    boxes, per_box = rng.randint(2, 12), rng.randint(3, 24)
    total_text, total = _op(boxes, "*", per_box)
    friends = rng.choice([k for k in range(2, 13) if total % k == 0])  # boxes itself divides total
    share_text, share = _op(total, "/", friends)
    prompt = rng.choice((
        f"{name} has {boxes} boxes with {per_box} {items} in each box and shares them equally among {friends} friends. How many {items} does each friend get?",
        f"{boxes} bags each hold {per_box} {items}. {name} splits all of them evenly between {friends} people. How many {items} does each person receive?",
    ))
    return prompt, [f"Total {items}: {total_text}.", f"Each of the {friends} gets {share_text}."], share


def _ages(rng: random.Random) -> tuple[str, Steps, int]:
    young, old = rng.sample(NAMES, 2)
    age, times, years = rng.randint(2, 20), rng.randint(2, 4), rng.randint(1, 15)
    now_text, now = _op(age, "*", times)
    later_text, later = _op(now, "+", years)
    prompt = rng.choice((
        f"{young} is {age} years old. {old} is {times} times as old as {young}. How old will {old} be in {years} years?",
        f"{old}'s age is {times} times {young}'s age, and {young} is {age}. What will {old}'s age be {years} years from now?",
    ))
    return prompt, [f"{old} is now {now_text} years old.", f"In {years} years: {later_text}."], later


def _rates(rng: random.Random) -> tuple[str, Steps, int]:
    name, (verb, things) = rng.choice(NAMES), rng.choice(TASKS)
    rate, hours, days = rng.randint(2, 30), rng.randint(2, 10), rng.randint(2, 7)
    day_text, per_day = _op(rate, "*", hours)
    total_text, total = _op(per_day, "*", days)
    prompt = rng.choice((
        f"{name} {verb} {rate} {things} per hour and works {hours} hours a day. How many {things} does {name} finish in {days} days?",
        f"Working {hours} hours each day for {days} days, {name} {verb} {rate} {things} every hour. How many {things} is that altogether?",
    ))
    return prompt, [f"Per day: {day_text} {things}.", f"Over {days} days: {total_text} {things}."], total


def _discount(rng: random.Random) -> tuple[str, Steps, int]:
    name, (goods, _) = rng.choice(NAMES), rng.choice(GOODS)
    percent = rng.choice((5, 10, 15, 20, 25, 30, 40, 50, 75))
    price = 20 * rng.randint(1, 30)  # a multiple of 20, so every listed percentage is whole dollars
    scaled_text, scaled = _op(price, "*", percent)
    off_text, off = _op(scaled, "/", 100)
    final_text, final = _op(price, "-", off)
    prompt = rng.choice((
        f"A set of {goods} costs ${price}. {name} gets a {percent}% discount. How many dollars does {name} pay?",
        f"The price of {goods} at a shop is ${price}, and today everything is {percent}% off. What does {name} pay for them, in dollars?",
    ))
    return prompt, [f"{percent}% of {price}: {scaled_text}, and {off_text} dollars off.", f"The price after the discount is {final_text}."], final


def _savings(rng: random.Random) -> tuple[str, Steps, int]:
    name = rng.choice(NAMES)
    start, weekly, weeks = rng.randint(0, 100), rng.randint(5, 50), rng.randint(2, 12)
    earned_text, earned = _op(weekly, "*", weeks)
    total_text, total = _op(start, "+", earned)
    spent = rng.randint(1, total)
    left_text, left = _op(total, "-", spent)
    prompt = rng.choice((
        f"{name} has ${start} saved and earns ${weekly} a week for {weeks} weeks. Then {name} spends ${spent} on a gift. How many dollars does {name} have now?",
        f"{name} starts with ${start} in a piggy bank, adds ${weekly} every week for {weeks} weeks, and later takes out ${spent}. How much money is left in the piggy bank, in dollars?",
    ))
    return prompt, [f"Earnings: {earned_text}.", f"Savings before spending: {total_text}.", f"After spending ${spent}: {left_text}."], left


def _tickets(rng: random.Random) -> tuple[str, Steps, int]:
    name = rng.choice(NAMES)
    adults, children = rng.randint(1, 6), rng.randint(1, 8)
    adult_price, child_price = rng.randint(8, 30), rng.randint(3, 15)
    a_text, a = _op(adults, "*", adult_price)
    c_text, c = _op(children, "*", child_price)
    total_text, total = _op(a, "+", c)
    prompt = rng.choice((
        f"{name} buys museum tickets for {adults} adults at ${adult_price} each and {children} children at ${child_price} each. What is the total cost in dollars?",
        f"A zoo charges ${adult_price} per adult and ${child_price} per child. {name} brings {adults} adults and {children} children. How many dollars do the tickets cost?",
    ))
    return prompt, [f"Adult tickets: {a_text}.", f"Child tickets: {c_text}.", f"Total: {total_text}."], total


TEMPLATES: tuple[Callable[[random.Random], tuple[str, Steps, int]], ...] = (
    _shopping, _give_away, _travel_distance, _travel_time, _sharing,
    _ages, _rates, _discount, _savings, _tickets,
)


def examples(seed: int) -> Iterator[Example]:
    """Up to MAX_EXAMPLES math examples with unique prompts, deterministic for `seed`."""
    rng = random.Random(seed)
    seen: set[str] = set()
    duplicate_run = 0
    while len(seen) < MAX_EXAMPLES and duplicate_run < MAX_DUPLICATE_RUN:
        prompt, steps, answer = rng.choice(TEMPLATES)(rng)
        continuation = "".join(f"\nStep {i}: {step}" for i, step in enumerate(steps, start=1)) + f"\nAnswer: {answer}"
        if prompt in seen or len(prompt) > MAX_PROMPT_CHARS or len(continuation) > MAX_CONTINUATION_CHARS:
            duplicate_run += 1
            continue
        duplicate_run = 0
        seen.add(prompt)
        yield Example("math", prompt, continuation)
