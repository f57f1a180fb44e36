import pytest

from causalrec.platform.config import list_presets, load_preset
from causalrec.platform.errors import CausalRecError, ConfigError, UnknownNameError
from causalrec.simulators.config import SimulatorConfig, load_simulator_config

PRESETS = [
    "confounded",
    "default",
    "hidden_confounding",
    "popularity_bias",
    "slate",
    "unconfounded",
]


def test_all_presets_listed_and_valid():
    assert set(PRESETS) <= set(list_presets("simulators"))
    for name in PRESETS:
        config = load_preset("simulators", name, SimulatorConfig)
        assert isinstance(config, SimulatorConfig)


def test_presets_differ_where_they_should():
    confounded = load_simulator_config(preset="confounded")
    unconfounded = load_simulator_config(preset="unconfounded")
    hidden = load_simulator_config(preset="hidden_confounding")
    slate = load_simulator_config(preset="slate")
    assert confounded.confounding > 0.5 and unconfounded.confounding == 0
    assert hidden.hidden_confounding > 0 and confounded.hidden_confounding == 0
    assert slate.slate_size > 1


def test_unknown_preset_suggests_closest():
    with pytest.raises(UnknownNameError, match=r"did you mean 'confounded'"):
        load_simulator_config(preset="confoundd")


def test_unknown_config_key_suggests_closest(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("n_itemz: 10\n")
    with pytest.raises(UnknownNameError, match=r"'n_itemz'.*did you mean 'n_items'"):
        load_simulator_config(path=str(path))


@pytest.mark.parametrize(
    ("field", "value", "pattern"),
    [
        ("n_items", 0, r"n_items=0"),
        ("n_users", -5, r"n_users=-5"),
        ("slate_size", 0, r"slate_size=0"),
        ("logging_epsilon", 1.5, r"logging_epsilon=1.5"),
        ("confounding", -0.1, r"confounding=-0.1"),
        ("hidden_confounding", 2.0, r"hidden_confounding=2.0"),
        ("uniform_fraction", 1.01, r"uniform_fraction=1.01"),
        ("logging_beta", -1.0, r"logging_beta=-1.0"),
        ("position_bias", -0.5, r"position_bias=-0.5"),
        ("observed_latent_fraction", 0.0, r"observed_latent_fraction=0.0"),
    ],
)
def test_out_of_range_values_name_field_and_value(field, value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        SimulatorConfig.from_dict({field: value})


def test_slate_larger_than_catalogue_is_refused():
    with pytest.raises(
        ConfigError, match=r"slate_size must be <= n_items.*slate_size=6.*n_items=5"
    ):
        SimulatorConfig.from_dict({"n_items": 5, "slate_size": 6})


def test_errors_share_one_hierarchy():
    with pytest.raises(CausalRecError):
        SimulatorConfig.from_dict({"n_items": 0})
    with pytest.raises(ValueError):
        SimulatorConfig.from_dict({"n_items": 0})


def test_missing_and_invalid_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_simulator_config(path=str(tmp_path / "nope.yaml"))
    bad = tmp_path / "broken.yaml"
    bad.write_text("n_items: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_simulator_config(path=str(bad))


def test_overrides_apply_and_validate():
    config = load_simulator_config(preset="confounded", n_items=50, slate_size=None)
    assert config.n_items == 50
    with pytest.raises(ConfigError, match="n_items=0"):
        load_simulator_config(preset="confounded", n_items=0)


def test_config_is_frozen():
    config = SimulatorConfig()
    with pytest.raises(ValueError, match="frozen"):
        config.n_items = 3
