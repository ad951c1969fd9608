"""The long tests' two sizes: the short one CI runs, the full one `make soak` runs.

    from tests.soak import full, size
    CYCLES = size(short=5, full=100)

`make soak` sets OVERLAYD_SOAK=full (passed into the full-kernel guest too);
without it every soak test runs its short version and prints the same figures.

Ping loss is compared with a binomial margin: two loss rates measured on n
pings each differ by chance by about sqrt(2 p (1 - p) / n). The rule "overlay
loss within underlay loss + 1 point" is checked as overlay <= underlay + 1
point + 3 such standard deviations, and every figure is printed, so the
short runs (hundreds to thousands of pings) do not fail on chance while the
full runs (an order of magnitude more) hold nearly to the bare point.
"""

from __future__ import annotations

import math
import os
import re
import subprocess

SOAK_ENV = "OVERLAYD_SOAK"


def full() -> bool:
    return os.environ.get(SOAK_ENV, "").strip().lower() == "full"


def size(short, full_size):
    """`full_size` under `make soak`, else `short`."""
    return full_size if full() else short


def ping_side_by_side(host, addresses: list[str], interval_s: float, seconds: int,
                      reply_wait_s: int = 1) -> list[tuple[int, int]]:
    """Ping each address from `host` at once, every `interval_s` for `seconds`;
    (transmitted, received) for each, in order."""
    count = int(seconds / interval_s)
    pings = [host.popen("ping", "-q", "-n", "-i", str(interval_s), "-c", str(count), "-w", str(seconds),
                        "-W", str(reply_wait_s), address,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for address in addresses]
    return [ping_counts(p.communicate(timeout=seconds + 120)[0]) for p in pings]


def ping_counts(output: str) -> tuple[int, int]:
    """(transmitted, received) from ping's summary line."""
    m = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", output)
    if not m:
        raise ValueError(f"no ping summary in:\n{output[-2000:]}")
    return int(m.group(1)), int(m.group(2))


def loss_margin(loss: float, count: int) -> float:
    """Three standard deviations of the difference of two loss rates near `loss`, each from
    `count` pings: the room chance takes when comparing them."""
    p = min(max(loss, 0.01), 0.99)
    return 3 * math.sqrt(2 * p * (1 - p) / max(count, 1))


def check_ping_loss(underlay: tuple[int, int], overlay: tuple[int, int], what: str) -> str:
    """Assert overlay loss <= underlay loss + 1 point (+ the binomial margin); the figures as a line."""
    u = 1 - underlay[1] / underlay[0]
    o = 1 - overlay[1] / overlay[0]
    margin = loss_margin(u, min(underlay[0], overlay[0]))
    line = (f"{what}: underlay ping loss {u:.2%} ({underlay[0] - underlay[1]}/{underlay[0]}), "
            f"overlay ping loss {o:.2%} ({overlay[0] - overlay[1]}/{overlay[0]}); allowed up to "
            f"{u + 0.01 + margin:.2%} (underlay + 1 point + {margin:.2%} binomial margin)")
    assert o <= u + 0.01 + margin, line
    return line
