"""The regulariser registry (plug-in penalties in configs) and the spectral estimator's named presets."""
import json
import re
import sys
from pathlib import Path

import pytest
import torch

from jacinv.cli import train_main
from jacinv.config import ConfigError, load_config
from jacinv.regularizers import PRESETS, build_regularizer, register_regularizer, regularizer_spec

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

TINY = ["data.n_train=20", "data.n_test=10", "train.batch_size=10", "train.epochs=2", "train.probe_size=2",
        "train.probe_iters=2", "model.kwargs={width: 32}", "train.eval_every=1"]

PLUGIN = Path(__file__).parents[1] / "examples" / "penalties.py"   # registers "output_energy"


def test_a_plugin_regulariser_trains_from_a_config_with_its_weight_and_options(tmp_path, capsys):
    run = tmp_path / "run"
    code = train_main([*TINY, f"plugins=[{PLUGIN}]", "regularizer.name=output_energy", "regularizer.weight=0.01",
                       "regularizer.options={scale: 2.0}", "--run-dir", str(run), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    rows = json.loads((run / "metrics.json").read_text())
    assert rows[-1]["lambda_energy"] == pytest.approx(0.01)
    assert rows[-1]["penalty_energy"] > 0
    # without the plug-in the name is unknown, and says where more names come from
    with pytest.raises(ConfigError, match=r"config key 'regularizer.name' must be one of .*got 'no_such_penalty' "
                                          r"\(a plug-in may register more"):
        load_config(None, ["regularizer.name=no_such_penalty"])


def test_a_plugin_option_that_its_builder_does_not_take_is_refused(tmp_path, capsys):
    code = train_main([*TINY, f"plugins=[{PLUGIN}]", "regularizer.name=output_energy", "regularizer.options={scal: 2.0}",
                       "--run-dir", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert re.search(r"config key 'regularizer': unknown option\(s\) \['scal'\] for regularizer 'output_energy'; "
                     r"expected a subset of \['scale'\]", err), err


@pytest.mark.parametrize("call, match", [
    (lambda: register_regularizer("sj", lambda operator: [], weights={}), "already registered"),
    (lambda: register_regularizer("two words", lambda operator: [], weights={}), "without spaces"),
    (lambda: register_regularizer("new_one", None, weights={}), "build must be callable"),
    (lambda: register_regularizer("new_two", lambda operator: [], weights={"t": "lambda"}),
     r"weights must map each term to one of \['lambda_ja', 'lambda_j', 'weight'\], got \{'t': 'lambda'\}"),
])
def test_register_regularizer_refuses_bad_registrations(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_a_preset_is_its_every_and_options(preset):
    chosen = PRESETS[preset]
    by_name = build_regularizer("sj", preset=preset)
    spelled = build_regularizer("sj", every=chosen.every, **chosen.options)
    assert by_name.every == spelled.every == chosen.every
    for option in ("iters", "krylov", "jvp_mode", "refresh", "focus", "cold_iters", "chunk_rows"):
        assert getattr(by_name.terms[0], option) == getattr(spelled.terms[0], option), option


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="sj", preset="fast", every=2), r"preset 'fast' sets every=2 \(the preset's: 4\)"),
    (dict(name="sj", preset="fast", iters=5), r"preset 'fast' sets iters=5 \(the preset's: 3\)"),
    (dict(name="wd", preset="fast"), r"regularizer 'wd' is not a spectral penalty"),
    (dict(name="sj", preset="slow"), r"preset must be one of \['exact', 'fast', 'whole-batch'\], got 'slow'"),
])
def test_build_regularizer_refuses_a_preset_it_cannot_honour(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_regularizer(**kwargs)


def test_a_config_preset_is_written_into_every_and_options_and_may_not_be_contradicted():
    config = load_config(None, ["regularizer.name=sj", "regularizer.preset=fast", "regularizer.options={seed: 3}"])
    assert config["regularizer"]["every"] == 4
    assert config["regularizer"]["options"] == {"iters": 3, "krylov": 4, "jvp_mode": "fastest", "seed": 3}
    assert load_config(None, ["regularizer.name=sj", "regularizer.preset=fast", "regularizer.every=4"])
    for clash in ("regularizer.every=1", "regularizer.every=2", "regularizer.options={jvp_mode: forward}"):
        with pytest.raises(ConfigError, match=r"config key 'regularizer.preset': preset 'fast' sets"):
            load_config(None, ["regularizer.name=sj", "regularizer.preset=fast", clash])
    with pytest.raises(ConfigError, match=r"'regularizer.preset' = 'fast' has no effect"):
        load_config(None, ["regularizer.name=wd", "regularizer.preset=fast"])


def test_the_cost_benchmark_measures_the_presets_themselves():
    import jacobian_cost
    assert jacobian_cost.RECOMMENDED == {"every": PRESETS["fast"].every, **PRESETS["fast"].options}
    assert jacobian_cost.WHOLE_BATCH == {"every": PRESETS["whole-batch"].every, **PRESETS["whole-batch"].options}


def test_builtin_specs_say_what_they_need():
    assert regularizer_spec("sja+sj").model_aware and regularizer_spec("sja+sj").spectral
    assert regularizer_spec("sja+sj").weights == {"sja": "lambda_ja", "sj": "lambda_j"}
    assert not regularizer_spec("fj").spectral and regularizer_spec("sw").option_names() == ("iters",)
    with pytest.raises(ValueError, match="unknown regularizer name 'nope'"):
        regularizer_spec("nope")
    assert isinstance(build_regularizer("none")(torch.nn.Identity(), torch.zeros(2, 3)), torch.Tensor)
