"""Pattern matching over event-time-ordered rows (``MATCH_RECOGNIZE``), with no I/O.

``syntax`` reads the PATTERN grammar, ``nfa`` compiles it and runs the threads,
``conditions`` evaluates DEFINE (vectorized where it can), ``measures`` computes
MEASURES, ``engine`` ties them per partition, and ``state`` snapshots partial matches.
"""

from headwater.engine.patterns.conditions import ConditionError
from headwater.engine.patterns.engine import PatternEngine, PatternSpec, SkipKind
from headwater.engine.patterns.syntax import PatternError, parse_pattern

__all__ = [
    "ConditionError",
    "PatternEngine",
    "PatternError",
    "PatternSpec",
    "SkipKind",
    "parse_pattern",
]
