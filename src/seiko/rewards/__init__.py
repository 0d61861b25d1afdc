"""Learned, differentiable reward models with uncertainty (ensembles, features, fitting)."""
