"""Losses of CCL (SPEC §3)."""
from losses.divergence import JSDLoss, symmetric_kl
from losses.nce import NCELoss, multiclass_nce, symmetric_nce, symmetric_nce_pairs
from losses.weighted import weighted_cross_entropy

__all__ = ["JSDLoss", "NCELoss", "multiclass_nce", "symmetric_kl", "symmetric_nce", "symmetric_nce_pairs",
           "weighted_cross_entropy"]
