"""What every service shares: the contracts, sampling, tree attention, HF model helpers, the
typed reports and errors, and the codecs between them and the wire.

The bottom layer of specroute: it imports nothing of the project but the generated `protos`.
Its modules import only what they need, so the light client SDK can use the pure-Python ones
(`core.seed`, `core.errors`, `core.public_codec`) without torch.
"""
