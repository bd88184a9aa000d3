"""originctl: the origin controller and its operator CLI."""

__version__ = "0.1.0"
