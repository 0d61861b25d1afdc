"""Networks: denoisers (plain ``nn.Module``s with ``forward(x_t, t, cond=None)``) and the
sequence autoencoder whose latent space latent diffusion works in."""

from seiko.nets.autoencoder import SequenceAutoencoder
from seiko.nets.conv_sequence import ConvSequenceDenoiser
from seiko.nets.mlp import VectorDenoiser
from seiko.nets.sequence import SequenceDenoiser

__all__ = ["ConvSequenceDenoiser", "SequenceAutoencoder", "SequenceDenoiser", "VectorDenoiser"]
