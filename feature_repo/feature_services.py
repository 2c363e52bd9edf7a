"""Feature services: the feature sets models are trained and served on."""

from feast import FeatureService

from feature_views.merchant_risk import merchant_risk
from feature_views.user_velocity import user_velocity

fraud_detection_v1 = FeatureService(
    name="fraud_detection_v1",
    features=[user_velocity, merchant_risk],
    owner="fraud-ml@featurestack.dev",
    description="Card-payment fraud model v1: user velocity and merchant risk.",
    # model: the model trained on this service (training/); min_test_roc_auc: the gate a new model
    # must pass on the time-based holdout before it is served.
    tags={"model": "fraud_mlp", "min_test_roc_auc": "0.75"},
)
