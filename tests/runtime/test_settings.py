"""labsupport.runtime.settings: time scale, namespace, wall/model conversion."""
from __future__ import annotations

import math
import time

import pytest

from labsupport.runtime import settings
from labsupport.runtime.errors import BadParameter, LabError


@pytest.fixture(autouse=True)
def clean_settings(monkeypatch):
    """No override and no LAB_* variables unless the test sets them; restored afterwards."""
    saved = settings.time_scale_override()
    settings.set_time_scale(None)
    monkeypatch.delenv("LAB_TIME_SCALE", raising=False)
    monkeypatch.delenv("LAB_NAMESPACE", raising=False)
    yield
    settings.set_time_scale(saved)


# ----- time scale --------------------------------------------------------------------
def test_time_scale_defaults_to_real_time():
    assert settings.time_scale() == 1.0


@pytest.mark.parametrize("raw, expected", [("0.2", 0.2), ("5", 5.0), ("0.01", 0.01), ("10", 10.0)])
def test_time_scale_read_from_env(monkeypatch, raw, expected):
    monkeypatch.setenv("LAB_TIME_SCALE", raw)
    assert settings.time_scale() == pytest.approx(expected)


def test_time_scale_env_is_read_live(monkeypatch):
    monkeypatch.setenv("LAB_TIME_SCALE", "0.5")
    assert settings.time_scale() == 0.5
    monkeypatch.setenv("LAB_TIME_SCALE", "2")
    assert settings.time_scale() == 2.0


def test_set_time_scale_overrides_env_and_none_resets(monkeypatch):
    monkeypatch.setenv("LAB_TIME_SCALE", "0.5")
    settings.set_time_scale(0.25)
    assert settings.time_scale() == 0.25
    settings.set_time_scale(None)
    assert settings.time_scale() == 0.5


def test_set_time_scale_stores_a_float():
    settings.set_time_scale(2)
    value = settings.time_scale()
    assert value == 2.0 and isinstance(value, float)


def test_non_number_env_names_the_variable(monkeypatch):
    monkeypatch.setenv("LAB_TIME_SCALE", "fast")
    with pytest.raises(BadParameter) as info:
        settings.time_scale()
    assert "LAB_TIME_SCALE" in str(info.value)
    assert "'fast'" in str(info.value)
    assert info.value.fix, "a LabError must name its fix"


@pytest.mark.parametrize("raw", ["0", "100", "-1", "0.001", "nan", "inf"])
def test_out_of_range_env_names_the_range(monkeypatch, raw):
    monkeypatch.setenv("LAB_TIME_SCALE", raw)
    with pytest.raises(BadParameter) as info:
        settings.time_scale()
    assert "0.01..10" in str(info.value)


@pytest.mark.parametrize("value", [0, 100, -0.5, 0.009, 10.5, math.nan])
def test_set_time_scale_rejects_out_of_range(value):
    with pytest.raises(BadParameter, match=r"0\.01\.\.10"):
        settings.set_time_scale(value)
    assert settings.time_scale() == 1.0, "a rejected value must not stick"


def test_bad_parameter_is_a_value_error_and_lab_error(monkeypatch):
    monkeypatch.setenv("LAB_TIME_SCALE", "0")
    with pytest.raises(ValueError):
        settings.time_scale()
    with pytest.raises(LabError):
        settings.time_scale()


def test_set_time_scale_rejects_non_number_with_bad_parameter():
    with pytest.raises(BadParameter):
        settings.set_time_scale("fast")


# ----- wall / model time ---------------------------------------------------------------
def test_to_wall_and_to_model_use_the_scale():
    settings.set_time_scale(0.2)
    assert settings.to_wall(1.0) == pytest.approx(0.2)
    assert settings.to_model(0.2) == pytest.approx(1.0)
    assert settings.to_model(settings.to_wall(3.7)) == pytest.approx(3.7)


def test_to_wall_follows_env(monkeypatch):
    monkeypatch.setenv("LAB_TIME_SCALE", "5")
    assert settings.to_wall(2.0) == pytest.approx(10.0)
    assert settings.to_model(10.0) == pytest.approx(2.0)


def test_real_time_conversion_is_identity():
    assert settings.to_wall(1.5) == 1.5
    assert settings.to_model(1.5) == 1.5


# ----- namespace -----------------------------------------------------------------------
@pytest.mark.parametrize("raw, expected", [
    ("alice", "alice"),
    ("Alice Smith", "alice-smith"),
    ("team/a/b", "team-a-b"),
    ("  Team  B // West  ", "team-b-west"),
    ("UPPER_case-ok", "upper_case-ok"),
    ("a.b@c", "a-b-c"),
    ("/leading/and/trailing/", "leading-and-trailing"),
])
def test_namespace_from_env_is_sanitised(monkeypatch, raw, expected):
    monkeypatch.setenv("LAB_NAMESPACE", raw)
    assert settings.namespace() == expected


def test_namespace_is_at_most_40_characters(monkeypatch):
    monkeypatch.setenv("LAB_NAMESPACE", "x" * 100)
    assert settings.namespace() == "x" * 40


def test_namespace_without_usable_characters_raises(monkeypatch):
    monkeypatch.setenv("LAB_NAMESPACE", "/// ...")
    with pytest.raises(BadParameter, match="LAB_NAMESPACE"):
        settings.namespace()


def test_namespace_defaults_to_sanitised_user(monkeypatch):
    monkeypatch.setattr(settings.getpass, "getuser", lambda: "Jane Doe")
    assert settings.namespace() == "jane-doe"


def test_empty_namespace_variable_falls_back_to_user(monkeypatch):
    monkeypatch.setenv("LAB_NAMESPACE", "")
    monkeypatch.setattr(settings.getpass, "getuser", lambda: "bob")
    assert settings.namespace() == "bob"


def test_namespace_without_user_is_learner(monkeypatch):
    def no_user():
        raise KeyError("getpwuid(): uid not found")

    monkeypatch.setattr(settings.getpass, "getuser", no_user)
    assert settings.namespace() == "learner"


def test_env_namespace_wins_over_user(monkeypatch):
    monkeypatch.setattr(settings.getpass, "getuser", lambda: "bob")
    monkeypatch.setenv("LAB_NAMESPACE", "Carol")
    assert settings.namespace() == "carol"


# ----- state folder ----------------------------------------------------------------------
def test_state_dir_from_env_is_created(monkeypatch, tmp_path):
    target = tmp_path / "deep" / "state"
    monkeypatch.setenv("LAB_STATE_DIR", str(target))
    assert settings.state_dir() == target
    assert target.is_dir()


def test_course_root_holds_the_package():
    assert (settings.course_root() / "labsupport" / "runtime" / "settings.py").is_file()


def test_scale_at_least_raises_a_small_scale_and_restores_it(monkeypatch):
    monkeypatch.setenv("LAB_TIME_SCALE", "0.2")
    with settings.scale_at_least(0.5) as scale:
        assert scale == settings.time_scale() == 0.5
    assert settings.time_scale() == 0.2 and settings.time_scale_override() is None
    settings.set_time_scale(2.0)
    with settings.scale_at_least(0.5):
        assert settings.time_scale() == 2.0   # a larger scale stays
    assert settings.time_scale_override() == 2.0
    with pytest.raises(RuntimeError), settings.scale_at_least(1.0):
        raise RuntimeError("inside")
    assert settings.time_scale_override() == 2.0


def test_model_clock_stays_continuous_when_the_scale_changes(monkeypatch):
    monkeypatch.setenv("LAB_TIME_SCALE", "0.2")
    settings.set_time_scale(None)
    before = settings.model_clock()
    floor = settings.scale_at_least(0.5)
    during = settings.model_clock()
    time.sleep(0.05)
    elapsed = settings.model_clock() - during
    floor.release()
    after = settings.model_clock()
    # wall / scale, the clock without an anchor, would jump back to 40% of its reading here
    assert before <= during <= after and after - before < 0.2
    assert elapsed == pytest.approx(0.05 / 0.5, abs=0.03)   # at 0.5: a model second is 0.5 s
    time.sleep(0.02)
    assert settings.model_clock() - after == pytest.approx(0.02 / 0.2, abs=0.03)


def test_scale_floors_nest_and_release_once_each(monkeypatch):
    monkeypatch.setenv("LAB_TIME_SCALE", "0.2")
    low, high = settings.scale_at_least(0.3), settings.scale_at_least(0.5)
    assert settings.time_scale() == 0.5
    high.release()
    high.release()   # twice: no effect on the other floor
    assert settings.time_scale() == 0.3
    low.release()
    assert settings.time_scale() == 0.2


def test_a_floor_held_until_a_background_run_is_done(monkeypatch):
    import concurrent.futures

    monkeypatch.setenv("LAB_TIME_SCALE", "0.2")
    future: concurrent.futures.Future = concurrent.futures.Future()
    assert settings.scale_at_least(0.5).until_done(future) is future
    assert settings.time_scale() == 0.5
    future.set_result(None)
    assert settings.time_scale() == 0.2


def test_a_floor_out_of_range_is_refused():
    with pytest.raises(BadParameter, match=r"0\.01\.\.10"):
        settings.scale_at_least(0)
    assert settings.time_scale() == 1.0
