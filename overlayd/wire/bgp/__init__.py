"""BGP-4 (RFC 4271) messages carrying EVPN (RFC 7432, 8365, 9136) and IPv4 / IPv6 unicast routes.

    evpn.py        EVPN NLRI: route distinguishers and route types 2, 3, 5
    unicast.py     IPv4 / IPv6 unicast NLRI (RFC 4271 4.3, RFC 4760)
    attributes.py  path attributes, extended communities, PMSI tunnel
    update.py      the UPDATE body: NLRI fields, MP_REACH_NLRI / MP_UNREACH_NLRI, RFC 7606 error handling
    messages.py    message framing, OPEN and capabilities, KEEPALIVE, NOTIFICATION, ROUTE-REFRESH
    errors.py      what a decoding failure means for the session (RFC 4271 / RFC 7606)
"""
