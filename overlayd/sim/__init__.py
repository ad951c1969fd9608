"""In-process simulators of whole meshes: test tooling for the cores, not a daemon feature.

    mesh.py       Simulator: many nodes' Switches over a lossy, partitionable underlay, fake clock
    bgp.py        BgpSimulator: the same nodes running real BGP Speakers over simulated TCP
    reflector.py  RouteReflector: a minimal RFC 4456 reflector for the BGP simulator
    frames.py     host MACs, Ethernet frames, ARP requests and replies for tests

Everything here is deterministic: the same seed and the same calls give the same run.
"""
