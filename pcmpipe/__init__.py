"""pcmpipe: pairwise cross-modal coordination (PCMC / PCMR) over cached backbone features."""

__version__ = "0.1.0"
