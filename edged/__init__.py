"""edged: the live-video edge appliance daemon."""

__version__ = "0.1.0"
