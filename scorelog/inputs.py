"""What was scored, kept compact: a lead's model input as a few hundred bytes.

Each score keeps the input it was computed from, so it can be replayed (the audit trail)
and become a training row once its outcome is known. :func:`pack_input` keeps exactly
what the feature builder reads and nothing else:

* the spec's feature fields (never its ``text`` fields: names, e-mail addresses, notes),
  its ``created_at`` column and the pre-aggregated action columns when a lead carries
  those instead of actions;
* the cut-off (``as_of``) and the lead id, so a replay sees the same time and answers for
  the same lead;
* the actions the builder can count: tracked types, at or before the cut-off. Unknown
  types and later actions change no feature and no warning, so they are dropped. Older
  actions are kept even past the spec's longest window: the "days since last" feature
  reaches back to ``recency_cap_days`` and the decayed engagement sums every past action,
  so cutting at the longest window would change the replayed score.

The encoding is self-describing (field names travel with the values, so
:func:`unpack_input` needs no spec) and small: a version byte, varints, timestamps in
microseconds (the builder's precision), actions as two fixed-width columns (a type index,
and the signed difference to the previous action's time, in seconds when every stamp is
whole seconds), and zlib for a body of 512 bytes or more when that is shorter (~300
bytes for a lead with 20 actions; the same input as JSON is four times that). Actions
keep their order: the decayed sums add them in order and floating-point addition is not
associative, so order is part of "identical".
Values keep their Python type (an integral float stays a float: a categorical ``1.0``
and ``1`` are different tokens).
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from features.batch import (
    ACTION_TIME_KEY,
    ACTION_TYPE_KEY,
    ACTIONS_KEY,
    AS_OF_KEY,
    aggregated_columns,
    to_ns,
)
from features.spec import FeatureSpec, normalise_token

__all__ = ["InputFormatError", "pack_input", "spec_version_of", "unpack_input"]

_FORMAT = 1
_DEFLATED = 0x80  # high bit of the first byte: the body after it is zlib-compressed
_DEFLATE_FROM = 512  # bytes of body
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO_PER_S = 1_000_000
_ONE_US = timedelta(microseconds=1)
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1

# Value tags.
_NONE, _FALSE, _TRUE, _INT, _FLOAT, _STR, _WHOLE_FLOAT = range(7)
# Header flags.
_HAS_AS_OF, _HAS_CREATED, _SECONDS, _HAS_ACTIONS = 1, 2, 4, 8
_DOUBLE = struct.Struct("<d")


class InputFormatError(ValueError):
    """A stored input that this code cannot read (damaged, or written by a newer format)."""


def spec_version_of(spec: FeatureSpec) -> str:
    """The spec version stored with each score: ``<name>:<version>``, one spelling for all."""
    return f"{spec.name}:{spec.version}"


# --------------------------------------------------------------------------- packing


def pack_input(record: Mapping[str, Any], spec: FeatureSpec) -> bytes:
    """The model input of ``record`` (a lead dict the builder reads), as compact bytes.

    Raises ``ValueError`` for a value the builder could not have scored either (a
    timestamp that is not one, a field value that is not a plain scalar).
    """
    layout = _layout(spec)
    out = bytearray()
    as_of = record.get(AS_OF_KEY)
    as_of_us = None if as_of is None else _micros(as_of, AS_OF_KEY)
    created = record.get(spec.created_at_column) if spec.created_at_column else None
    created_us = None if created is None else _micros(created, spec.created_at_column or "")
    actions = _kept_actions(record, layout, as_of_us) if spec.actions is not None else None
    seconds = actions is not None and all(us % _MICRO_PER_S == 0 for _, us in actions)
    flags = (
        (_HAS_AS_OF if as_of_us is not None else 0)
        | (_HAS_CREATED if created_us is not None else 0)
        | (_SECONDS if seconds else 0)
        | (_HAS_ACTIONS if actions is not None else 0)
    )
    _uint(out, flags)
    if as_of_us is not None:
        _sint(out, as_of_us)
    if created_us is not None:
        _sint(out, created_us - (as_of_us or 0))
    out += layout.id_column
    _value(out, record.get(spec.id_column, record.get("lead_id")))
    names = layout.fields
    if spec.actions is not None and ACTIONS_KEY not in record:
        names = names + layout.aggregated  # a pre-aggregated lead
    present = [(name, encoded) for name, encoded in names if name in record]
    _uint(out, len(present))
    for name, encoded in present:
        out += encoded
        _value(out, record[name])
    out += layout.created_column
    if actions is not None:
        _pack_actions(out, actions, layout, as_of_us or 0, seconds)
    return _frame(bytes(out))


@dataclass(frozen=True)
class _Layout:
    """What every input of one spec shares, encoded once: names as length-prefixed bytes."""

    id_column: bytes
    created_column: bytes  # b"\x00" (an empty name) when the spec has none
    fields: list[tuple[str, bytes]]
    aggregated: list[tuple[str, bytes]]
    type_codes: dict[str, int]
    type_names: list[bytes]


_LAYOUTS: dict[int, tuple[FeatureSpec, _Layout]] = {}


def _layout(spec: FeatureSpec) -> _Layout:
    """The spec's layout, cached per spec object (the scoring path packs every lead)."""
    hit = _LAYOUTS.get(id(spec))
    if hit is None or hit[0] is not spec:
        types = spec.actions.types if spec.actions is not None else []
        aggregated = aggregated_columns(spec) if spec.actions is not None else []
        layout = _Layout(
            id_column=_encoded(spec.id_column),
            created_column=_encoded(spec.created_at_column or ""),
            fields=[(f.name, _encoded(f.name)) for f in spec.feature_fields],
            aggregated=[(name, _encoded(name)) for name in aggregated],
            type_codes={t.name: i for i, t in enumerate(types)},
            type_names=[_encoded(t.name) for t in types],
        )
        hit = (spec, layout)
        _LAYOUTS[id(spec)] = hit
    return hit[1]


def _encoded(text: str) -> bytes:
    out = bytearray()
    _text(out, text)
    return bytes(out)


def _kept_actions(
    record: Mapping[str, Any], layout: _Layout, as_of_us: int | None
) -> list[tuple[int, int]]:
    """(type index, time in µs) of the actions that can change a feature, in their order."""
    codes = layout.type_codes
    kept = []
    for action in record.get(ACTIONS_KEY) or ():
        kind = action[ACTION_TYPE_KEY]
        code = codes.get(kind)
        if code is None and isinstance(kind, str):
            code = codes.get(normalise_token(kind))
        if code is None:
            continue
        at = action[ACTION_TIME_KEY]
        if isinstance(at, datetime) and at.utcoffset() is not None:
            at_us = (at - _EPOCH) // _ONE_US  # the common case, without a call
        else:
            at_us = _micros(at, ACTIONS_KEY, ceil=True)
        if as_of_us is None or at_us <= as_of_us:
            kept.append((code, at_us))
    return kept


def _pack_actions(
    out: bytearray, actions: list[tuple[int, int]], layout: _Layout, base: int, seconds: bool
) -> None:
    """Type table (only the types present), then the actions as two fixed-width arrays.

    Type indexes as bytes and time deltas (to the previous action; the first to the
    cut-off) as 32-bit integers when they fit, else 64-bit: fixed widths encode with
    one C call each, and zlib then squeezes out their zero bytes.
    """
    present = sorted({code for code, _ in actions})
    local = {code: i for i, code in enumerate(present)}
    _uint(out, len(present))
    for code in present:
        out += layout.type_names[code]
    _uint(out, len(actions))
    if not actions:
        return
    unit = _MICRO_PER_S if seconds else 1
    stamps = [at_us // unit for _, at_us in actions]
    deltas = [b - a for a, b in zip([base // unit, *stamps], stamps, strict=False)]
    wide = not all(_INT32_MIN <= d <= _INT32_MAX for d in deltas)
    many = len(present) > 256  # a spec with more action types than a byte can index
    out.append((8 if wide else 4) | (0x20 if many else 0x10))
    kinds = array("H" if many else "B", [local[code] for code, _ in actions])
    packed = array("q" if wide else "i", deltas)
    for column in (kinds, packed):
        if sys.byteorder != "little":  # stored little-endian everywhere
            column.byteswap()
        out += column.tobytes()


def _micros(value: Any, field: str, *, ceil: bool = False) -> int:
    try:
        ns = to_ns(value, ceil=ceil)
    except (TypeError, ValueError):
        raise ValueError(f"{field}: not a timestamp") from None
    return ns // 1000


def _frame(body: bytes) -> bytes:
    """Version byte + body; a long body (many actions) deflated when that is shorter.

    Measured on generated leads: deflating a typical 300-byte body saved 12 % of its
    bytes and doubled the packing time (~35 → ~80 µs), so only long bodies, where the
    delta arrays compress well, pay for it.
    """
    if len(body) >= _DEFLATE_FROM:
        deflated = zlib.compress(body, 6)
        if len(deflated) < len(body):
            return bytes([_FORMAT | _DEFLATED]) + deflated
    return bytes([_FORMAT]) + body


def _uint(out: bytearray, n: int) -> None:
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _sint(out: bytearray, n: int) -> None:
    _uint(out, (n << 1) if n >= 0 else ((-n) << 1) - 1)


def _text(out: bytearray, text: str) -> None:
    data = text.encode("utf-8")
    _uint(out, len(data))
    out += data


def _value(out: bytearray, value: Any) -> None:
    """One scalar, its type kept (bool before int: True is an int in Python)."""
    if value is None:
        out.append(_NONE)
    elif isinstance(value, bool):
        out.append(_TRUE if value else _FALSE)
    elif isinstance(value, int):
        out.append(_INT)
        _sint(out, value)
    elif isinstance(value, float):
        if value.is_integer() and abs(value) < 2**53:
            out.append(_WHOLE_FLOAT)
            _sint(out, int(value))
        else:
            out.append(_FLOAT)
            out += _DOUBLE.pack(value)
    elif isinstance(value, str):
        out.append(_STR)
        _text(out, value)
    elif hasattr(value, "item") and not isinstance(value, bytes | bytearray):  # numpy scalars
        _value(out, value.item())
    else:
        raise ValueError(f"cannot store a {type(value).__name__} as a model input value")


# --------------------------------------------------------------------------- unpacking


def unpack_input(blob: bytes) -> dict[str, Any]:
    """The lead dict :func:`pack_input` kept: scored by the same model, the same answer.

    Timestamps come back as timezone-aware UTC datetimes. Raises :class:`InputFormatError`
    on bytes that are not a stored input this code can read.
    """
    if not blob:
        raise InputFormatError("empty input")
    version = blob[0] & ~_DEFLATED
    if version != _FORMAT:
        raise InputFormatError(f"input format {version}; this code reads {_FORMAT}")
    body = blob[1:]
    if blob[0] & _DEFLATED:
        try:
            body = zlib.decompress(body)
        except zlib.error:
            raise InputFormatError("damaged input (compression)") from None
    try:
        return _Reader(body).record()
    except (IndexError, UnicodeDecodeError, struct.error, OverflowError, ValueError):
        raise InputFormatError("damaged input") from None


class _Reader:
    """Reads the body :func:`pack_input` wrote, field by field, in the same order."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def record(self) -> dict[str, Any]:
        flags = self.uint()
        as_of_us = self.sint() if flags & _HAS_AS_OF else None
        created_us = self.sint() + (as_of_us or 0) if flags & _HAS_CREATED else None
        id_column = self.text()
        lead_id = self.value()
        record: dict[str, Any] = {"lead_id": lead_id, id_column: lead_id}
        for _ in range(self.uint()):
            name = self.text()
            record[name] = self.value()
        created_key = self.text()
        if created_key and created_us is not None:
            record[created_key] = _datetime(created_us)
        if as_of_us is not None:
            record[AS_OF_KEY] = _datetime(as_of_us)
        if flags & _HAS_ACTIONS:
            record[ACTIONS_KEY] = self.actions(as_of_us or 0, bool(flags & _SECONDS))
        if self.pos != len(self.data):
            raise ValueError("trailing bytes")
        return record

    def actions(self, base: int, seconds: bool) -> list[dict[str, Any]]:
        types = [self.text() for _ in range(self.uint())]
        n = self.uint()
        if not n:
            return []
        widths = self.data[self.pos]
        self.pos += 1
        width, type_width = widths & 0x0F, widths >> 4
        if width not in (4, 8) or type_width not in (1, 2):
            raise ValueError("bad column widths")
        codes = array("H" if type_width == 2 else "B")
        codes.frombytes(self.take(n * type_width))
        deltas = array("q" if width == 8 else "i")
        deltas.frombytes(self.take(n * width))
        if sys.byteorder != "little":
            codes.byteswap()
            deltas.byteswap()
        unit = _MICRO_PER_S if seconds else 1
        stamp = base // unit
        out = []
        for code, delta in zip(codes, deltas, strict=True):
            stamp += delta
            out.append({ACTION_TYPE_KEY: types[code], ACTION_TIME_KEY: _datetime(stamp * unit)})
        return out

    def take(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise ValueError("truncated input")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def uint(self) -> int:
        shift = result = 0
        while True:
            byte = self.data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7
            if shift > 70:
                raise ValueError("varint too long")

    def sint(self) -> int:
        n = self.uint()
        return (n >> 1) if not n & 1 else -((n + 1) >> 1)

    def text(self) -> str:
        return self.take(self.uint()).decode("utf-8")

    def value(self) -> Any:
        tag = self.data[self.pos]
        self.pos += 1
        if tag == _NONE:
            return None
        if tag in (_FALSE, _TRUE):
            return tag == _TRUE
        if tag == _INT:
            return self.sint()
        if tag == _WHOLE_FLOAT:
            return float(self.sint())
        if tag == _FLOAT:
            (number,) = _DOUBLE.unpack_from(self.data, self.pos)
            self.pos += _DOUBLE.size
            return float(number)
        if tag == _STR:
            return self.text()
        raise ValueError(f"unknown value tag {tag}")


def _datetime(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)
