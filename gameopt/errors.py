"""Exceptions gameopt raises for bad input."""


class GameInputError(ValueError, TypeError):
    """Bad input to a gameopt optimiser: the message names the problem and the fix.

    Subclasses both ValueError and TypeError, so code catching either sees it.
    """
