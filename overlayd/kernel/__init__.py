"""What the kernel should hold, computed from overlayd's tables, without I/O.

The kernel backends (`routing.backend: kernel | host-gw | ipip | native`,
`networks[].backend: kernel`, `routing.direct_routing`, `routing.ipmasq`)
let the kernel move the packets while overlayd keeps the tables. Each
backend has a planner here: tables in, the desired kernel state out
(`state.KernelState`: routes, neighbour entries, FDB entries, device
addresses). `state.diff` turns desired and actual into the operations that
make one into the other; `overlayd.io.kernel` applies them and reads the
kernel back. Userspace and kernel backends differ in who moves packets,
never in what the tables mean.

    state.py    the entries, KernelState, diff
    routed.py   routed subnets: kernel VXLAN, host-gw, direct routing, ipip, native, userspace
    segment.py  an L2 segment on the kernel's bridge + VXLAN device
    nft.py      overlayd's nftables table (`inet overlayd`) as a value, and the diff of two
    masq.py     its part for `ipmasq`
    services.py its part for the services' VIPs (kube-proxy's nftables layout)
"""
