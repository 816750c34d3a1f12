"""edgevision: the vision library shared by the IoT Edge modules of this solution."""

__version__ = "0.1.0"
