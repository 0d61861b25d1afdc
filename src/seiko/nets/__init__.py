"""Denoisers: plain ``nn.Module``s with the signature ``forward(x_t, t, cond=None)``."""

from seiko.nets.sequence import SequenceDenoiser

__all__ = ["SequenceDenoiser"]
