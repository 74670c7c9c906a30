"""Model zoo with one contract: ``features(x) -> embedding``, ``head(z) -> logits``."""

from medunlearn.models.base import InputNormalization, ZooModel
from medunlearn.models.zoo import BODIES, build_model, rebuild

MODEL_NAMES = tuple(sorted(BODIES))

__all__ = ["MODEL_NAMES", "InputNormalization", "ZooModel", "build_model", "rebuild"]
