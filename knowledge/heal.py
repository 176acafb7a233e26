"""Grounding check: does each claim of an answer appear in the context it was given? Pure functions.

A sentence is supported when most of its content words (stemmed crudely, citations removed) occur in the
context. An answer is grounded when nearly all its sentences are. Cheap, model-free and conservative:
it catches answers made up from the model's own memory, which is what a retry with `STRICT_RULES` fixes.

    >>> check("The VPN password resets every 90 days [1].", ["VPN passwords are reset every 90 days."]).grounded
    True
    >>> check("Mars has two moons, Phobos and Deimos.", ["VPN passwords are reset every 90 days."]).grounded
    False
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

CANNOT_ANSWER = ("I cannot answer this confidently from the knowledge base: the documents I found do not "
                 "support an answer. Try /search to read them yourself.")
STRICT_RULES = ("Your previous answer contained statements that are not in the documents. Answer again using "
                "only statements the documents make, close to their own words, each with its [n] citation. "
                "Leave out anything they do not say.")
SENTENCE_SUPPORT = 0.6  # share of a sentence's content words found in the context
ANSWER_SUPPORT = 0.75  # share of sentences that must be supported

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_CITE = re.compile(r"\[\d{1,3}\]")
_STOP = frozenset("""a about above after again all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had has have having
he her here hers him his how i if in into is it its itself just me more most my no nor not now of off on once only
or other our ours out over own same she should so some such than that the their theirs them then there these they
this those through to too under until up very was we were what when where which while who whom why will with would
you your yours yes document documents context according answer question based""".split())


@dataclass(frozen=True)
class Grounding:
    grounded: bool
    support: float  # share of checked sentences that are supported
    unsupported: tuple[str, ...] = ()


def stem(word: str) -> str:
    """A crude stemmer: enough to match 'resets' with 'reset', 'policies' with 'policy'."""
    for suffix, repl in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + repl
    return word


def content_words(text: str) -> set[str]:
    return {stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP and (len(w) > 2 or w.isdigit())}


def check(answer: str, context: Sequence[str], not_found: str = "") -> Grounding:
    """Is `answer` supported by `context`? Saying the answer is not there is always grounded."""
    if not_found and not_found.lower().rstrip(".") in answer.lower():
        return Grounding(True, 1.0)
    vocabulary = set().union(*(content_words(c) for c in context)) if context else set()
    checked, unsupported = 0, []
    for sentence in _SENTENCE.split(_CITE.sub(" ", answer)):
        words = content_words(sentence)
        if len(words) < 2:  # "Yes." / a heading: no claim to check
            continue
        checked += 1
        if len(words & vocabulary) / len(words) < SENTENCE_SUPPORT:
            unsupported.append(sentence.strip())
    if not checked:
        return Grounding(bool(answer.strip()), 1.0 if answer.strip() else 0.0)
    support = 1 - len(unsupported) / checked
    return Grounding(support >= ANSWER_SUPPORT, support, tuple(unsupported))
