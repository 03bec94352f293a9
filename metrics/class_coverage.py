"""Class coverage of generated samples from a classifier's logits (no training needed)."""
from __future__ import annotations

from typing import Any

import numpy as np

from evalkit.errors import MetricInputError
from evalkit.metrics._registry import Output, register_metric

# the TF Inception graph's 1008 outputs: index 0 unused, ImageNet classes 0..999 at 1..1000
TF_INCEPTION_CLASSES = 1008


@register_metric(
    Output("class_coverage", "higher", "how many classes the generated samples' predicted labels "
           "cover (of the classifier's classes; ImageNet's 1,000 for Inception logits)"),
    Output("class_kl", "lower", "KL divergence (nats) of the predicted-label histogram from uniform"),
    Output("class_accuracy", "higher", "fraction of generated samples whose predicted class is the "
           "requested label (with labels)", select=False),
    array="logits", args=("fake",), optional=("labels",), min_samples=1, position=55,
)
def class_coverage(fake: Any, *, labels: Any = None, num_classes: int | None = None,
                   label_offset: int | None = None) -> dict[str, float]:
    """Predicted-class coverage, balance and (with labels) accuracy of a generated set.

    Each sample's predicted class is the argmax of its logits over the classifier's classes.
    ``class_coverage`` counts the distinct predicted classes (the "number of covered modes"
    of Srivastava et al., VEEGAN, NeurIPS 2017, with a classifier); ``class_kl`` is
    ``KL(h || uniform) = log C + sum_c h_c log h_c`` of the predicted-class histogram ``h``
    (0 when every class is predicted equally often; Santurkar et al., "Classification-based
    measures of generative models", ICML 2018, compare these histograms); ``class_accuracy``
    is the fraction of samples whose predicted class equals the requested label, the cheap
    classification-accuracy check of class-conditional models (e.g. Ravuri & Vinyals' CAS
    reads the same agreement the other way round). Argmax ties go to the lowest index.

    For the 1008-way TF Inception logits (the ``inception`` encoder), ImageNet class ``k`` is
    output ``k + 1`` (index 0 and 1001..1007 are unused): by default only outputs 1..1000 are
    compared and predictions are returned as ImageNet indices 0..999, so labels are the usual
    ImageNet indices. Other classifiers: every output is a class (``label_offset`` 0).

    Args:
        fake: N x C logits.
        labels: optional requested class of each sample (in the classifier's label space).
        num_classes: classes compared (default 1000 for 1008 logits, else C).
        label_offset: the logit index of class 0 (default 1 for 1008 logits, else 0).
    """
    x = np.asarray(fake)
    if x.ndim != 2 or x.shape[0] < 1:
        raise MetricInputError(f"class_coverage: logits must be a 2-D N x C array, got {x.shape}")
    tf = x.shape[1] == TF_INCEPTION_CLASSES
    off = (1 if tf else 0) if label_offset is None else int(label_offset)
    c = (1000 if tf else x.shape[1] - off) if num_classes is None else int(num_classes)
    if c < 1 or off < 0 or off + c > x.shape[1]:
        raise MetricInputError(f"class_coverage: classes {off}..{off + c - 1} outside {x.shape[1]} logits")
    pred = np.argmax(x[:, off:off + c], axis=1)
    h = np.bincount(pred, minlength=c) / len(pred)
    nz = h[h > 0]
    out = {"class_coverage": float(len(nz)), "class_kl": float(np.log(c) + (nz * np.log(nz)).sum())}
    if labels is not None:
        lab = np.asarray(labels)
        if lab.shape != (len(pred),):
            raise MetricInputError(f"class_coverage: {lab.shape[0]} labels for {len(pred)} samples")
        out["class_accuracy"] = float(np.mean(pred == lab))
    return out
