"""Estimator specs: numbers, ``|`` lists and booleans, with errors that name the field."""

from __future__ import annotations

import numpy as np
import pytest

from causalrec.ope import DRos, IPSTuning, SwitchDRTuning
from causalrec.ope.evaluate import AUTO_CANDIDATES
from causalrec.ope.registry import ESTIMATORS, parse_estimator, parse_estimators
from causalrec.platform.errors import ConfigError, UnknownNameError


def test_list_and_boolean_hyperparameters_parse_to_their_field_types():
    # A float-only parser would turn "1|10|inf" into an error and "false" into a crash.
    tuned = parse_estimator("ips_slope:clips=1|10|inf,use_bias_upper_bound=false,delta=0.05")
    assert tuned == IPSTuning(clips=(1.0, 10.0, np.inf), use_bias_upper_bound=False, delta=0.05)
    specs = parse_estimators("switch_dr_slope:taus=5|50,method=slope,dros:lambda_=10,dr")
    assert specs[0] == SwitchDRTuning(taus=(5.0, 50.0))
    assert specs[1] == DRos(lambda_=10.0)
    assert [e.name for e in specs] == ["switch_dr_slope", "dros", "dr"]


def test_every_auto_candidate_and_every_registered_name_parses():
    for spec in AUTO_CANDIDATES:
        assert parse_estimator(spec).name == spec.partition(":")[0]
    assert {"ips_slope", "dr_slope", "switch_dr_slope", "dros_slope", "mips", "offcem"} <= set(
        ESTIMATORS
    )


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        ("ips_slope", ConfigError, r"ips_slope needs clips=\.\.\. \(e\.g\. ips_slope:clips="),
        ("ips:clip=x", ConfigError, "ips: clip must be a number; got 'x'"),
        ("ips_slope:clips=1|x", ConfigError, "clips must be numbers separated by |; got '1|x'"),
        (
            "dr_slope:clips=1,use_bias_upper_bound=maybe",
            ConfigError,
            "use_bias_upper_bound must be true or false; got 'maybe'",
        ),
        ("ips_slope:clip=1", UnknownNameError, "unknown ips_slope hyperparameter 'clip'"),
        ("ips_slope:clips=1,method=mse2", ConfigError, "method"),
    ],
)
def test_bad_specs_name_the_field_and_value(spec, error, match):
    with pytest.raises(error, match=match):
        parse_estimator(spec)
