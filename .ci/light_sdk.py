"""Checks an installed light SDK (`pip install "specroute[client]"`): run by `.ci/run` in a venv of its own.

It asserts that the heavy dependencies of the system are absent from the environment, that the client SDK
imports without them, and that a call to a closed loopback port fails as `specroute.errors.UnavailableError`.
Run it from outside the repository, so that it imports the installed package and not the source tree.

It does not know how the SDK was installed or what the server would answer: no server runs here.
"""

from __future__ import annotations

import importlib.metadata
import socket
import sys

HEAVY = ("torch", "transformers", "ray", "numpy")


def closed_loopback_port() -> int:
    """A loopback port nothing listens on: bound, then released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    installed = sorted(d.metadata["Name"].lower() for d in importlib.metadata.distributions())
    heavy = [name for name in HEAVY if name in installed]
    if heavy:
        print(f"the light SDK pulled in {heavy}; installed: {installed}", file=sys.stderr)
        return 1

    from specroute.client import Client
    from specroute.errors import UnavailableError

    loaded = [name for name in HEAVY if name in sys.modules]
    if loaded:
        print(f"importing the SDK imported {loaded}", file=sys.stderr)
        return 1
    with Client(f"127.0.0.1:{closed_loopback_port()}", timeout=5.0, max_retries=1, retry_backoff_s=0.01) as client:
        try:
            client.generate("hello", max_new_tokens=1)
        except UnavailableError as err:
            print(f"light SDK ok: {len(installed)} distributions installed, a closed port raised {err!r}")
            return 0
    print("a call to a closed port did not raise UnavailableError", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
