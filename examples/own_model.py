"""Your own Keras model and numpy data, three tfaux methods, the Keras way.

A functional Keras model with two outputs (the digit, the primary task, and whether it is even,
an auxiliary task) is trained on scikit-learn's digits by JTDS (a learned task-data schedule),
GradNorm and PCGrad; each run is saved as a .keras file, loaded back, exported as a SavedModel
and served on the raw 0-16 pixel values.

    python examples/own_model.py [epochs] [output_dir]
"""

import sys
import tempfile

import keras
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import tfaux


def network():
    """Pixels 0-16 in; scaling is a layer of the model, so the served model takes raw pixels."""
    image = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Rescaling(1 / 16)(image)
    h = keras.layers.Conv2D(16, 3, activation="relu", padding="same")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(64, activation="relu", name="trunk")(h)
    digit = keras.layers.Dense(10, activation="softmax", name="digit")(h)
    even = keras.layers.Dense(1, activation="sigmoid", name="even")(h)
    return keras.Model(image, {"digit": digit, "even": even})


def main(epochs=10, output_dir=None):
    output_dir = output_dir or tempfile.mkdtemp()
    digits = load_digits()
    x = digits.images.astype("float32")[..., None]
    y = {"digit": digits.target, "even": (digits.target % 2 == 0).astype("float32")}
    split = train_test_split(np.arange(len(x)), test_size=0.2, random_state=0, stratify=digits.target)
    train, test = split
    y_train = {k: v[train] for k, v in y.items()}
    y_test = {k: v[test] for k, v in y.items()}
    results = {}
    for method in ("jtds", "gradnorm", "pcgrad"):
        keras.utils.set_random_seed(0)
        model = tfaux.AuxiliaryModel.from_keras(network(), primary="digit", method=method, upper_interval=5)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics={"digit": ["accuracy"]})
        model.fit(x[train], y_train, validation_split=0.1, epochs=epochs, batch_size=32, verbose=0)
        accuracy = model.evaluate(x[test], y_test, verbose=0, return_dict=True)["digit_accuracy"]

        path = f"{output_dir}/{method}.keras"
        model.save(path)
        loaded = keras.models.load_model(path)
        same = np.array_equal(model.predict(x[test], verbose=0)["digit"],
                              loaded.predict(x[test], verbose=0)["digit"])

        loaded.export(f"{output_dir}/{method}_served")
        serve = tfaux.load_serving(f"{output_dir}/{method}_served")
        served = np.mean(np.argmax(serve(x[test])["prediction"], 1) == y_test["digit"])
        results[method] = dict(accuracy=accuracy, served_accuracy=float(served), same_after_loading=same)
        print(f"{method}: test accuracy {accuracy:.4f}, served on raw pixels {served:.4f}, "
              f"identical after loading: {same}")
    return results


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10, sys.argv[2] if len(sys.argv) > 2 else None)
