"""The seed's domain, defined once for every edge (the SDK, the router, the verifier).

A request's seed is any integer a client can send as a signed or unsigned 64-bit value,
[-2^63, 2^64). It is stored reduced modulo 2^64 (so -1 is 2^64 - 1, an unsigned reading of the
same bits), which the wire's uint64 holds. `derived_seed` gives each random stream of a request
(a drafter's, say) its own generator seed from it, in [0, 2^63), never overflowing.

Pure Python: the light SDK imports it. This module knows nothing about sampling itself.
"""

from __future__ import annotations

import hashlib

SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1


def normalize_seed(seed: int) -> int:
    """The seed as stored: seed mod 2^64; ValueError outside [-2^63, 2^64 - 1]."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not SEED_MIN <= seed <= SEED_MAX:
        raise ValueError(f"seed must be an integer in [-2^63, 2^64 - 1], got {seed!r}")
    return seed % 2**64


def derived_seed(seed: int, stream: str) -> int:
    """A generator seed in [0, 2^63) for one named random stream of a request seeded `seed`."""
    digest = hashlib.blake2b(f"{stream}:{seed}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1
