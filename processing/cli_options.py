"""Command-line options shared by the scripts: repeatable `NAME=VALUE` pairs (`--text_source knowledge=f.txt`)."""

from collections.abc import Callable


def name_value_pairs(
    values: list[str] | None, option: str, convert: Callable[[str], object] = str, allow_empty: bool = False
) -> dict:
    """`["knowledge=f.txt", ...]` -> `{"knowledge": "f.txt"}`, each value passed through `convert`; an empty
    value is refused unless `allow_empty`. Raises ValueError naming the option and the bad pair."""
    pairs = {}
    for value in values or []:
        name, separator, text = value.partition("=")
        if not separator or not name or not (text or allow_empty):
            raise ValueError(f"{option} takes NAME=VALUE, got {value!r}")
        try:
            pairs[name] = convert(text)
        except ValueError:
            raise ValueError(f"{option} {value!r}: {text!r} is not a valid value") from None
    return pairs


__all__ = ["name_value_pairs"]
