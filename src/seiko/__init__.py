"""seiko: feedback-efficient reward fine-tuning of diffusion models (Uehara et al., ICML 2024)."""

__version__ = "0.1.0"
