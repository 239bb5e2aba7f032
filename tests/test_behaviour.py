"""Known effects on real data."""

import keras
import numpy as np
import tensorflow as tf
from sklearn.metrics import roc_auc_score

import pipelines
import tfaux
from tfaux import schedule


def test_jtds_weights_separate_corrupted_from_clean_digits():
    """Seed 000, Fig. 3: with 40% uniformly corrupted primary labels the learned
    primary-task weights of corrupted examples are low (AUC >= 0.9)."""
    keras.utils.set_random_seed(0)
    data = pipelines.load("digits", setting=pipelines.Setting(noise_rate=0.4, dev_size=100, rotation=False))
    assert 0.39 < data.corrupted.mean() < 0.41
    model = tfaux.AuxiliaryModel(tfaux.models.convnet4(), data.tasks, tfaux.strategies.JTDS(),
                                 input_spec=data.input_spec, num_examples=data.num_train, upper_interval=2)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), upper_optimizer=keras.optimizers.Adam(0.1, epsilon=1e-12))
    model.fit(data.train_with_dev(64, 32), epochs=8, verbose=0)
    weights = schedule.example_weights(model, data.train_eval(256), data.num_train)[:, 0]
    auc = roc_auc_score(~data.corrupted, weights)
    assert auc >= 0.9, auc
