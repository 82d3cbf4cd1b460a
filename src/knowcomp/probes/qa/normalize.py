"""Answer normalisation and exact match, as lm-evaluation-harness scores TriviaQA.

lm-eval's `triviaqa` task strips the generated answer's surrounding whitespace (its
`remove_whitespace` filter), then compares it with every alias after lower-casing both and
deleting ASCII punctuation (`exact_match` with `ignore_case` and `ignore_punctuation`); an answer
that equals any alias counts. It does not remove articles or squeeze inner whitespace, so
"The Beatles" does not match the alias "Beatles" there, and does not match here.

`squad_normalize` is the other common convention (SQuAD's and TriviaQA's own evaluation
scripts): lower case, punctuation and the articles a/an/the removed, whitespace squeezed. The
QA probes report it as a second metric, `exact_match_squad`, never as the headline.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable

_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    """lm-eval's `exact_match(ignore_case=True, ignore_punctuation=True)` form of a string."""
    return text.lower().translate(_PUNCTUATION)


def exact_match(prediction: str, answers: Iterable[str]) -> bool:
    """lm-eval's TriviaQA decision: the stripped prediction equals some answer, normalised."""
    predicted = normalize(prediction.strip())
    return any(predicted == normalize(answer) for answer in answers)


def squad_normalize(text: str) -> str:
    """SQuAD-style: lower case, no punctuation, no articles, single spaces."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION))
    return " ".join(text.split())


def squad_match(prediction: str, answers: Iterable[str]) -> bool:
    predicted = squad_normalize(prediction)
    return any(predicted == squad_normalize(answer) for answer in answers)
