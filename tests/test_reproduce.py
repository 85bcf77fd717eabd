import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import reproduce  # noqa: E402


def run_quick(tmp_path, *studies, timeout=3600):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "reproduce.py"), "--quick", "--jobs", "2", "--study", *studies,
           "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "--workdir", str(tmp_path / "runs")]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_run_keys_follow_the_resolved_config_not_the_override_order():
    a = reproduce.run_key(["seed=1", "noise.radius=0.3"])
    assert a == reproduce.run_key(["noise.radius=0.3", "seed=1"]) == reproduce.run_key(["seed=1"])  # 0.3 is cs.yaml's
    assert a != reproduce.run_key(["seed=2"]) != reproduce.run_key(["seed=1"], config="denoise")


def test_keys_added_later_at_their_neutral_value_keep_the_run_key():
    assert reproduce.run_key(["seed=1", "regularizer.every=1"]) == reproduce.run_key(["seed=1"])
    assert reproduce.run_key(["seed=1", "regularizer.every=4"]) != reproduce.run_key(["seed=1"])


def test_a_later_key_without_effect_in_a_run_keeps_its_key_and_one_with_effect_changes_it():
    """noise.support: where the operator records every entry, or no noise is drawn, "measured" is the old "all" (the
    cached run stands); on k-space with noise it is new physics (the run must be trained again)."""
    key = reproduce.run_key
    assert key(["seed=0"], "cs_unrolled") == "888093e79f6511eb"   # the shipped CS run, cached before the key existed
    assert key(["seed=1"], "mri_4x_varnet") == key(["seed=1", "noise.support=all"], "mri_4x_varnet")   # no noise
    noisy = ["seed=1", "noise.radius=0.45"]
    assert key(noisy, "mri_4x_varnet") != key([*noisy, "noise.support=all"], "mri_4x_varnet")
    assert key([*noisy, "noise.support=all"], "mri_4x_varnet") == key([*noisy, "noise.support=all", "seed=1"],
                                                                        "mri_4x_varnet")


def test_rekey_moves_a_run_its_companions_and_folder_to_its_current_key(tmp_path):
    cache, workdir = tmp_path / "cache", tmp_path / "runs"
    cache.mkdir()
    (workdir / "0000000000000000").mkdir(parents=True)
    run = {"overrides": ["seed=1"], "config": "cs", "test_psnr": 20.0}
    (cache / "0000000000000000.json").write_text(json.dumps(run))
    (cache / "0000000000000000-tv.json").write_text("{}")
    (cache / "1111111111111111.json").write_text(json.dumps(run))  # the same run twice: the second stays
    key = reproduce.run_key(["seed=1"])
    assert reproduce.rekey(cache, workdir) == [("0000000000000000", key)]
    assert json.loads((cache / f"{key}.json").read_text()) == run
    assert (cache / f"{key}-tv.json").exists() and (workdir / key).is_dir()
    assert (cache / "1111111111111111.json").exists() and not (cache / "0000000000000000.json").exists()
    assert reproduce.rekey(cache, workdir) == []


def test_the_sweeps_share_the_central_runs_and_its_kappa_choice():
    plan = reproduce.Plan({n: reproduce.STUDIES[n] for n in ("central", "q", "m")}, quick=False)
    candidates = plan.candidates()
    keys = lambda jobs: [reproduce.run_key(o, c) for c, o, *_ in jobs]  # noqa: E731
    assert keys(candidates[("q", 160, "sja+sj")]) == keys(candidates[("central", 0.3, "sja+sj")])
    assert keys(candidates[("m", 800, "sja+sj")]) == keys(candidates[("central", 0.3, "sja+sj")])
    assert len(candidates[("q", 80, "sj")]) == len(reproduce.KAPPAS) and ("q", 80, "none") not in candidates
    chosen = {point: 2.0 for point in candidates}
    finals = plan.finals("m", reproduce.STUDIES["m"], chosen, (0, 1, 2))
    config, overrides, *_ = finals[(200, "fja+fj")][2]
    assert {"data.n_train=200", "seed=2", "train.epochs=200", "regularizer.kappa=2.0"} <= set(overrides)
    assert "regularizer.kappa=2.0" not in finals[(200, "none")][0][1]
    del chosen[("m", 400, "sj")]  # candidates not all trained yet: that point waits
    assert (400, "sj") not in plan.finals("m", reproduce.STUDIES["m"], chosen, (0,))


def test_model_based_sweeps_reuse_the_central_choice_and_mri_tunes_at_4x_only():
    plan = reproduce.Plan({n: reproduce.STUDIES[n] for n in ("mb_central", "mb_q", "mb_m", "mb_mri")}, quick=False)
    candidates = plan.candidates()
    keys = lambda jobs: [reproduce.run_key(o, c) for c, o, *_ in jobs]  # noqa: E731
    central = keys(candidates[("mb_central", 0.3, "wd")])
    assert keys(candidates[("mb_q", 640, "wd")]) == keys(candidates[("mb_m", 200, "wd")]) == central
    assert keys(candidates[("mb_mri", "8x random", "sja+sj")]) == keys(candidates[("mb_mri", "4x random", "sja+sj")])
    assert all("operator.kwargs.acceleration=4" in o for c, o, *_ in candidates[("mb_mri", "8x random", "wd")])
    finals = plan.finals("mb_mri", reproduce.STUDIES["mb_mri"], {p: 63.0 for p in candidates}, (0,))
    assert "operator.kwargs.acceleration=8" in finals[("8x random", "wd")][0][1]
    assert "regularizer.every=4" in finals[("8x random", "sja+sj")][0][1]  # the penalty arms only
    assert not any(o.startswith("regularizer.every") for o in finals[("8x random", "wd")][0][1])
    bad = reproduce.Study("cs_unrolled", "noise.radius", (0.3,), ("wd",), 1, "centre")
    with pytest.raises(ValueError, match="tune='centre'"):
        reproduce.Plan({"bad": bad}, quick=False)


def test_the_fine_kappa_grid_adds_only_the_half_decades_to_the_q_runs():
    plan = reproduce.Plan({n: reproduce.STUDIES[n] for n in ("q", "q_fine")}, quick=False)
    candidates = plan.candidates()
    keys = lambda jobs: [reproduce.run_key(o, c) for c, o, *_ in jobs]  # noqa: E731
    fine, coarse = keys(candidates[("q_fine", 640, "sj")]), keys(candidates[("q", 640, "sj")])
    assert ("q_fine", 640, "fja+fj") not in candidates
    assert len(fine) == 5 and set(coarse) < set(fine)
    assert [k for c, o, *_ in candidates[("q_fine", 640, "sj")] for k in o if k.startswith("regularizer.kappa=")] == [
        "regularizer.kappa=20.0", "regularizer.kappa=6.3", "regularizer.kappa=2.0", "regularizer.kappa=0.63",
        "regularizer.kappa=0.2"]
    assert len(reproduce.Plan({"q_fine": reproduce.STUDIES["q_fine"]}, quick=True).candidates()[("q_fine", 320, "sja+sj")]) == 2


def test_weights_widen_by_half_decades_until_the_best_is_inside_the_grid():
    plan = reproduce.Plan({"mb_central": reproduce.STUDIES["mb_central"]}, quick=False)
    point = ("mb_central", 0.3, "sja+sj")
    weights = lambda cands: [reproduce.weight_of(o) for c, o, *_ in cands[point]]  # noqa: E731
    assert weights(plan.candidates()) == [63.0, 20.0, 6.3]
    val_loss = {63.0: 1.0, 20.0: 2.0, 6.3: 3.0, 200.0: 0.5, 630.0: 0.7}  # best at the top edge, then inside

    def results(cands):
        return {reproduce.run_key(o, c): {"val_loss": val_loss[reproduce.weight_of(o)]} for c, o, *_ in cands[point]}

    once = plan.candidates(results(plan.candidates()))
    assert weights(once) == [200.0, 63.0, 20.0, 6.3]
    twice = plan.candidates(results(once))
    assert weights(twice) == [630.0, 200.0, 63.0, 20.0, 6.3]
    assert plan.candidates(results(twice)) == twice  # 200 is inside: done
    assert [reproduce.half_decade(w, d) for w, d in ((20, 1), (63, 1), (6.3, -1), (2, -1), (0.63, -1))] == [
        63.0, 200.0, 2.0, 0.63, 0.2]


def test_fixed_weight_arms_and_bounds_of_the_model_based_study():
    plan = reproduce.Plan({"mb_central": reproduce.STUDIES["mb_central"]}, quick=False)
    candidates = plan.candidates()
    config, overrides, report, bound = candidates[("mb_central", 0.3, "sja+sj:fixed")][1]
    assert config == "cs_unrolled" and not bound  # tuning runs skip the bound
    assert {"regularizer.name=sja+sj", "regularizer.lambda_ja=0.05", "regularizer.lambda_j=0.05"} <= set(overrides)
    assert reproduce.resolve(overrides, config)["regularizer"]["lambda_ja"] == 0.05
    finals = plan.finals("mb_central", reproduce.STUDIES["mb_central"], {p: 0.05 for p in candidates}, (0, 1))
    assert all(job[3] for jobs in finals.values() for job in jobs)  # the seeds' runs get it
    seed0 = finals[(0.3, "sja+sj:fixed")][0]
    assert reproduce.run_key(seed0[1], seed0[0]) == reproduce.run_key(overrides, config)  # shared with its candidate
    old = reproduce.Plan({"q": reproduce.STUDIES["q"]}, quick=False).candidates()
    assert all(job[3] for jobs in old.values() for job in jobs)  # earlier studies: a bound for every run


def test_untuned_arms_show_the_kappa_their_config_gives():
    finals = reproduce.Plan({"mb_sr": reproduce.STUDIES["mb_sr"]}, quick=False).finals(
        "mb_sr", reproduce.STUDIES["mb_sr"], {}, (0,))
    kappas = {reg: reproduce.configured_kappa(reg, *jobs[0][:2]) for (_, reg), jobs in finals.items()}
    assert kappas == {"none": None, "wd": 20.0, "sja+sj": 20.0}
    assert reproduce.configured_kappa("sja+sj", "cs_unrolled", ["regularizer.kappa=63"]) == 63.0
    assert reproduce.configured_kappa("sja+sj:fixed", "cs_unrolled", ["regularizer.lambda_ja=0.05"]) is None


def test_earlier_rows_are_relabelled_for_the_later_table(tmp_path):
    rows = [{"q": 160, "regularizer": "none", "test_psnr": 18.5}, {"q": 160, "regularizer": "sj", "test_psnr": 18.7},
            {"q": 80, "regularizer": "none", "test_psnr": 17.4}]
    (tmp_path / "cs_q.json").write_text(json.dumps(rows))
    study = reproduce.Study("cs_unrolled", "noise.radius", (0.3,), ("none",), 1, "fixed",
                            earlier=(reproduce.Earlier(0.3, "cs_q", "q", 160, "FC", ("none", "sja+sj")),))
    assert reproduce.earlier_rows(study, "mb", tmp_path) == [{"mb": 0.3, "regularizer": "FC none", "test_psnr": 18.5}]
    missing = reproduce.Study("cs_unrolled", "noise.radius", (0.3,), ("none",), 1, "fixed",
                              earlier=(reproduce.Earlier(0.3, "cs_m", "m", 200, "FC"),))
    assert reproduce.earlier_rows(missing, "mb", tmp_path) == []


def test_shift_and_stability_of_the_seeds_nets_are_made_side_by_side_and_cached(tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    from test_training import COMMON, TINY, trained_tiny_run

    overrides = [*TINY["cs"], *COMMON, "regularizer.name=none"]
    key = reproduce.run_key(overrides, "cs")
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    trained_tiny_run(runs / key, "cs", "regularizer.name=none")
    study = reproduce.Study("cs", "noise.radius", (0.3,), ("none",), 2, "fixed", stability=True,
                            shifts=(("a blob", "blob", ()), ("ring", "ring", ())))
    jobs = [("cs", overrides, False, 0), ("cs", [*overrides, "seed=5"], False, 0)]  # the second was never trained
    assert reproduce.run_extras(jobs, study, runs, cache, compute=False)[key] == {"shift": {}, "stability": None}
    extras = reproduce.run_extras(jobs, study, runs, cache, compute=True, workers=2, threads=1, samples=(4, 2))
    assert set(extras[key]["shift"]) == {"a blob", "ring"} and extras[key]["stability"]["curves"]["network"]
    assert sorted(p.name for p in cache.iterdir()) == [f"{key}-shift-a_blob.json", f"{key}-shift-ring.json",
                                                       f"{key}-stability.json"]
    assert reproduce.run_extras(jobs, study, runs, cache, compute=False)[key] == extras[key]  # from the cache
    assert any(name.startswith("tv") for name in extras[key]["stability"]["curves"])
    # TV's curve is the same for every net of a point: the runs left out of with_tv attack the network alone
    alone = reproduce.run_extras(jobs, study, runs, tmp_path / "cache2", compute=True, threads=1, samples=(4, 2),
                                 with_tv=set())
    assert list(alone[key]["stability"]["curves"]) == ["network"]
    assert alone[key]["stability"]["curves"]["network"] == extras[key]["stability"]["curves"]["network"]


def test_tv_stability_is_asked_of_the_first_run_of_each_point_only():
    plan = reproduce.Plan({"mb_q": reproduce.STUDIES["mb_q"]}, quick=False)
    finals = plan.finals("mb_q", reproduce.STUDIES["mb_q"], {("mb_q", q, "sja+sj"): 200.0 for q in (80, 640)}, (0, 1, 2))
    first = {reproduce.run_key(jobs[0][1], jobs[0][0]) for (q, reg), jobs in finals.items() if reg == "none"}
    assert reproduce.first_run_of_each_point(finals) == first and len(first) == 2


@pytest.mark.parametrize("name", ["denoise", "mri", "sr", "mb_mri", "mb_sr"])
def test_every_imaging_point_builds(name):
    from jacinv.experiment import build_experiment

    study = reproduce.STUDIES[name]
    plan = reproduce.Plan({name: study}, quick=False)
    chosen = {point: 20.0 for point in plan.candidates()}
    finals = plan.finals(name, study, chosen, (0,))
    for value in dict.fromkeys(value for value, _ in finals):  # the regulariser does not change the data
        config, overrides, *_ = finals[(value, study.regularizers[-1])][0]
        exp = build_experiment(reproduce.resolve(overrides, config))
        assert len(exp.train_set) == reproduce.resolve(overrides, config)["data"]["n_train"]


@pytest.mark.slow
def test_reproduce_quick_fills_the_cache_and_reuses_it(tmp_path):
    first = run_quick(tmp_path, "q")
    assert first.returncode == 0, first.stderr[-2000:]
    # 4 values x (none, sja+sj at two kappas); every sja+sj final run is its chosen candidate
    cached = [p.name for p in (tmp_path / "cache").glob("*.json")]
    assert len([n for n in cached if not n.endswith("-tv.json")]) == 4 * 3
    assert len([n for n in cached if n.endswith("-tv.json")]) == 4  # the TV reference: one per value and seed
    table = (tmp_path / "out" / "cs_q-quick.md").read_text()
    assert table.count("| sja+sj |") == 4 and (tmp_path / "out" / "cs_q-quick.png").exists()
    assert table.count("| TV (classical) | mu ") == 4
    tuning = (tmp_path / "out" / "cs_q-quick_tuning.md").read_text()
    assert tuning.count("| sja+sj |") == 4
    second = run_quick(tmp_path, "q", timeout=600)
    assert second.returncode == 0 and "to train" not in second.stdout
    assert (tmp_path / "out" / "cs_q-quick.md").read_text() == table


@pytest.mark.slow
def test_reproduce_quick_mri_study_reports_the_zero_filled_baseline(tmp_path):
    done = run_quick(tmp_path, "mri")
    assert done.returncode == 0, done.stderr[-2000:]
    mri = (tmp_path / "out" / "mri-quick.md").read_text()
    assert mri.count("| adjoint |") == 4 and mri.count("| sja+sj |") == 2 * 4  # both tables
    assert mri.count("| tv(mu=") == 4
    assert (tmp_path / "out" / "mri-quick_ge.png").exists()
    rows = json.loads((tmp_path / "out" / "mri-quick.json").read_text())
    assert [r["mri"] for r in rows[::2]] == ["4x random", "4x equispaced", "8x random", "8x equispaced"]
    assert all(r["kappa"] is None and len(r["curves"][0]["ge"]) == 1 for r in rows)  # Algorithm 4, kappa 20


def test_refresh_tables_replaces_marked_blocks_only(tmp_path):
    (tmp_path / "a.md").write_text("| new |\n")
    doc = tmp_path / "results.md"
    doc.write_text("text\n<!-- table a.md -->\n| old |\n<!-- end table -->\nmore\n<!-- table b.md -->\nx\n<!-- end table -->\n")
    reproduce.refresh_tables(doc, tmp_path)
    assert doc.read_text() == ("text\n<!-- table a.md -->\n| new |\n<!-- end table -->\nmore\n"
                               "<!-- table b.md -->\n(not run yet: b.md)\n<!-- end table -->\n")


def test_report_table_lists_every_classical_method_once_per_point():
    metrics = lambda p: {"psnr": p, "ssim": 0.5, "nmse": 0.1, "volume_nmse": 0.01, "generalisation_gap": 0.2}  # noqa: E731
    report = {"network": metrics(30.0), "adjoint": metrics(20.0), "tv(mu=0.01)": metrics(25.0)}
    rows = [{"mri": "4x random", "regularizer": reg, "report": report} for reg in ("none", "sja+sj")]
    lines = reproduce.report_markdown(rows, "mri").splitlines()[2:]
    assert [line.split(" | ")[1] for line in lines] == ["adjoint", "tv(mu=0.01)", "none", "sja+sj"]
    assert "| 25.00 | 0.500 | 0.0100 |" in lines[1]


def test_adopt_caches_a_hand_trained_run_that_differs_only_in_how_it_was_logged(tmp_path):
    from jacinv.config import load_config
    from jacinv.training import train
    from test_training import TINY

    overrides = [*TINY["cs"], "train.epochs=2", "data.fallback=embedded"]
    logged_otherwise = ["train.eval_every=2", "train.probe_size=3", "train.probe_iters=2", "train.checkpoint_every=1",
                        "train.threads=1"]
    train(load_config(ROOT / "configs" / "cs.yaml", [*overrides, *logged_otherwise]), tmp_path / "mine", progress=False)
    cache, workdir = tmp_path / "cache", tmp_path / "runs"
    key = reproduce.adopt(tmp_path / "mine", overrides, "cs", workdir, cache)
    adopted = reproduce.run_one(overrides, workdir, cache, threads=1, config="cs", bound=0)   # fetched, not trained
    assert adopted["adopted_from"] == str(tmp_path / "mine") and adopted["probe_size"] == 3
    assert (workdir / key / "checkpoint_last.pt").exists()
    # the cache's own training of the same run reaches the same weights: the keys that differ change none
    trained = reproduce.run_one(overrides, tmp_path / "runs2", tmp_path / "cache2", threads=1, config="cs", bound=0)
    ours, theirs = (torch.load(d / "checkpoint_last.pt", weights_only=False)["model"] for d in
                    (workdir / key, tmp_path / "runs2" / key))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert adopted["test_psnr"] == pytest.approx(trained["test_psnr"], rel=1e-9)   # the probe's batch: rounding only
    with pytest.raises(SystemExit, match="cached already"):
        reproduce.adopt(tmp_path / "mine", overrides, "cs", workdir, cache)
    with pytest.raises(SystemExit, match=r"differs in train.lr: 0.001 \(wanted 0.002\)"):
        reproduce.adopt(tmp_path / "mine", [*overrides, "train.lr=0.002"], "cs", workdir, cache)
    metrics = tmp_path / "mine" / "metrics.json"                  # as if it had stopped after its first epoch
    metrics.write_text(json.dumps(json.loads(metrics.read_text())[:1]))
    with pytest.raises(SystemExit, match="trained 1 of 2 epochs; finish it with train.py --resume first"):
        reproduce.adopt(tmp_path / "mine", [*overrides, "seed=0"], "cs", tmp_path / "runs3", tmp_path / "cache3")


def test_an_interrupted_cached_run_resumes_from_its_checkpoint_with_the_same_result(tmp_path):
    from jacinv.training import train

    overrides = ["data.source=embedded", "data.n_train=16", "data.n_val=4", "data.n_test=8", "data.patch_size=8",
                 "operator.kwargs={n_measurements: 20, seed: 0}", "train.epochs=4",
                 "train.eval_every=1", "train.batch_size=8", "regularizer.name=none"]
    whole = reproduce.run_one(overrides, tmp_path / "a", tmp_path / "a-cache", threads=1, bound=0)
    key = reproduce.run_key(overrides)
    resolved = reproduce.resolve([*overrides, *reproduce.UNKEYED, "train.threads=1"])
    train(resolved, tmp_path / "b" / key, progress=False, stop_after=2)          # interrupted after 2 epochs
    resumed = reproduce.run_one(overrides, tmp_path / "b", tmp_path / "b-cache", threads=1, bound=0)
    assert resumed["test_psnr"] == whole["test_psnr"] and resumed["curve"] == whole["curve"]
    (tmp_path / "c" / key).mkdir(parents=True)                                   # stopped before any checkpoint
    (tmp_path / "c" / key / "config.yaml").write_text("name: cs\n")
    fresh = reproduce.run_one(overrides, tmp_path / "c", tmp_path / "c-cache", threads=1, bound=0)
    assert fresh["test_psnr"] == whole["test_psnr"]


def test_a_run_on_substitute_data_is_never_cached_under_the_configs_key(tmp_path, monkeypatch):
    """data.source=mnist falls back to embedded patches where no MNIST files are found (data.fallback); the cache,
    keyed by the configuration, must not store such a run as a Fashion-MNIST one, whatever config it comes from."""
    import jacinv.experiment as experiment

    monkeypatch.setattr(experiment, "FASHION_MNIST_DIR", tmp_path / "not-installed")
    for config in ("cs", "cs_unrolled"):
        overrides = ["data.source=mnist", "data.fallback=embedded", "train.epochs=1"]
        with pytest.raises(SystemExit, match="asks for Fashion-MNIST.*not installed.*data.root"):
            reproduce.run_one(overrides, tmp_path / "runs", tmp_path / "cache", threads=1, config=config, bound=0)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "runs").exists()
