"""goldilocks_zone.theory.zone.find_zone: one definition of the zone on a κ curve."""

import math

import numpy as np
import pytest

from goldilocks_zone.theory.zone import find_zone


def test_zone_is_the_contiguous_run_above_the_fraction_of_the_peak():
    xs = [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]
    kappa = [0.0, 0.6, 1.0, 0.7, 0.2, 0.8]  # the last point is above half-peak but not contiguous
    zone = find_zone(xs, kappa, fraction=0.5)
    assert zone.peak_index == 2 and zone.peak_x == 1.0 and zone.peak_kappa == 1.0
    assert zone.bounds == (0.1, 10.0)
    assert zone.contains(1.0) and not zone.contains(1000.0)


def test_non_finite_points_are_skipped_and_all_nan_is_data_not_an_error():
    zone = find_zone([1, 2, 3], [np.nan, 0.5, np.inf])
    assert zone.peak_index == 1 and zone.bounds == (2.0, 2.0) and zone.num_finite == 1
    empty = find_zone([1, 2, 3], [np.nan, np.nan, -np.inf])
    assert empty.all_non_finite and empty.bounds is None and empty.peak_index is None
    assert math.isnan(empty.peak_kappa)


def test_non_positive_peak_has_no_zone_and_bad_shapes_are_refused():
    assert find_zone([1, 2], [-0.1, -0.2]).bounds is None
    with pytest.raises(ValueError, match="equal length"):
        find_zone([1, 2], [1.0])
