"""The root of every error the library raises; each package derives its own small hierarchy from it."""


class EdgeVisionError(Exception):
    """Base class of all edgevision errors: catch this at a module's boundary."""
