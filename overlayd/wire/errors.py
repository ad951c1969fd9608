"""Errors raised by the codecs.

A `DecodeError` always means the bytes came from outside and are wrong:
callers on the receive path count it and drop; they never let it escape.
"""


class DecodeError(ValueError):
    """Bytes that do not decode as `layer`; `reason` says which field is wrong."""

    def __init__(self, layer: str, reason: str):
        super().__init__(f"{layer}: {reason}")
        self.layer = layer
        self.reason = reason
