"""Known effects on real data."""

import keras
from sklearn.metrics import roc_auc_score

import pipelines
import tfaux
from tfaux import schedule


def test_jtds_defaults_separate_corrupted_from_clean_digits():
    """Seed 000, Fig. 3: with 40% uniformly corrupted primary labels the learned
    primary-task weights of corrupted examples are low. With the method's default upper
    update (the reference code's SGD 1e-2, momentum 0.9, clip 10, tfaux.upper) the
    clean-vs-corrupted AUC reaches 0.95 within 5 epochs (Adam(0.01), the old default,
    stays near 0.88 here)."""
    keras.utils.set_random_seed(0)
    data = pipelines.load("digits", setting=pipelines.Setting(noise_rate=0.4, dev_size=100, rotation=False))
    assert 0.39 < data.corrupted.mean() < 0.41
    model = tfaux.AuxiliaryModel(tfaux.models.convnet4(), data.tasks, tfaux.strategies.JTDS(),
                                 input_spec=data.input_spec, num_examples=data.num_train, upper_interval=2)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    assert isinstance(model.upper_optimizer, keras.optimizers.SGD)
    model.fit(data.train_with_dev(64, 32), epochs=5, verbose=0)
    weights = schedule.example_weights(model, data.train_eval(256), data.num_train)[:, 0]
    auc = roc_auc_score(~data.corrupted, weights)
    assert auc >= 0.95, auc
