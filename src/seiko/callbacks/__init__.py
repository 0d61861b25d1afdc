"""Callbacks: the online loop's acquisition and exploration bonuses, precision, writers."""

from seiko.callbacks.writers import DesignWriter

__all__ = ["DesignWriter"]
