"""The package version, in a module of its own so library code can name it without importing the package root
(which re-exports the public API, and so sits above every layer)."""

__version__ = "0.1.0"
