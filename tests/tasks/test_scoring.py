"""The scoring rule of the facts contract on small handmade frames, tolerance edges included."""

import pandas as pd
import pytest

from tasks.errors import InputError
from tasks.scoring import (
    Score,
    score_encounters,
    score_gaps,
    score_intervals,
    score_jumps,
    score_movement,
    score_port_calls,
    score_traffic,
    score_voyages,
)

T0 = pd.Timestamp("2024-01-15T06:00:00")


def _t(minutes: float, seconds: float = 0) -> str:
    return (T0 + pd.Timedelta(minutes=minutes, seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")


def _events(*rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["mmsi", "start", "end"])


def test_start_and_end_may_each_be_off_by_exactly_the_tolerance():
    truth = _events((366000001, _t(0), _t(60)))
    assert score_intervals(_events((366000001, _t(10), _t(50))), truth).tp == 1
    assert score_intervals(_events((366000001, _t(10, 1), _t(60))), truth).tp == 0
    assert score_intervals(_events((366000001, _t(0), _t(70, 1))), truth).tp == 0
    assert score_intervals(_events((366000002, _t(0), _t(60))), truth).tp == 0  # other vessel


def test_matching_is_one_to_one_and_counts_are_exact():
    truth = _events((366000001, _t(0), _t(60)), (366000001, _t(120), _t(180)), (366000003, _t(0), _t(30)))
    detected = _events(
        (366000001, _t(1), _t(61)),  # matches the first
        (366000001, _t(2), _t(59)),  # a second detection of the same event: a false positive
        (366000001, _t(121), _t(181)),  # matches the second
        (366000009, _t(0), _t(30)),  # nothing there
    )
    score = score_intervals(detected, truth)
    assert (score.tp, score.fp, score.fn) == (2, 2, 1)
    assert score.precision == pytest.approx(2 / 4) and score.recall == pytest.approx(2 / 3)
    assert score.f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))


def test_closest_candidate_wins_when_two_could_match():
    truth = _events((366000001, _t(0), _t(60)), (366000001, _t(8), _t(68)))
    detected = _events((366000001, _t(7), _t(67)), (366000001, _t(1), _t(61)))
    assert score_intervals(detected, truth).tp == 2


def test_truncated_truth_is_left_out_of_both_sides():
    truth = pd.DataFrame(
        {"mmsi": [366000001, 366000001], "locode": ["USLAX", "USLAX"], "arrival": [_t(0), _t(300)],
         "departure": [_t(60), _t(400)], "truncated": ["true", "false"]}
    )  # fmt: skip
    detected = pd.DataFrame({"mmsi": [366000001], "locode": ["USLAX"], "arrival": [_t(2)], "departure": [_t(62)]})
    score = score_port_calls(detected, truth)
    assert (score.tp, score.fp, score.fn) == (0, 0, 1)  # the cut call neither counts for nor against
    wrong_port = detected.assign(locode="USLGB")
    assert score_port_calls(wrong_port, truth).fp == 1


def test_detected_rows_marked_truncated_are_left_out():
    truth = _events((366000001, _t(0), _t(60)))
    detected = pd.DataFrame({"mmsi": [366000001, 366000001], "start": [_t(0), _t(500)], "end": [_t(60), _t(560)],
                             "truncated": [False, True]})  # fmt: skip
    assert score_intervals(detected, truth) == Score(1.0, 1.0, 1.0, 1, 0, 0)


def test_voyage_with_a_departure_before_the_data_matches_on_its_arrival():
    truth = pd.DataFrame(
        {"mmsi": [366000001], "from_locode": ["USSEA"], "to_locode": ["USTIW"], "departure": [""], "arrival": [_t(90)],
         "truncated": ["true"]}
    )  # fmt: skip
    detected = truth.assign(departure=_t(0), truncated="false")
    assert score_voyages(detected, truth).fp == 0


def test_columns_maps_detector_names_to_contract_names():
    truth = pd.DataFrame({"mmsi": [366000001], "gap_start": [_t(0)], "gap_end": [_t(45)], "minutes": ["45.00"]})
    detected = pd.DataFrame({"vessel": [366000001], "went_dark": [pd.Timestamp(_t(0), tz="UTC")], "came_back": [_t(45)]})
    assert score_gaps(detected, truth, columns={"mmsi": "vessel", "start": "went_dark", "end": "came_back"}).f1 == 1.0
    assert score_gaps(truth, truth).f1 == 1.0  # gap_start / gap_end are understood as they are


def test_a_missing_column_is_a_one_line_input_error():
    with pytest.raises(InputError, match=r"detected lacks column\(s\) end .*columns=\{contract_name: your_name\}"):
        score_intervals(pd.DataFrame({"mmsi": [1], "start": [_t(0)]}), _events((1, _t(0), _t(1))))


def test_empty_sides():
    empty = _events()
    assert score_intervals(empty, empty) == Score(1.0, 1.0, 1.0, 0, 0, 0)
    one = _events((366000001, _t(0), _t(60)))
    assert score_intervals(empty, one) == Score(1.0, 0.0, 0.0, 0, 0, 1)
    assert score_intervals(one, empty) == Score(0.0, 1.0, 0.0, 0, 1, 0)


def test_encounters_match_the_unordered_pair_within_5_minutes_and_the_same_situation():
    truth = pd.DataFrame({"mmsi_a": [366000001], "mmsi_b": [366000002], "situation": ["crossing"], "cpa_time": [_t(0)],
                          "cpa_nm": [0.2], "planted": ["true"]})  # fmt: skip
    swapped = pd.DataFrame({"mmsi_a": [366000002], "mmsi_b": [366000001], "situation": ["crossing"], "cpa_time": [_t(5)]})
    assert score_encounters(swapped, truth).tp == 1
    assert score_encounters(swapped.assign(cpa_time=_t(5, 1)), truth).tp == 0
    assert score_encounters(swapped.assign(situation="head_on"), truth).tp == 0
    twice = pd.concat([swapped, swapped.assign(cpa_time=_t(-1))])
    assert (score_encounters(twice, truth).tp, score_encounters(twice, truth).fp) == (1, 1)


def _encounter_truth(*rows) -> pd.DataFrame:
    """(mmsi_b, situation, cpa minutes, borderline, situation_borderline) rows against vessel 366000001."""
    return pd.DataFrame(
        [(366000001, b, situation, _t(m), 0.3, "false", "true" if edge else "false", "true" if sit_edge else "false")
         for b, situation, m, edge, sit_edge in rows],
        columns=["mmsi_a", "mmsi_b", "situation", "cpa_time", "cpa_nm", "planted", "borderline", "situation_borderline"],
    )


def _detections(*rows) -> pd.DataFrame:
    return pd.DataFrame([(366000001, b, situation, _t(m)) for b, situation, m in rows], columns=["mmsi_a", "mmsi_b", "situation", "cpa_time"])


def test_borderline_encounter_truth_is_dont_care_on_both_sides():
    truth = _encounter_truth((366000002, "crossing", 0, False, False), (366000003, "head_on", 30, True, False))
    # the borderline row missed: not a false negative
    assert score_encounters(_detections((366000002, "crossing", 1)), truth) == Score(1.0, 1.0, 1.0, 1, 0, 0)
    # found, in any situation: not a false positive either
    for situation in ("head_on", "overtaking"):
        found = _detections((366000002, "crossing", 1), (366000003, situation, 34))
        assert score_encounters(found, truth) == Score(1.0, 1.0, 1.0, 1, 0, 0)
    # still the usual time tolerance: 6 minutes off is a false positive
    late = _detections((366000002, "crossing", 1), (366000003, "head_on", 36))
    assert score_encounters(late, truth) == Score(0.5, 1.0, 2 / 3, 1, 1, 0)
    # a firm row missed is still a false negative, whatever borderline rows are found
    assert score_encounters(_detections((366000003, "head_on", 30)), truth) == Score(1.0, 0.0, 0.0, 0, 0, 1)


def test_a_detection_goes_to_the_firm_truth_row_before_a_borderline_one():
    # one detection, two truth rows of the same pair within 5 minutes: the firm one is matched, even though
    # the borderline one is closer in time
    truth = _encounter_truth((366000002, "crossing", 0, False, False), (366000002, "crossing", 6, True, False))
    assert score_encounters(_detections((366000002, "crossing", 4)), truth) == Score(1.0, 1.0, 1.0, 1, 0, 0)


def test_a_situation_borderline_truth_row_accepts_any_situation_but_counts():
    truth = _encounter_truth((366000002, "crossing", 0, False, True), (366000003, "overtaking", 20, False, False))
    found = _detections((366000002, "head_on", 2), (366000003, "crossing", 20))
    # the situation-borderline row is matched (and counts as a true positive); the firm one needs its situation
    assert score_encounters(found, truth) == Score(0.5, 0.5, 0.5, 1, 1, 1)


def test_traffic_rows_match_only_exactly():
    truth = pd.DataFrame({"hour": ["2024-01-15T06:00:00"] * 2, "cell_lat_idx": [337, 337], "cell_lon_idx": [-1183, -1182],
                          "vessel_type_code": [70, 70], "vessels": [3, 1]})  # fmt: skip
    detected = truth.assign(hour=pd.Timestamp("2024-01-15 06:00:00"), vessels=[3, 2])
    assert (score_traffic(detected, truth).tp, score_traffic(detected, truth).fp) == (1, 1)


def test_movement_tolerances():
    truth = pd.DataFrame({"mmsi": [366000001, 366000001], "window_start": [_t(0), _t(60)], "distance_nm": [10.0, 1.0],
                          "minutes_underway": [50.0, 0.0], "minutes_moored": [0.0, 58.0], "minutes_anchored": [0.0, 0.0],
                          "major_course_changes": [1, 0]})  # fmt: skip
    assert score_movement(truth.assign(distance_nm=[10.5, 1.1], minutes_underway=[56.0, 0.0]), truth).tp == 2
    assert score_movement(truth.assign(distance_nm=[10.51, 1.0]), truth).tp == 1  # 5 % of 10 nm
    assert score_movement(truth.assign(distance_nm=[10.0, 1.11]), truth).tp == 1  # 0.1 nm floor
    assert score_movement(truth.assign(minutes_moored=[0.0, 64.01]), truth).tp == 1
    assert score_movement(truth.assign(major_course_changes=[2, 0]), truth).tp == 1


def test_jumps_match_on_the_report_time():
    truth = pd.DataFrame({"mmsi": [366000001], "ts": [_t(0)]})
    assert score_jumps(pd.DataFrame({"mmsi": [366000001], "ts": [_t(1)]}), truth).tp == 1
    assert score_jumps(pd.DataFrame({"mmsi": [366000001], "ts": [_t(1, 1)]}), truth).tp == 0
