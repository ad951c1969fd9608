"""kernel.masq: the ipmasq table as nftables JSON (checked by `nft --check` where nft exists)."""

from __future__ import annotations

import json
import shutil
import subprocess
from ipaddress import ip_network

import pytest

from overlayd.kernel.masq import delete, ruleset


def test_one_rule_per_subnet_exempting_cluster_services_and_multicast():
    doc = ruleset([ip_network("10.244.1.0/24"), ip_network("fd00:244:0:1::/64")],
                  [ip_network("10.244.0.0/16"), ip_network("fd00:244::/48"), ip_network("10.96.0.0/16")])
    commands = doc["nftables"][1:]
    # the table made afresh (whatever an earlier run left goes), then the chain and its rules
    assert [(verb, next(iter(c[verb]))) for c in commands for verb in c] == [
        ("add", "table"), ("delete", "table"), ("add", "table"), ("add", "chain"), ("add", "rule"), ("add", "rule")]
    rules = [c["add"]["rule"]["expr"] for c in commands if "rule" in c.get("add", {})]
    v4, v6 = rules
    assert v4[0]["match"]["right"] == {"prefix": {"addr": "10.244.1.0", "len": 24}}
    assert [e["prefix"]["addr"] for e in v4[1]["match"]["right"]["set"]] == ["10.96.0.0", "10.244.0.0", "224.0.0.0"]
    assert [e["prefix"]["addr"] for e in v6[1]["match"]["right"]["set"]] == ["fd00:244::", "ff00::"]
    assert v4[1]["match"]["op"] == "!=" and v4[2] == {"masquerade": {"flags": ["fully-random"]}}
    assert delete() == {"nftables": [{"delete": {"table": {"family": "inet", "name": "overlayd"}}}]}


def test_nft_accepts_the_ruleset():
    if shutil.which("nft") is None:
        pytest.skip("nft is not installed (Debian package nftables)")
    doc = ruleset([ip_network("10.244.1.0/24")], [ip_network("10.244.0.0/16")])
    out = subprocess.run(["nft", "--check", "-j", "-f", "-"], input=json.dumps(doc), capture_output=True, text=True)
    if out.returncode != 0 and "Operation not permitted" in out.stderr:
        pytest.skip("nft --check needs CAP_NET_ADMIN")
    assert out.returncode == 0, out.stderr
