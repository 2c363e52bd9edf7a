"""Catalog search ranks matches (feature name > description > view > tags) and says why each matched."""

from __future__ import annotations

import pytest

from catalog.search import rank_features, search_features, service_search_text, view_search_text

pytestmark = pytest.mark.unit


def _feature(view, name, description, view_description="", tags=None):
    return {"id": f"{view}:{name}", "name": name, "view": view, "dtype": "float64", "description": description,
            "view_description": view_description, "owner": "fraud@example.com", "view_tags": tags or {"team": "fraud"},
            "tags": {}, "entities": ["merchant"], "join_keys": ["merchant_id"], "feature_services": ["fraud_detection_v1"], "models": []}


FEATURES = [
    _feature("merchant_risk", "txn_count_1d", "Transactions at the merchant in the last day", "Merchant risk from chargebacks"),
    _feature("merchant_risk", "chargeback_rate_30d", "Share of 30-day transactions charged back", "Merchant risk from chargebacks"),
    _feature("merchant_risk", "refund_count_30d", "Refunds later disputed as chargeback", "Merchant risk from chargebacks"),
    _feature("user_velocity", "amount_sum_1h", "Spend of the user in the last hour", "User spend velocity"),
]


def test_name_beats_description_beats_view_and_each_says_why():
    matches = rank_features(FEATURES, "chargeback")
    assert [m.feature["name"] for m in matches] == ["chargeback_rate_30d", "refund_count_30d", "txn_count_1d"]
    assert [m.reasons for m in matches] == [('name: "chargeback"',), ('description: "chargeback"',), ('view: "chargeback"',)]


def test_a_tag_only_match_comes_last_and_names_the_tag():
    matches = rank_features([*FEATURES, _feature("x", "fraud_score", "score")], "fraud")
    assert matches[0].feature["name"] == "fraud_score" and matches[0].reasons == ('name: "fraud"',)
    assert all(m.reasons == ('tag: "fraud" in team=fraud',) for m in matches[1:]) and len(matches) == 5


def test_every_word_must_match_and_scores_add_up():
    assert [f["name"] for f in search_features(FEATURES, "count 30d")] == ["refund_count_30d"]
    assert search_features(FEATURES, "count nowhere") == []
    exact = rank_features(FEATURES, "amount_sum_1h")[0]
    assert exact.score > rank_features(FEATURES, "amount")[0].score
    assert [m.feature["id"] for m in rank_features(FEATURES, "")] == [f["id"] for f in FEATURES]


def test_views_and_services_have_their_own_search_text():
    view = {"name": "merchant_risk", "description": "Merchant risk", "owner": "risk@x", "entities": ["merchant"],
            "tags": {"team": "fraud"}, "features": [{"name": "chargeback_rate_30d"}]}
    assert "team=fraud" in view_search_text(view) and "chargeback_rate_30d" in view_search_text(view)
    service = {"name": "fraud_detection_v1", "description": "", "owner": "", "feature_views": ["merchant_risk"],
               "models": ["fraud_mlp"], "features": [{"view": "merchant_risk", "feature": "x"}]}
    assert "merchant_risk:x" in service_search_text(service) and "fraud_mlp" in service_search_text(service)
