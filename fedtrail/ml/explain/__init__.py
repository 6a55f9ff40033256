"""Explanations of a model's decisions, for clinicians and auditors (captum).

``attribution`` holds the methods behind one call shape (a registry, no if/elif chains) and the
pixel masks and overlays; ``faithfulness`` scores a method's maps against the model (deletion
and insertion areas beside a random ordering); ``model`` explains a whole model on a fixed
probe set as PNG overlays.
The valuation's explanation-shift check (``fedtrail.valuation.explanation``) builds on both.
"""

from fedtrail.ml.explain.attribution import (
    METHODS,
    Explainer,
    Explanation,
    check_method,
    corners_mask,
    frame_mask,
    grid_mask,
    overlay_png,
    region_share,
)
from fedtrail.ml.explain.faithfulness import Faithfulness, measure_faithfulness
from fedtrail.ml.explain.model import (
    MethodExplanation,
    Overlay,
    UnexplainableModel,
    explain_methods,
    explain_model,
    probe_set,
)

__all__ = [
    "METHODS",
    "Explainer",
    "Explanation",
    "Faithfulness",
    "MethodExplanation",
    "Overlay",
    "UnexplainableModel",
    "check_method",
    "corners_mask",
    "explain_methods",
    "explain_model",
    "frame_mask",
    "grid_mask",
    "measure_faithfulness",
    "overlay_png",
    "probe_set",
    "region_share",
]
