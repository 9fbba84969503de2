"""The join's result: a label, the features it is about and, if seen yet, the served prediction."""

from __future__ import annotations

from schemas import FeatureEvent, Label, Prediction, TrainingExample


def training_example(
    features: FeatureEvent, label: Label, prediction: Prediction | None
) -> TrainingExample:
    """The training example of one event.

    ``prediction`` is None when the label met the features before the prediction reached
    labeling; the example then carries no prediction or model version (training learns from it
    all the same, monitoring cannot score it), and a prediction arriving later is not added.
    """
    return TrainingExample(
        event_id=features.event_id,
        entity_id=features.entity_id,
        ts=features.ts,
        features=features.features,
        label=label.label,
        prediction=None if prediction is None else prediction.prediction,
        model_version=None if prediction is None else prediction.model_version,
        label_source=label.source,
    )
