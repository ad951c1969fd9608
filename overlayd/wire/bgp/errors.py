"""Errors in BGP messages, named by what the session must do about them.

Like h11's split between remote and local protocol errors: `BgpError` means
the peer sent something that ends the session (send a NOTIFICATION with
`code`/`subcode`/`data` and close); a malformed UPDATE that RFC 7606 lets us
survive does not raise at all, it decodes with `Update.treat_as_withdraw`
set or the bad attribute dropped, and the reasons in `Update.errors`.
"""

from __future__ import annotations

# NOTIFICATION error codes (RFC 4271 4.5) and the subcodes overlayd sends.
MESSAGE_HEADER_ERROR = 1
OPEN_MESSAGE_ERROR = 2
UPDATE_MESSAGE_ERROR = 3
HOLD_TIMER_EXPIRED = 4
FSM_ERROR = 5
CEASE = 6
ROUTE_REFRESH_ERROR = 7
SEND_HOLD_TIMER_EXPIRED = 8  # RFC 9687

# Message header error subcodes
CONNECTION_NOT_SYNCHRONIZED = 1
BAD_MESSAGE_LENGTH = 2
BAD_MESSAGE_TYPE = 3
# OPEN message error subcodes
UNSUPPORTED_VERSION_NUMBER = 1
BAD_PEER_AS = 2
BAD_BGP_IDENTIFIER = 3
UNSUPPORTED_OPTIONAL_PARAMETER = 4
UNACCEPTABLE_HOLD_TIME = 6
UNSUPPORTED_CAPABILITY = 7
# UPDATE message error subcodes
MALFORMED_ATTRIBUTE_LIST = 1
UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE = 2
MISSING_WELL_KNOWN_ATTRIBUTE = 3
ATTRIBUTE_FLAGS_ERROR = 4
ATTRIBUTE_LENGTH_ERROR = 5
INVALID_ORIGIN_ATTRIBUTE = 6
INVALID_NEXT_HOP_ATTRIBUTE = 8
OPTIONAL_ATTRIBUTE_ERROR = 9
INVALID_NETWORK_FIELD = 10
MALFORMED_AS_PATH = 11
# FSM error subcodes (RFC 6608)
FSM_UNEXPECTED_IN_OPENSENT = 1
FSM_UNEXPECTED_IN_OPENCONFIRM = 2
FSM_UNEXPECTED_IN_ESTABLISHED = 3
# Cease subcodes (RFC 4486)
CEASE_MAX_PREFIXES = 1
CEASE_ADMIN_SHUTDOWN = 2
CEASE_PEER_DECONFIGURED = 3
CEASE_ADMIN_RESET = 4
CEASE_CONNECTION_REJECTED = 5
CEASE_OTHER_CONFIG_CHANGE = 6
CEASE_CONNECTION_COLLISION = 7
CEASE_OUT_OF_RESOURCES = 8

ERROR_NAMES = {
    MESSAGE_HEADER_ERROR: "message header error",
    OPEN_MESSAGE_ERROR: "OPEN message error",
    UPDATE_MESSAGE_ERROR: "UPDATE message error",
    HOLD_TIMER_EXPIRED: "hold timer expired",
    FSM_ERROR: "finite state machine error",
    CEASE: "cease",
    ROUTE_REFRESH_ERROR: "ROUTE-REFRESH message error",
    SEND_HOLD_TIMER_EXPIRED: "send hold timer expired",
}


class BgpError(Exception):
    """The peer sent something that ends the session: NOTIFICATION(code, subcode, data)."""

    def __init__(self, code: int, subcode: int, message: str, data: bytes = b""):
        super().__init__(message)
        self.code = code
        self.subcode = subcode
        self.data = data

    def describe(self) -> str:
        return f"{ERROR_NAMES.get(self.code, f'error {self.code}')}/{self.subcode}: {self}"
