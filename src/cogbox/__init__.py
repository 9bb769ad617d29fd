"""cogbox: sandboxed, persistent deep-learning code sessions."""

__version__ = "0.1.0"
