"""The exported primary model answers bad calls with a clear error and keeps running;
recommendation models take the dataset's raw ids."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pipelines
import tfaux

# Each case calls the SavedModel both ways a server does: the `serve` function and the
# `serving_default` signature (which TensorFlow does not check: a rank-3 batch used to abort
# the process in the convolution). The script prints one JSON line per call and exits 0.
CALLER = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf
    loaded = tf.saved_model.load(sys.argv[1])
    for name, inputs in json.loads(sys.argv[2]).items():
        args = {k: tf.constant(np.array(v["value"], dtype=v["dtype"])) for k, v in inputs.items()}
        for way in ("serve", "signature"):
            try:
                if way == "signature":
                    loaded.signatures["serving_default"](**args)
                else:
                    loaded.serve(args if len(args) > 1 else args["x"])
                outcome = "ok"
            except Exception as e:
                text = " | ".join(str(e).splitlines())
                at = text.find("assertion failed")  # TensorFlow puts the node's traceback before it
                outcome = type(e).__name__ + ": " + (text[at:at + 600] if at >= 0 else text[-600:])
            print(json.dumps({"case": name, "way": way, "outcome": outcome}), flush=True)
    print("SURVIVED")
""")


def _call(path, cases):
    run = subprocess.run([sys.executable, "-c", CALLER, str(path), json.dumps(cases)], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0 and "SURVIVED" in run.stdout, run.stderr[-3000:]
    out = {}
    for line in run.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            out.setdefault(r["case"], {})[r["way"]] = r["outcome"]
    return out


def _image(shape, dtype="float32", fill=0.0):
    return {"x": {"value": np.full(shape, fill).tolist(), "dtype": dtype}}


def test_the_image_model_refuses_bad_batches_clearly_and_survives(tmp_path):
    data = pipelines.load("digits", setting=pipelines.Setting(dev_size=60))
    model = tfaux.AuxiliaryModel(tfaux.models.convnet4(), data.tasks, tfaux.strategies.STL(),
                                 input_spec=data.input_spec, num_examples=data.num_train)
    tfaux.export_primary(model, tmp_path / "sm")
    outcomes = _call(tmp_path / "sm", {
        "good": _image((2, 8, 8, 1)),
        "no batch dimension": _image((8, 8, 1)),
        "wrong size": _image((2, 9, 9, 1)),
        "wrong channels": _image((2, 8, 8, 3)),
        "wrong dtype": _image((2, 8, 8, 1), "int32", 0),
        "not finite": _image((2, 8, 8, 1), fill=float("nan")),
    })
    assert outcomes["good"] == {"serve": "ok", "signature": "ok"}
    for case in ("no batch dimension", "wrong size", "wrong channels"):
        for way, outcome in outcomes[case].items():  # the shape named, the process alive
            assert outcome != "ok" and ("[batch, 8, 8, 1]" in outcome or "(None, 8, 8, 1)" in outcome), (case, way,
                                                                                                      outcome)
    for way, outcome in outcomes["wrong dtype"].items():
        assert outcome != "ok" and ("int32" in outcome or "float" in outcome), (way, outcome)
    for way, outcome in outcomes["not finite"].items():
        assert "NaN or infinite" in outcome, (way, outcome)


def test_the_recommendation_model_serves_raw_movielens_ids(tmp_path, shared_data):
    data = pipelines.load("movielens_100k", data_dir=str(shared_data / "ml-100k"))
    assert data.vocabularies["user"][0] == 1 and data.vocabularies["item"][-1] == 1682  # u.data's own ids
    model = tfaux.AuxiliaryModel(tfaux.models.tabular_encoder(data.input_spec), data.tasks, tfaux.strategies.STL(),
                                 input_spec=data.input_spec, num_examples=data.num_train)
    tfaux.export_primary(model, tmp_path / "sm", vocabularies=data.vocabularies)
    x = {k: v.numpy() for k, v in next(iter(data.test(4)))["x"].items()}
    raw = {**x, "user": data.vocabularies["user"][x["user"]], "item": data.vocabularies["item"][x["item"]]}
    served = tfaux.load_serving(tmp_path / "sm")(raw)["prediction"].numpy()
    np.testing.assert_allclose(served, model.primary_prediction(x)["prediction"].numpy(), atol=1e-5)

    def case(**changes):
        inputs = {**raw, **changes}
        return {k: {"value": np.asarray(v).tolist(), "dtype": "int64" if k in ("user", "item") else str(v.dtype)}
                for k, v in inputs.items()}

    outcomes = _call(tmp_path / "sm", {
        "good": case(),
        "unknown user": case(user=np.array([1, 2, 99999, 4])),
        "unknown item": case(item=np.array([0, 1, 2, 3])),
        "no batch dimension": case(genres=raw["genres"][0]),
    })
    assert outcomes["good"] == {"serve": "ok", "signature": "ok"}
    for way, outcome in outcomes["unknown user"].items():
        assert "input user holds ids that the training data does not have" in outcome and "99999" in outcome
    for way, outcome in outcomes["unknown item"].items():
        assert "input item holds ids" in outcome and "[0]" in outcome, outcome
    for way, outcome in outcomes["no batch dimension"].items():
        assert outcome != "ok" and "genres" in outcome, outcome


def test_vocabularies_must_name_model_inputs(tmp_path):
    data = pipelines.load("digits", setting=pipelines.Setting(dev_size=60))
    model = tfaux.AuxiliaryModel(tfaux.models.convnet4(), data.tasks, tfaux.strategies.STL(),
                                 input_spec=data.input_spec, num_examples=data.num_train)
    with pytest.raises(ValueError, match="user"):
        tfaux.export_primary(model, tmp_path / "sm", vocabularies={"user": [1, 2]})
