"""The root of cogbox's error types; each part derives its own from it."""


class CogboxError(Exception):
    """An error whose message is meant for the user: it names the bad input or the limit hit."""
