"""Did you mean": the closest of the names there are to one that was mistyped, for one-line errors."""
from __future__ import annotations

import difflib
from typing import Iterable


def closest(word: object, choices: Iterable[str], count: int = 1) -> list[str]:
    """Up to `count` names of `choices` that `word` is probably a typo of (difflib's ratio >= 0.6), best first.

    Only a short word is compared: a 100 KB key is no typo, and difflib's cost grows with its length squared.
    """
    if not isinstance(word, str) or not word or len(word) > 200:
        return []
    choices = [c for c in choices if isinstance(c, str)]
    folded = {c.lower(): c for c in choices}
    found = difflib.get_close_matches(word.lower(), list(folded), n=count, cutoff=0.6)
    return [folded[f] for f in found]


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)`, to follow the mistyped name in an error message, or "" when nothing is close."""
    found = closest(word, choices)
    return f" (did you mean {found[0]!r}?)" if found else ""
