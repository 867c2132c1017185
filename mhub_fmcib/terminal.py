"""Text that reaches a terminal or a log file: control characters made visible.

Input-derived text (PatientName, segment labels, file names, server replies) may carry ESC
sequences, BEL, CR or Unicode line and direction controls that would recolour a terminal,
rewrite the line shown or forge a log line. :func:`escape_control` writes each as a visible
escape (``\\x1b``, ``\\r``, ``\\u202e``); :class:`SafeFormatter` applies it to every log
line, keeping only the newlines of multi-line messages, whose continuation lines are then
indented so that no text can start a line of its own that looks like a log record.
"""

from __future__ import annotations

import logging
import re

#: C0 controls but newline, DEL, C1 controls, Unicode line/paragraph separators and
#: bidirectional overrides/isolates.
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\r": "\\r", "\t": "\\t", "\x07": "\\a", "\x08": "\\b", "\x0c": "\\f", "\x0b": "\\v"}
#: Prefix of a log record's continuation lines.
CONTINUATION = "\n    | "


def _escape_one(m: re.Match[str]) -> str:
    ch = m.group()
    if ch in _NAMED:
        return _NAMED[ch]
    return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"


def escape_control(text: str, keep_newlines: bool = False) -> str:
    """``text`` with every control character written as a visible escape; newlines too
    unless ``keep_newlines`` (then continuation lines are indented, see module docstring)."""
    out = _CONTROL.sub(_escape_one, str(text))
    if keep_newlines:
        return out.replace("\n", CONTINUATION)
    return out.replace("\n", "\\n")


class SafeFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose every line is passed through :func:`escape_control`."""

    def format(self, record: logging.LogRecord) -> str:
        return escape_control(super().format(record), keep_newlines=True)
