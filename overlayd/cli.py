"""`overlayd -c FILE`: run the daemon in the foreground."""

from __future__ import annotations

import argparse
import logging
import sys

from overlayd import __version__
from overlayd.config import ConfigError, load_config
from overlayd.logs import FORMATS
from overlayd.logs import setup as setup_logging

EXIT_CONFIG = 2
EXIT_SETUP = 3

DESCRIPTION = """\
A userspace overlay router: moves Ethernet frames between the TAP devices
of this host and other hosts inside standard VXLAN (RFC 7348) over UDP.
With a `bgp:` section it learns where MACs and flood lists are from BGP
EVPN routes (and announces its own); with `routing:` it also routes a
cluster network's node subnets (EVPN type-5) through a TUN or TAP device.

Runs in the foreground and logs to stderr, one line per event that
matters (a session up or down, a limit hit, a reload; every table change
too at --log-level debug), as text or as JSON lines with stable keys
(--log-format, or node.log_format in the config). SIGTERM or SIGINT stops it:
BGP sessions are closed with a Cease, and the devices, status socket and
subnet files it created are removed. SIGHUP reads the config file
again and applies the neighbors, userspace networks, static vteps/fdb
and services that changed, leaving the rest running; a file that does
not load, or that changes a key only a restart changes, is refused and
logged, and the running config stays. Query a running daemon with
`overlayctl`."""

EPILOG = """\
exit status: 0 stopped cleanly, 2 bad config (nothing was touched),
3 setup failed (everything created was removed again).
See README.md for every config key; configs/ has examples."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="overlayd",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="YAML config file")
    p.add_argument(
        "--check", action="store_true", help="validate the config, print a summary and exit"
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="debug also logs every FDB, flood list and route change (default: info)",
    )
    p.add_argument(
        "--log-format",
        choices=FORMATS,
        help="text, or json: one object a line with the keys ts, level, logger, event, msg, peer, network, "
             "mac, prefix, reason (and the event's own); default: node.log_format, else text",
    )
    p.add_argument("--version", action="version", version=f"overlayd {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = logging.getLogger("overlayd")
    from overlayd.io.netlink import interface_address  # node.vtep_interface's address

    try:
        config = load_config(args.config, interface_address)
    except ConfigError as err:
        print(f"overlayd: bad config {args.config}:", file=sys.stderr)
        for line in str(err).splitlines():
            print(f"  {line}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(args.log_level, args.log_format or config.node.log_format)
    if args.check:
        parts = [f"node {config.node.name}", f"vtep {config.node.vtep}" + (f" (on {config.node.vtep_interface})" if config.node.vtep_interface else ""), f"{len(config.networks)} network(s)"]
        if config.bgp is not None:
            parts.append(f"bgp AS {config.bgp.asn} with {len(config.bgp.neighbors)} neighbor(s)")
        if config.routing is not None:
            parts.append(f"routing vni {config.routing.vni} subnet {config.routing.subnet} of {config.routing.network}")
        print(f"{args.config}: ok: " + ", ".join(parts))
        return 0

    from overlayd.io.daemon import SetupError, run

    # pyroute2 resets its logger when imported: quiet it (and asyncio) after the import.
    for noisy in ("pyroute2", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLogger().level))

    try:
        run(config, args.config)
    except SetupError as err:
        log.error("setup failed: %s", err)
        return EXIT_SETUP
    except PermissionError as err:
        log.error("setup failed: %s (overlayd needs CAP_NET_ADMIN)", err)
        return EXIT_SETUP
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
