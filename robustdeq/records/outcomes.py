"""Per-example outcomes in an entry, compact enough to commit and to compare entries example by example.

``per_example`` in an entry (schema version 2)::

    "indices": "0-449"          the evaluated test-set indices, as ranges ("0-9,15,20-29")
    "clean_correct": "1101..."  one character per example: 1 correct on its clean input, 0 not
    "robust": "0101..."         1 correct clean and after every attack (the worst case), 0 not
    "attack_order": [...]       the attack runs in the order they ran (the keys of ``attacks``)
    "broken_by": "a.c.."        per example, the first attack run (a = attack_order[0], b = [1], ...,
                                then A-Z, then 0-9) whose verified adversarial example it got wrong;
                                "." where none did (robust, or wrong on its clean input)

Two entries of the same protocol version evaluate the same indices, so their ``robust`` strings
pair up example by example (the paired tests of :mod:`robustdeq.leaderboard.stats`).
"""

from __future__ import annotations

import string
from typing import Any

from robustdeq.errors import RobustdeqError

LETTERS = string.ascii_lowercase + string.ascii_uppercase + string.digits
NOT_BROKEN = "."


def encode_indices(indices: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"`` (runs of consecutive indices, in the given order)."""
    parts: list[str] = []
    start = previous = None
    for i in indices:
        if previous is not None and i == previous + 1:
            previous = i
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = i
    if start is not None:
        parts.append(str(start) if start == previous else f"{start}-{previous}")
    return ",".join(parts)


def decode_indices(text: str) -> list[int]:
    out: list[int] = []
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        try:
            out.extend(range(int(low), int(high or low) + 1))
        except ValueError:
            raise RobustdeqError(f"per_example.indices: {part!r} is not an index or a range") from None
    return out


def bits(values: list[bool]) -> str:
    return "".join("1" if v else "0" for v in values)


def unbits(text: str) -> list[bool]:
    return [c == "1" for c in text]


def encode_outcomes(
    indices: list[int], clean: list[bool], robust: list[bool], attacks: dict[str, list[bool]]
) -> dict[str, Any]:
    """The ``per_example`` object of an entry: the evaluated test-set ``indices``, each example's
    clean and worst-case correctness, and each attack run's survivors (in the order they ran)."""
    order = list(attacks)
    if len(order) > len(LETTERS):
        raise RobustdeqError(f"per_example: {len(order)} attack runs, more than the {len(LETTERS)} letters")
    broken = []
    for i, ok in enumerate(clean):
        first = next((k for k, name in enumerate(order) if ok and not attacks[name][i]), None)
        broken.append(NOT_BROKEN if first is None else LETTERS[first])
    return {
        "indices": encode_indices(indices),
        "clean_correct": bits(clean),
        "robust": bits(robust),
        "attack_order": order,
        "broken_by": "".join(broken),
    }


def check_outcomes(outcomes: dict[str, Any], n: int, clean_accuracy: float, robust_accuracy: float) -> None:
    """The per-example strings agree with the entry's counts and with one another (raises ValueError)."""
    try:
        listed = len(decode_indices(outcomes["indices"]))
    except RobustdeqError as exc:
        raise ValueError(str(exc)) from None
    if listed != n:
        raise ValueError(f"per_example.indices: does not list {n} examples")
    for key in ("clean_correct", "robust", "broken_by"):
        if len(outcomes[key]) != n:
            raise ValueError(f"per_example.{key}: {len(outcomes[key])} characters for {n} examples")
    for key in ("clean_correct", "robust"):
        if set(outcomes[key]) - {"0", "1"}:
            raise ValueError(f"per_example.{key}: only 0 and 1 allowed")
    clean, robust = unbits(outcomes["clean_correct"]), unbits(outcomes["robust"])
    if sum(clean) != round(clean_accuracy * n) or sum(robust) != round(robust_accuracy * n):
        raise ValueError("per_example: its counts disagree with clean_accuracy / robust_accuracy")
    letters = LETTERS[: len(outcomes["attack_order"])]
    for c, r, b in zip(clean, robust, outcomes["broken_by"], strict=True):
        if (r and not c) or (b != NOT_BROKEN and b not in letters) or ((b == NOT_BROKEN) != (r or not c)):
            raise ValueError("per_example: clean_correct, robust and broken_by disagree")
