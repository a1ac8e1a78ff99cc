from spam_filter.definitions import defs

__all__ = ["defs"]
