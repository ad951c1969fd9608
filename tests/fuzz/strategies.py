"""Hypothesis inputs for the fuzz targets: random bytes, and the target's seeds mutated.

Random bytes alone rarely get past a decoder's first length check; a valid
message with a few octets changed, cut short or grown reaches the checks
deep inside it. Both are plain bytes, as the targets take them.
"""

from __future__ import annotations

import functools

from hypothesis import strategies as st

from tests.fuzz.targets import TARGETS


@st.composite
def mutated(draw, seeds: tuple[bytes, ...]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 4))
        at = draw(st.integers(0, len(data)))
        if op == 0 and at < len(data):  # overwrite an octet
            data[at] = draw(st.integers(0, 255))
        elif op == 1 and at < len(data):  # flip one bit
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == 2:  # cut short
            del data[at:]
        elif op == 3:  # insert octets
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == 4 and at + 1 < len(data):  # a 16-bit field (lengths) to an edge value
            data[at : at + 2] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF])).to_bytes(2, "big")
    return bytes(data)


@functools.cache
def inputs(name: str) -> st.SearchStrategy[bytes]:
    seeds = tuple(TARGETS[name].seeds())
    strategy = st.binary(max_size=512)
    if seeds:
        strategy = st.one_of(strategy, st.sampled_from(seeds), mutated(seeds), mutated(seeds))
    return strategy
