"""What a customer's own words ask for: the event type of free text (e-mail, call reasons).

A rule table with negation scope (`producers/mappings/intents.yaml`, docs/design.md
11.6), not keywords: the text is cut into sentences and clauses, and each type's cues
are matched clause by clause. A cue does not count after a negation in its clause ("I do
not want to cancel", "no complaint at all"), nor in a question or a supposition ("what
happens if I cancel?"), unless it is a request ("could you cancel my contract?"). The
types that open a case (`careful`: cancellation, dispute, complaint) need a strong cue
(an explicit request or statement), or two weak ones outside a reply; a reply in a
thread (`strict`) needs a strong cue: it is about its thread unless it clearly reopens
it. A thank-you is feedback unless the message also asks for something. What reads as a
careful type without meeting that bar is an `inquiry` with `classified_as` and
`confidence`; text in another language is an `inquiry` classified as `unknown`.

Deterministic and offline: the same text always gives the same answer; everything is
compiled once, when the classifier is made.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

from producers.adapters.base import MappingError, load_mapping

#: The type of text that asks for nothing the table knows.
DEFAULT_TYPE: Final = "inquiry"
#: `classified_as` of text the classifier cannot read (no words, another language).
UNKNOWN: Final = "unknown"

_STRONG: Final = 2.0
_WEAK: Final = 1.0
#: A subject counts half: it names the topic more often than it asks for something.
_SUBJECT_SHARE: Final = 0.5


@dataclass(frozen=True, slots=True)
class Intent:
    """The classifier's answer: the type to record, what the text reads as, how sure."""

    #: The event type to record.
    type: str
    #: The type the text reads as (an event type or `unknown`); differs from `type` when
    #: the reading was not sure enough to record.
    classified_as: str
    #: 0..1: how clearly the text says it (1 - 0.4 ** score, shared among rival readings).
    confidence: float

    @property
    def uncertain(self) -> bool:
        """Recorded as an inquiry while it reads as something else (or as nothing known)."""
        return self.type == DEFAULT_TYPE and self.classified_as != DEFAULT_TYPE


@dataclass(slots=True)
class _Found:
    """The cues found in one message, as `_score` adds them up."""

    #: Counted cues' weights by type.
    scores: dict[str, float] = field(default_factory=dict)
    #: Types with a counted strong cue.
    strong: set[str] = field(default_factory=set)
    #: Types with any cue, counted or not (negated, asked about).
    seen: set[str] = field(default_factory=set)
    #: How many clauses counted for each type, and how many clauses were read.
    clauses_of: dict[str, int] = field(default_factory=dict)
    clauses: int = 0


@dataclass(frozen=True, slots=True)
class _Cues:
    strong: re.Pattern[str] | None
    weak: re.Pattern[str] | None
    requests: re.Pattern[str] | None


# Common English words, and those of the languages customers most often write in instead:
# a message with more of the latter is not read (its cues would be guesses).
_ENGLISH_WORDS: Final = (
    "the and to i a is my you of for in it on not please have with this that be can do me we "
    "your are thanks thank hi hello was will what when how why at am would like want if but "
    "there from our just any as so has been an or"
)
_FOREIGN_WORDS: Final = (
    "ich und der die das nicht ist mit meine meinen meiner ein eine zu bitte danke wie wann "
    "sie guten tag hallo habe vielen dank grüßen mein möchte frage je et le la les ma mon est "
    "pas pour vous bonjour merci quand que une suis ai mes du au votre hola quiero mi el es "
    "por gracias puedo saber cuándo buenos días ik het een niet mij wanneer kunt goedemiddag "
    "groet wat ciao grazie sono della per jeg og det er ikke hej tack jag och"
)
_ENGLISH: Final = frozenset(_ENGLISH_WORDS.split())
_FOREIGN: Final = frozenset(_FOREIGN_WORDS.split())
_WORD: Final = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
_SENTENCE_END: Final = re.compile(r"(?<=[.!?])\s+|\n+|;\s*|:\s+(?=[A-Za-z])")
_CLAUSE_BREAK: Final = re.compile(
    r",\s+|\s+(?:but|however|although|though|whereas|except that)\s+|\s+-\s+|\s+and\s+(?=i\b)"
)
_COURTESY: Final = re.compile(
    r"(?:ok(?:ay)?\s+|yes\s+|great\s+)?(?:many\s+)?(?:thanks|thank you|ta)"
    r"(?:\s+(?:so much|very much|a lot|again|in advance))?"
)
_APOSTROPHES: Final = str.maketrans({"\u2019": "'", "\u2018": "'", "\u00b4": "'", "`": "'"})
_SUBJECT_PREFIX: Final = re.compile(
    r"^\s*(?:(?:re|aw|sv|antw|wg|fw|fwd|tr|rif)\s*(?:\[\d+\])?\s*:\s*)+", re.IGNORECASE
)
_FORWARD_PREFIX: Final = re.compile(r"^\s*(?:wg|fw|fwd|tr)\s*:", re.IGNORECASE)


def reply_subject(subject: str) -> tuple[str, bool, bool]:
    """The subject without `Re:`/`Fwd:` prefixes, whether it had a reply prefix and
    whether it had a forward prefix."""
    stripped = _SUBJECT_PREFIX.sub("", subject)
    if stripped == subject:
        return subject, False, False
    forwarded = bool(_FORWARD_PREFIX.match(subject))
    return stripped, not forwarded, forwarded


def _typo_variants(word: str) -> set[str]:
    variants = {word[:i] + word[i + 1] + word[i] + word[i + 2 :] for i in range(len(word) - 1)}
    if len(word) >= 6:
        variants |= {word[:i] + word[i + 1 :] for i in range(len(word))}
    variants.discard(word)
    return variants


class IntentClassifier:
    """The rule table of `intents.yaml`, compiled; `classify` answers for one text."""

    def __init__(self, table: Mapping[str, Any] | None = None) -> None:
        table = dict(table) if table is not None else load_mapping("intents")
        where = str(table.get("__file__", "intents table"))
        try:
            self._compile(table)
        except (re.error, KeyError, TypeError, ValueError) as exc:
            raise MappingError(f"{where}: {exc}") from None

    def _compile(self, table: Mapping[str, Any]) -> None:
        words = {str(k): _joined(v) for k, v in dict(table.get("words") or {}).items()}
        for _ in range(4):  # macros may name macros
            words = {k: _expand(v, words) for k, v in words.items()}

        def compile_list(patterns: Iterable[Any]) -> re.Pattern[str] | None:
            parts = [f"(?:{_expand(_joined(p), words)})" for p in patterns or ()]
            return re.compile("|".join(parts), re.MULTILINE) if parts else None

        self.careful = frozenset(str(t) for t in table.get("careful") or ())
        self.order = tuple(str(t) for t in table.get("order") or ())
        self.cues: dict[str, _Cues] = {}
        for event_type, spec in dict(table["types"]).items():
            self.cues[str(event_type)] = _Cues(
                compile_list(spec.get("strong")),
                compile_list(spec.get("weak")),
                compile_list(spec.get("requests")),
            )
        unknown = [t for t in self.order if t not in self.cues]
        if unknown or set(self.cues) - set(self.order):
            raise ValueError("`order` must list every type of `types` once")
        self.negation = re.compile(_joined(table["negation"]))
        self.not_negation = re.compile(_joined(table.get("not_negation") or r"(?!x)x"))
        self.negation_reach = int(table.get("negation_reach") or 6)
        self.hypothetical = re.compile(_joined(table["hypothetical"]))
        self.question = re.compile(_joined(table["question"]))
        self.request = re.compile(_joined(table["request"]))
        self.typos: dict[str, str] = {}
        for word in table.get("typos") or ():
            for variant in _typo_variants(str(word)):
                self.typos.setdefault(variant, str(word))
        for word in table.get("typos") or ():  # a real word is never "corrected"
            self.typos.pop(str(word), None)

    # --- text ------------------------------------------------------------------------------

    def normalise(self, text: str) -> str:
        """Lower case, straight apostrophes, known typos corrected, spaces collapsed (each
        line on its own)."""
        text = text.translate(_APOSTROPHES).lower()
        typos = self.typos
        if typos:
            text = _WORD.sub(lambda m: typos.get(m.group(), m.group()), text)
        return "\n".join(" ".join(line.split()) for line in text.splitlines())

    def _clauses(self, text: str) -> Iterable[tuple[str, bool]]:
        """(clause, whether its sentence asks or supposes) for every clause of `text`."""
        for sentence in _SENTENCE_END.split(text):
            sentence = sentence.strip()
            if not sentence:
                continue
            asks = sentence.endswith("?") or bool(self.question.match(sentence))
            for clause in _CLAUSE_BREAK.split(sentence):
                clause = clause.strip(" .!?")
                if clause:
                    yield clause, asks or bool(self.hypothetical.search(clause))

    def _negated(self, clause: str, start: int) -> bool:
        before = clause[:start]
        found = None
        for match in self.negation.finditer(before):
            found = match
        if found is None:
            return False
        if self.not_negation.match(before, found.start()):
            return False
        return len(before[found.end() :].split()) <= self.negation_reach

    def _score(self, text: str, weight: float, found: _Found) -> None:
        """Add the cues of `text`, each counted `weight` times, to `found`."""
        for clause, asks in self._clauses(text):
            found.clauses += 1
            for event_type, cues in self.cues.items():
                for pattern, value in ((cues.strong, _STRONG), (cues.weak, _WEAK)):
                    if pattern is None:
                        continue
                    match = pattern.search(clause)
                    if match is None:
                        continue
                    found.seen.add(event_type)
                    if self._negated(clause, match.start()):
                        continue
                    if asks and not (cues.requests is not None and cues.requests.search(clause)):
                        continue
                    if value == _WEAK and _COURTESY.fullmatch(clause):
                        continue  # "Thank you." opening or closing a message is manners
                    found.scores[event_type] = found.scores.get(event_type, 0.0) + value * weight
                    found.clauses_of[event_type] = found.clauses_of.get(event_type, 0) + 1
                    if value == _STRONG:
                        found.strong.add(event_type)
                    break  # a strong cue and a weak one in one clause are one sign

    def _foreign(self, text: str) -> bool:
        """No words, mostly letters outside the Latin alphabet (another script, or bytes
        decoded with the wrong charset), or more common words of another language."""
        words = _WORD.findall(text)
        if not words:
            return True
        letters = sum(len(w) for w in words)
        if 2 * sum(1 for w in words for ch in w if "a" <= ch <= "z") < letters:
            return True
        english = sum(1 for w in words if w in _ENGLISH)
        foreign = sum(1 for w in words if w in _FOREIGN)
        return foreign >= 2 and foreign > english

    # --- answer ----------------------------------------------------------------------------

    def classify(self, subject: str, body: str, *, strict: bool = False) -> Intent:
        """The intent of a message: its subject (may be empty) and the sender's own words.

        `strict`: a reply in a thread, or a record already given a type by a person: the
        careful types need a strong cue in the body, and the subject is not read.
        """
        body_text = self.normalise(body)
        subject_text = "" if strict else self.normalise(subject)
        if self._foreign(f"{subject_text}\n{body_text}"):
            return Intent(DEFAULT_TYPE, UNKNOWN, 0.0)
        if not _WORD.search(body_text):
            # No words of its own (no text part, an attachment only): the subject may say
            # what it is; if it does not, nothing is known.
            intent = self._decide(subject_text, "", strict) if subject_text else None
            if intent is None or intent.classified_as == DEFAULT_TYPE:
                return Intent(DEFAULT_TYPE, UNKNOWN, 0.0)
            return intent
        return self._decide(subject_text, body_text, strict)

    def _decide(self, subject_text: str, body_text: str, strict: bool) -> Intent:
        found = _Found()
        self._score(body_text, 1.0, found)
        body_clauses = found.clauses
        if subject_text:
            self._score(subject_text, _SUBJECT_SHARE, found)
        scores, strong = found.scores, found.strong
        careful_total = sum(scores.get(t, 0.0) for t in self.careful)
        # A careful type: one strong cue, or (outside a reply) two signs.
        opened = [
            t
            for t in self.order
            if t in self.careful and (t in strong or (not strict and scores.get(t, 0.0) >= 2.0))
        ]
        if opened:
            best = max(opened, key=lambda t: (scores[t], -self.order.index(t)))
            return Intent(best, best, _confidence(scores[best], careful_total))
        asks = bool(self.request.search(body_text))
        for event_type in self.order:
            if event_type in self.careful:
                continue
            score = scores.get(event_type, 0.0)
            if event_type == "feedback_given":
                # In a reply, a passing thank-you among other news is no feedback.
                passing = (
                    strict
                    and event_type not in strong
                    and 2 * found.clauses_of.get(event_type, 0) <= body_clauses
                )
                if score >= 1.0 and not asks and not passing:
                    return Intent(event_type, event_type, _confidence(score, score))
            elif score >= 2.0:
                return Intent(event_type, event_type, _confidence(score, score))
        # Read as a careful type, but not clearly enough to open a case.
        hinted = [t for t in self.order if t in self.careful and scores.get(t, 0.0) > 0]
        if hinted:
            best = max(hinted, key=lambda t: (scores[t], -self.order.index(t)))
            return Intent(DEFAULT_TYPE, best, _confidence(scores[best] / 2, careful_total / 2))
        return Intent(DEFAULT_TYPE, DEFAULT_TYPE, 1.0 if not found.seen else 0.8)


def _confidence(score: float, total: float) -> float:
    share = score / total if total > 0 else 1.0
    return round((1.0 - 0.4**score) * share, 2)


def _joined(value: Any) -> str:
    """A pattern written over several lines of YAML, joined without the line breaks."""
    return "".join(line.strip() for line in str(value).splitlines())


def _expand(pattern: str, words: Mapping[str, str]) -> str:
    for name, value in words.items():
        pattern = pattern.replace("{" + name + "}", value)
    return pattern


@lru_cache(maxsize=1)
def default_classifier() -> IntentClassifier:
    """The packaged table, compiled once per process."""
    return IntentClassifier()
