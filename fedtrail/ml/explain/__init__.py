"""Explanations of a model's decisions, for clinicians and auditors (captum).

``attribution`` holds the methods behind one call shape (a registry, no if/elif chains) and the
pixel masks and overlays; ``model`` explains a whole model on a fixed probe set as PNG overlays.
The valuation's explanation-shift check (``fedtrail.valuation.explanation``) builds on both.
"""

from fedtrail.ml.explain.attribution import (
    METHODS,
    Explainer,
    Explanation,
    check_method,
    corners_mask,
    frame_mask,
    overlay_png,
    region_share,
)
from fedtrail.ml.explain.model import Overlay, explain_model, probe_set

__all__ = [
    "METHODS",
    "Explainer",
    "Explanation",
    "Overlay",
    "check_method",
    "corners_mask",
    "explain_model",
    "frame_mask",
    "overlay_png",
    "probe_set",
    "region_share",
]
