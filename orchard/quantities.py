"""Kubernetes quantity strings, as used by ``ComputeInfo`` ("500m", "4.5", "1500Mi", "3Gi")."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
_QUANTITY = re.compile(
    r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE]([+-]?[0-9]+))?\s*([A-Za-z]{0,2})\s*$"
)


def parse_quantity(text: str) -> Decimal:
    """The value of a quantity string; raises ValueError naming the accepted forms."""
    match = _QUANTITY.match(text)
    if not match or match.group(3) not in _SUFFIXES:
        raise ValueError(
            f"{text!r} is not a quantity; write a number with an optional suffix "
            "such as '2', '500m', '1.5', '512Mi', '16Gi' or '8G'"
        )
    number, exponent, suffix = match.groups()
    try:
        value = Decimal(number)
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only numbers
        raise ValueError(f"{text!r} is not a quantity") from exc
    if exponent:
        value *= Decimal(10) ** int(exponent)
    return value * _SUFFIXES[suffix]


def cpu_count(text: str) -> float:
    """CPUs in a ``cpu_limit`` such as "2" or "500m"."""
    return float(parse_quantity(text))


def byte_count(text: str) -> int:
    """Bytes in a memory quantity such as "1500Mi"."""
    return int(parse_quantity(text))


def format_bytes(count: int) -> str:
    """The shortest exact binary quantity for a byte count ("16Gi", "1536Mi")."""
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = int(_SUFFIXES[suffix])
        if count >= unit and count % unit == 0:
            return f"{count // unit}{suffix}"
    return str(count)


def human_bytes(count: int) -> str:
    """A byte count for people ("23.5 GiB")."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{count} B"
        value /= 1024
    return f"{count} B"  # pragma: no cover
