"""overlayd's log lines on stderr: text for people, or JSON lines for a collector.

    setup("info", "json")     # once, at start (`--log-format`, or `node.log_format`)

Text is what it has always been: `<time> <LEVEL> <logger>: <message>`.

JSON is one object a line, with stable keys: `ts` (UTC, ISO 8601 with milliseconds), `level`,
`logger`, `event`, `msg`, then `peer`, `network`, `mac`, `prefix`, `reason` (control/hub.py's
KEYS), each present on every line and null where it means nothing; a line that is an event
(every event is logged through control/hub.py) adds that event's own fields, and a line with
an exception adds `exc`. A line that is no event has `event` null.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from overlayd.control.hub import KEYS, Event, iso_time

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"ts": iso_time(record.created), "level": record.levelname.lower(),
                                "logger": record.name, "event": None, "msg": record.getMessage(),
                                **dict.fromkeys(KEYS)}
        event = getattr(record, "event", None)
        if isinstance(event, Event):
            fields = event.as_dict()
            del fields["ts"], fields["level"]  # the record's own say the same
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup(level: str, fmt: str = "text") -> None:
    """Log at `level` (debug, info, ...) to stderr, as `fmt` (text or json) says; like
    logging.basicConfig, nothing changes when the root logger has handlers already."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
