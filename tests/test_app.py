"""apps.train end to end on real (bundled) digits, its outputs, and its errors.

Most cases run in-process (parsing the app's own absl flags); two run the binary
itself, to check what a user sees on the command line.
"""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

import pipelines
import tfaux

from apps import experiment
from apps import train as train_app  # noqa: F401  (defines the flags)

FAST = ["--epochs=1", "--batch_size=64", "--dev_size=60", "--verbose=0", "--upper_interval=5"]


def _binary(args):
    return subprocess.run([sys.executable, "-m", "apps.train", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("method", ["jtds", "gcs", "dwa", "gradnorm", "mgda_ub"])
def test_app_trains_and_writes_every_output(tmp_path, parse, method):
    out = tmp_path / method
    metrics = experiment.run(parse(f"--method={method}", f"--output_dir={out}", *FAST))
    assert metrics["targets"] == ["label"] and "label" in metrics["selection"]
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert metrics["method"] == method and metrics["dataset"] == "digits"
    assert metrics["primary_metric"] == "primary_accuracy" and 0.0 <= metrics["test"] <= 1.0
    assert metrics["epochs"] == 1 and metrics["wall_seconds"] > 0 and metrics["flags"]["dev_size"] == 60
    assert (out / "best.weights.h5").exists() and (out / "logs").is_dir()
    data = pipelines.load("digits", setting=pipelines.Setting(dev_size=60))
    x = next(iter(data.test(16)))["x"]
    served = tfaux.load_serving(out / "saved_model")(tf.cast(x, data.raw_dtype))  # served: the raw uint8 pixels
    assert served["prediction"].shape == (16, 10)
    np.testing.assert_allclose(served["prediction"].numpy().sum(1), 1.0, rtol=1e-5)
    if method == "jtds":
        schedule = np.load(out / "schedule.npz")
        assert schedule["weights"].shape == (metrics["num_train"], 2)
        assert list(schedule["tasks"]) == ["label", "rotation"]
        assert schedule["corrupted"].shape == (metrics["num_train"],) and not schedule["corrupted"].any()
        assert np.all(schedule["weights"] > 0)
    else:
        assert not (out / "schedule.npz").exists()


def test_the_apps_networks_read_raw_inputs_through_the_datasets_preprocessing(parse):
    """Normalisation is part of the app's model: the encoder and a label generator's own network
    g(x; phi) start with the dataset's preprocessing layer, which z-scores the raw pixels."""
    data = pipelines.load("digits", setting=pipelines.Setting(dev_size=60))
    flags_ = parse("--method=maxl_f", "--encoder=convnet4", *FAST)
    strategy = experiment.preprocess_generator(experiment.build_strategy(flags_, data.tasks), data)
    x = np.concatenate([b["x"].numpy() for b in data.train_eval(512)])
    for network in (experiment.build_encoder(flags_, data), strategy.backbone(data.input_spec)):
        first = network.layers[0]
        assert first.name == "preprocessing" and [type(l).__name__ for l in first.layers] == ["Rescaling",
                                                                                            "Normalization"]
        z = first(x).numpy()
        assert abs(z.mean()) < 1e-4 and abs(z.std() - 1) < 1e-3


@pytest.mark.parametrize("args, optimizer, expected", [
    ([], keras.optimizers.SGD, dict(optimizer="sgd", learning_rate=1e-2, momentum=0.9, weight_decay=5e-5,
                                    clipnorm=10.0)),
    (["--method=njtds"], keras.optimizers.SGD, dict(learning_rate=1e-2, weight_decay=0.0, clipnorm=10.0)),
    (["--method=auxilearn"], keras.optimizers.SGD, dict(learning_rate=1e-3, weight_decay=1e-4, clipnorm=25.0)),
    (["--upper_optimizer=adam", "--upper_lr=0.02", "--upper_clipnorm=0", "--upper_weight_decay=0"],
     keras.optimizers.Adam, dict(optimizer="adam", learning_rate=0.02, clipnorm=0.0, weight_decay=0.0)),
])
def test_upper_update_defaults_are_the_methods_reference_settings(parse, args, optimizer, expected):
    """No flag: the reference code's settings (seed 000's SGD 1e-2 / clip 10, AuxiLearn's 1e-3 /
    clip 25), in the papers' scale; each --upper_* flag replaces one of them."""
    data = pipelines.load("digits", setting=pipelines.Setting(dev_size=60))
    model = experiment.build_model(parse(*args, *FAST), data)
    for name, value in expected.items():
        assert getattr(model.upper, name) == pytest.approx(value), name
    assert type(model.upper_optimizer) is optimizer
    assert float(model.upper_optimizer.learning_rate) == pytest.approx(expected["learning_rate"])


@pytest.mark.parametrize("args, words", [
    (["--upper_lr=nan"], "--upper_lr"),
    (["--dataset=nope"], "Unknown dataset 'nope'"),
    (["--dataset=mnist", "--data_dir=/no/such/dir"], "/no/such/dir"),
    (["--method=equal", "--aux_weights=bogus"], "--aux_weights"),
    (["--method=equal", "--aux_weights=colour=2"], "colour"),
    (["--method=gcs", "--method_args=temperature=2"], "'temperature'"),
    (["--lr=nan"], "--lr"),
    (["--output_dir="], "--output_dir is empty"),
    (["--output_dir=@a_file"], "is a file"),
    (["--upper_clipnorm=inf"], "--upper_clipnorm"),
    (["--method=equal", "--aux_weights=rotation=nan"], "--aux_weights"),
    (["--method=equal", "--aux_weights=rotation=-1"], "'rotation'"),
    (["--method=jtds", "--method_args=seed"], "--method_args"),
    (["--method=equal", "--method_args=task_weights={'colour': 2.0}"], "colour"),
    (["--encoder=convnet4", "--dataset=movielens_100k", "--data_dir=/no/such/dir"], "/no/such/dir"),
    (["--data_dir=/tmp"], "bundled"),
    (["--method=dwa", "--method_args=temperature="], "--method_args must look like"),
    (["--encoder=resnet18", "--encoder_weights=/no/such.weights.h5"], "error: --encoder_weights: resnet18"),
])
def test_bad_input_is_one_clear_sentence(tmp_path, parse, args, words):
    (tmp_path / "a_file").write_text("not a folder")
    args = [a.replace("@", f"{tmp_path}/") for a in args]
    with pytest.raises(SystemExit) as stop:
        experiment.main_with_errors(parse(f"--output_dir={tmp_path}", *args, *FAST))
    message = str(stop.value)
    assert words in message and message.count("\n") == 0, message


@pytest.mark.parametrize("args, words", [(["--method=nope"], "method"), (["--epochs=0"], "epochs"),
                                         (["--noise_rate=1.5"], "noise_rate"), ([f"--seed={2**32}"], "seed"),
                                         (["--seed=-1"], "seed")])
def test_bad_flag_values_are_refused_when_parsed(parse, args, words):
    with pytest.raises(flags.IllegalFlagValueError, match=words):
        parse(*args)


def test_binary_help_and_error_messages():
    helped = _binary(["--helpfull"])
    for flag in ("method", "dataset", "data_dir", "epochs", "batch_size", "lr", "upper_lr", "upper_interval",
                 "neumann_terms", "dev_size", "label_fraction", "noise_rate", "seed", "output_dir"):
        assert f"--{flag}:" in helped.stdout, flag
    wrong = _binary(["--dataset=mnist", "--data_dir=/no/such/dir", "--epochs=1"])
    assert wrong.returncode != 0 and "Traceback" not in wrong.stderr, wrong.stderr[-2000:]
    assert "/no/such/dir" in wrong.stderr.strip().splitlines()[-1]


def test_export_serves_exactly_the_models_primary_output(tmp_path):
    data = pipelines.load("digits", setting=pipelines.Setting(dev_size=60))
    model = tfaux.AuxiliaryModel(tfaux.models.convnet4(), data.tasks, tfaux.strategies.Equal(),
                                 input_spec=data.input_spec, num_examples=data.num_train)
    model.compile(optimizer="adam")
    model.fit(data.train(64).take(3), epochs=1, verbose=0)
    tfaux.export_primary(model, tmp_path / "sm")
    serve = tfaux.load_serving(tmp_path / "sm")
    x = next(iter(data.test(32)))["x"]
    np.testing.assert_allclose(serve(x)["scores"].numpy(), model(x)["label"].numpy(), atol=1e-5)


def test_app_trains_recommendation_data_with_the_tabular_encoder(tmp_path, parse, shared_data):
    """MovieLens-100K (real): rating regression primary, CTR auxiliary; RMSE beats
    predicting the training mean rating."""
    out = tmp_path / "ml"
    metrics = experiment.run(parse("--dataset=movielens_100k", f"--data_dir={shared_data / 'ml-100k'}",
                                   "--method=equal", "--epochs=1", "--batch_size=512", "--verbose=0",
                                   f"--output_dir={out}"))
    assert metrics["primary_metric"] == "primary_rmse"
    data = pipelines.load("movielens_100k", data_dir=str(shared_data / "ml-100k"))
    train_y = np.concatenate([b["labels"]["rating"].numpy() for b in data.train_eval(4096)])
    test_y = np.concatenate([b["labels"]["rating"].numpy() for b in data.test(4096)])
    baseline = float(np.sqrt(np.mean((test_y - train_y.mean()) ** 2)))
    assert metrics["test"] < baseline, (metrics["test"], baseline)
    batches = list(data.test(4096))
    x = {k: np.concatenate([b["x"][k].numpy() for b in batches]) for k in batches[0]["x"]}
    raw = {**x, **{k: data.vocabularies[k][x[k]] for k in ("user", "item")}}  # served: the dataset's own ids
    served = tfaux.load_serving(out / "saved_model")(raw)["prediction"].numpy()
    assert served.shape == test_y.shape
    assert np.sqrt(np.mean((served - test_y) ** 2)) == pytest.approx(metrics["test"], abs=1e-5)  # the run's test RMSE


class _Interrupted(Exception):
    pass


class _StopAfter(keras.callbacks.Callback):
    """Stand-in for a killed job: fails at the end of epoch `epochs` (after the backup)."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            raise _Interrupted()


@pytest.mark.slow  # tests/test_reliability.py kills a JTDS run inside its backup write and checks the same
def test_an_interrupted_run_resumes_and_finishes_as_the_uninterrupted_one(tmp_path, parse):
    args = ["--method=jtds", "--epochs=2", "--batch_size=64", "--dev_size=60", "--upper_interval=4",
            "--upper_lr=0.05", "--verbose=0"]
    whole = experiment.run(parse(*args, f"--output_dir={tmp_path / 'whole'}"))
    cut = tmp_path / "cut"
    with pytest.raises(_Interrupted):
        experiment.run(parse(*args, f"--output_dir={cut}"), extra_callbacks=[_StopAfter(1)])
    assert (cut / "backup").is_dir() and not (cut / "metrics.json").exists()
    resumed = experiment.run(parse(*args, f"--output_dir={cut}"))
    assert resumed["resumed_at_epoch"] == 1 and whole["resumed_at_epoch"] == 0
    assert resumed["history"].keys() == whole["history"].keys()
    for key, values in whole["history"].items():
        assert len(resumed["history"][key]) == 2, key
        np.testing.assert_allclose(resumed["history"][key], values, rtol=1e-4, atol=1e-5, err_msg=key)
    assert resumed["best_epoch"] == whole["best_epoch"]
    np.testing.assert_allclose(resumed["test"], whole["test"], atol=1e-6)
    a, b = (np.load(tmp_path / run / "schedule.npz") for run in ("whole", "cut"))
    np.testing.assert_allclose(b["weights"], a["weights"], rtol=1e-4, atol=1e-5)
    a, b = (np.load(tmp_path / run / "schedule_history.npz") for run in ("whole", "cut"))
    assert list(b["epochs"]) == list(a["epochs"]) == [1, 2]
    np.testing.assert_allclose(b["weights"], a["weights"], rtol=1e-4, atol=1e-5)
    # Not resumable from its own result: a finished run leaves no backup behind.
    assert not (cut / "backup").exists()


def test_a_diverging_run_exits_non_zero_records_it_and_exports_nothing(tmp_path, parse):
    """Adam with lr 1e12 sends the logits to infinity within the first epoch."""
    out = tmp_path / "diverged"
    with pytest.raises(SystemExit) as stop:
        experiment.main_with_errors(parse("--method=stl", "--lr=1e12", "--epochs=2", f"--output_dir={out}",
                                          *FAST[1:]))
    message = str(stop.value)
    assert "diverged" in message and message.count("\n") == 0, message

    def refuse(constant):
        raise ValueError(f"metrics.json holds {constant}")

    metrics = json.loads((out / "metrics.json").read_text(), parse_constant=refuse)  # strictly valid JSON
    assert metrics["status"] == "diverged" and metrics["diverged"]["epoch"] == 1
    assert metrics["diverged"]["step"] >= 1 and "test" not in metrics
    assert not (out / "saved_model").exists()
    from apps import compare
    assert compare.run_status(out) == "diverged"

