"""Dense (per-pixel) tasks: losses and metrics against numpy on hand-made maps, the loss images of
the protocol (Context.loss_maps), the SegNet backbone, and NYUv2-shaped training through
AuxiliaryModel.fit with a single-level and a bi-level method."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_pipelines_nyuv2 import make_nyuv2

import pipelines
import tfaux
from tfaux import strategies
from tfaux.models import segnet
from tfaux.models.segnet import MaxPoolWithMask, MaxUnpool

RNG = np.random.default_rng(0)


def np_log_softmax(o):
    o = o - o.max(-1, keepdims=True)
    return o - np.log(np.exp(o).sum(-1, keepdims=True))


def np_pixel_losses(kind, labels, outputs):
    """(per-pixel loss, validity) in numpy, MTAN's conventions."""
    outputs = np.asarray(outputs, np.float64)
    if kind == "dense_classification":
        valid = labels != -1
        ls = np_log_softmax(outputs)
        loss = -np.take_along_axis(ls, np.where(valid, labels, 0)[..., None], -1)[..., 0]
    else:
        valid = np.any(labels != 0, -1)
        if kind == "dense_regression":
            loss = np.abs(outputs - labels).sum(-1)
        else:
            unit = lambda v: v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)  # noqa: E731
            loss = 1.0 - (unit(outputs) * unit(labels)).sum(-1)
    return np.where(valid, loss, 0.0), valid


def per_example(loss, valid):
    return loss.sum((1, 2)) / np.maximum(valid.sum((1, 2)), 1)


# ---------------------------------------------------------------- losses
def test_dense_classification_loss_ignores_unlabelled_pixels():
    task = tfaux.Task("seg", role="primary", kind="dense_classification", num_classes=3)
    logits = np.array([[[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
                        [[0.0, 0.0, 3.0], [1.0, 1.0, 1.0]]],
                       [[[0.0, 0.0, 0.0], [5.0, 0.0, 0.0]],
                        [[0.0, 2.0, 0.0], [0.0, 0.0, 0.0]]]], np.float32)  # [2, 2, 2, 3]
    labels = np.array([[[0, -1], [2, 1]], [[-1, -1], [-1, -1]]])  # example 1 has no labelled pixel
    pixels, loss = task.dense_losses(tf.constant(labels), tf.constant(logits))
    # by hand: -log softmax; e.g. pixel (0,0,0): -log(e^2 / (e^2 + 2))
    by_hand = np.array([[[-np.log(np.e ** 2 / (np.e ** 2 + 2)), 0.0],
                         [-np.log(np.e ** 3 / (np.e ** 3 + 2)), -np.log(1 / 3)]],
                        [[0.0, 0.0], [0.0, 0.0]]])
    np.testing.assert_allclose(pixels, by_hand, rtol=1e-6)
    np.testing.assert_allclose(loss, [by_hand[0].sum() / 3, 0.0], rtol=1e-6)
    np.testing.assert_allclose(task.per_example_loss(labels, logits), loss)
    y = np.where(RNG.random((3, 4, 5)) < 0.3, -1, RNG.integers(0, 3, (3, 4, 5)))
    o = RNG.normal(size=(3, 4, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(task.per_example_loss(y, o), per_example(*np_pixel_losses(task.kind, y, o)),
                               rtol=1e-5)


def test_depth_loss_is_l1_over_pixels_with_nonzero_depth():
    task = tfaux.Task("depth", kind="dense_regression")
    depth = np.array([[[[1.0], [0.0]], [[2.0], [4.0]]]], np.float32)  # [1, 2, 2, 1], one missing pixel
    pred = np.array([[[[1.5], [9.0]], [[1.0], [4.0]]]], np.float32)
    pixels, loss = task.dense_losses(depth, pred)
    np.testing.assert_allclose(pixels[0], [[0.5, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(loss, [(0.5 + 1.0 + 0.0) / 3])


def test_normal_loss_is_one_minus_cosine_over_valid_pixels():
    task = tfaux.Task("normal", kind="dense_normal")
    target = np.array([[[[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]],
                        [[1.0, 0.0, 0.0], [0.0, 0.6, 0.8]]]], np.float32)
    pred = np.array([[[[0.0, 0.0, 5.0], [1.0, 1.0, 1.0]],
                      [[0.0, 2.0, 0.0], [0.0, -3.0, -4.0]]]], np.float32)  # cos 1, (invalid), 0, -1
    pixels, loss = task.dense_losses(target, pred)
    np.testing.assert_allclose(pixels[0], [[0.0, 0.0], [1.0, 2.0]], atol=1e-6)
    np.testing.assert_allclose(loss, [3.0 / 3], rtol=1e-6)
    # MTAN's dot-product loss 1 - <pred / |pred|, target> equals it for unit targets
    t = RNG.normal(size=(2, 3, 4, 3))
    t /= np.linalg.norm(t, axis=-1, keepdims=True)
    p = RNG.normal(size=(2, 3, 4, 3)).astype(np.float32)
    mtan = 1.0 - (p / np.linalg.norm(p, axis=-1, keepdims=True) * t).sum(-1)
    np.testing.assert_allclose(task.pixel_losses(t.astype(np.float32), p)[0], mtan, rtol=1e-5, atol=1e-6)


def test_dense_task_kinds_roles_and_heads():
    with pytest.raises(ValueError, match="primary \\(target\\) task must be one of"):
        tfaux.Task("depth", role="primary", kind="dense_regression")
    with pytest.raises(ValueError, match="num_classes >= 2"):
        tfaux.Task("seg", role="primary", kind="dense_classification", num_classes=1)
    with pytest.raises(ValueError, match="mix accuracy and mIoU"):
        tfaux.target_tasks([tfaux.Task("seg", role="primary", kind="dense_classification", num_classes=3),
                            tfaux.Task("c", role="primary", num_classes=3)])
    seg = tfaux.Task("seg", role="primary", kind="dense_classification", num_classes=5, head_units=(6,))
    head = seg.make_head()
    assert head(tf.zeros((2, 4, 6, 8))).shape == (2, 4, 6, 5)
    assert [type(layer).__name__ for layer in head.layers] == ["Conv2D", "Conv2D"]
    assert [layer.kernel_size for layer in head.layers] == [(3, 3), (1, 1)]
    assert tfaux.Task("n", kind="dense_normal").make_head()(tf.zeros((1, 2, 2, 4))).shape == (1, 2, 2, 3)
    normals = tfaux.Task("n", kind="dense_normal").prediction(tf.constant([[[[3.0, 0.0, 4.0]]]]))
    np.testing.assert_allclose(normals, [[[[0.6, 0.0, 0.8]]]], rtol=1e-6)


# ---------------------------------------------------------------- metrics
def np_confusion(y, pred, weight, c):
    cm = np.zeros((c, c))
    np.add.at(cm, (y[weight > 0], pred[weight > 0]), weight[weight > 0])
    return cm


def test_miou_and_pixel_accuracy_against_numpy():
    c = 4  # class 3 never occurs in labels or predictions: it does not count in the mean
    seg = tfaux.Task("seg", role="primary", kind="dense_classification", num_classes=c)
    miou, accuracy = seg.make_metric(), seg.make_extra_metrics()[0]
    assert (miou.name, accuracy.name) == ("seg_miou", "seg_pixel_accuracy")
    cm = np.zeros((c, c))
    for _ in range(2):  # two batches: the confusion matrix accumulates
        y = np.where(RNG.random((3, 5, 6)) < 0.25, -1, RNG.integers(0, 3, (3, 5, 6)))
        logits = RNG.normal(size=(3, 5, 6, c)).astype(np.float32)
        logits[..., 3] = -10.0
        mask = np.array([1.0, 0.0, 1.0], np.float32)  # the middle example is unlabelled
        for m in (miou, accuracy):
            m.update_state(tf.constant(y), tf.constant(logits), sample_weight=tf.constant(mask))
        weight = (y != -1) * mask[:, None, None]
        cm += np_confusion(np.where(y < 0, 0, y), logits.argmax(-1), weight, c)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    present = union > 0
    assert not present[3]
    expected = np.mean(np.diag(cm)[present] / union[present])
    np.testing.assert_allclose(float(miou.result()), expected, rtol=1e-6)
    np.testing.assert_allclose(float(accuracy.result()), np.trace(cm) / cm.sum(), rtol=1e-6)
    assert float(miou.count) == cm.sum()


# ---------------------------------------------------------------- SegNet
def test_segnet_pooling_keeps_the_first_maximum_and_unpools_to_it():
    x = np.array([[1.0, 3.0, 0.0, 0.0],
                  [3.0, 2.0, 0.0, 0.0],
                  [5.0, 1.0, -1.0, 2.0],
                  [0.0, 5.0, 2.0, 2.0]], np.float32)[None, :, :, None]
    pooled, mask = MaxPoolWithMask()(tf.constant(x))
    np.testing.assert_array_equal(pooled[0, :, :, 0], [[3.0, 0.0], [5.0, 2.0]])
    up = MaxUnpool()(pooled, mask)[0, :, :, 0]  # ties: the first in row-major order, as PyTorch
    np.testing.assert_array_equal(up, [[0.0, 3.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0],
                                       [5.0, 0.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    with tf.GradientTape() as tape:
        xt = tf.constant(x)
        tape.watch(xt)
        y, _ = MaxPoolWithMask()(xt)
        weighted = tf.reduce_sum(y * tf.constant([[[[1.0], [2.0]], [[3.0], [4.0]]]]))
    grad = tape.gradient(weighted, xt)[0, :, :, 0]
    np.testing.assert_array_equal(grad, [[0, 1, 2, 0], [0, 0, 0, 0], [3, 0, 0, 4], [0, 0, 0, 0]])


def test_segnet_shapes_and_levels():
    net = segnet((8, 12, 3), filters=(4, 8))
    assert net(tf.zeros((2, 8, 12, 3))).shape == (2, 8, 12, 4)
    convs = [layer for layer in net.layers if isinstance(layer, keras.Sequential)]
    assert [c.name for c in convs] == ["enc0_0", "enc0_1", "enc1_0", "enc1_1", "dec1_0", "dec1_1", "dec0_0", "dec0_1"]
    assert [c.layers[0].filters for c in convs] == [4, 4, 8, 8, 4, 4, 4, 4]
    with pytest.raises(ValueError, match="divisible by 8"):
        segnet((8, 12, 3), filters=(4, 8, 16))


# ---------------------------------------------------------------- loss images in the protocol
def dense_tasks():
    return [tfaux.Task("seg", role="primary", kind="dense_classification", num_classes=3, head_units=(4,)),
            tfaux.Task("depth", kind="dense_regression"), tfaux.Task("normal", kind="dense_normal")]


def dense_batch(b=3, h=4, w=8):
    seg = np.where(RNG.random((b, h, w)) < 0.3, -1, RNG.integers(0, 3, (b, h, w))).astype(np.int32)
    depth = RNG.uniform(1, 3, (b, h, w, 1)).astype(np.float32)
    depth[RNG.random((b, h, w)) < 0.3] = 0
    normal = RNG.normal(size=(b, h, w, 3)).astype(np.float32)
    normal[RNG.random((b, h, w)) < 0.3] = 0
    mask = {k: np.ones(b, np.float32) for k in ("seg", "depth", "normal")}
    mask["depth"][1] = 0.0
    return {"x": RNG.normal(size=(b, h, w, 3)).astype(np.float32),
            "labels": {"seg": seg, "depth": depth, "normal": normal}, "mask": mask, "id": np.arange(b)}


def dense_model(strategy, h=4, w=8):
    keras.utils.set_random_seed(0)
    return tfaux.AuxiliaryModel(segnet((h, w, 3), filters=(4, 8)), dense_tasks(), strategy,
                                tf.TensorSpec((h, w, 3), tf.float32), num_examples=8)


def test_loss_maps_are_the_per_pixel_losses_behind_the_loss_matrix():
    model = dense_model(strategies.Equal())
    batch = dense_batch()
    with tf.GradientTape() as tape:
        forward, context = model.context(batch, training=True)
        total = tf.reduce_sum(context.loss_maps)
    maps = context.loss_maps.numpy()
    assert maps.shape == (3, 4, 8, 3)
    for k, task in enumerate(model.tasks):
        pixels, valid = np_pixel_losses(task.kind, batch["labels"][task.name], forward.outputs[k].numpy())
        expected = pixels * batch["mask"][task.name][:, None, None]
        np.testing.assert_allclose(maps[..., k], expected, rtol=1e-5, atol=1e-6)
        # the loss matrix column is the mean of the map over each example's valid pixels
        np.testing.assert_allclose(context.live_losses[:, k], maps[..., k].sum((1, 2)) / valid.sum((1, 2)),
                                   rtol=1e-5)
        np.testing.assert_allclose(context.losses[:, k], per_example(pixels, valid) * batch["mask"][task.name],
                                   rtol=1e-5)
    assert not maps[1, ..., 1].any()  # depth is masked for example 1
    grads = tape.gradient(total, model.theta.shared)  # live w.r.t. theta
    assert all(g is not None for g in grads) and any(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def test_loss_maps_zero_for_idle_tasks_and_absent_for_non_dense_tasks():
    model = dense_model(strategies.STL())  # STL runs the target head only
    _, context = model.context(dense_batch())
    assert context.loss_maps.shape == (3, 4, 8, 3)
    assert context.loss_maps[..., 0].numpy().any() and not context.loss_maps[..., 1:].numpy().any()
    flat = tfaux.AuxiliaryModel(keras.Sequential([keras.layers.Dense(4)]),
                                [tfaux.Task("a", role="primary", num_classes=2), tfaux.Task("b", kind="binary")],
                                strategies.Equal(), tf.TensorSpec((5,), tf.float32))
    batch = {"x": RNG.normal(size=(4, 5)).astype(np.float32),
             "labels": {"a": np.array([0, 1, 1, 0]), "b": np.array([1.0, 0.0, 1.0, 1.0], np.float32)}}
    forward, context = flat.context(batch)
    assert context.loss_maps is None
    logits = forward.outputs[0].numpy().astype(np.float64)
    np.testing.assert_allclose(context.losses[:, 0], -np_log_softmax(logits)[np.arange(4), batch["labels"]["a"]],
                               rtol=1e-5)


# ---------------------------------------------------------------- training on NYUv2-shaped data
@pytest.fixture(scope="module")
def nyu(tmp_path_factory):
    root = tmp_path_factory.mktemp("nyuv2")
    make_nyuv2(root, n_train=16, n_val=4)
    return pipelines.load("nyuv2", str(root), pipelines.Setting(rotation=False, val_fraction=0.25, dev_size=2))


def nyu_model(data, strategy):
    keras.utils.set_random_seed(0)
    model = tfaux.AuxiliaryModel(segnet(data.input_spec.shape, filters=(4, 8)), data.tasks, strategy, data.input_spec,
                                 num_examples=data.num_train, upper_interval=2)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


def test_segnet_with_three_dense_heads_trains_with_equal_and_reports_miou(nyu):
    model = nyu_model(nyu, strategies.get("equal"))
    assert model.selection_metric == ("val_primary_miou", "max")
    logs = {k: v[-1] for k, v in model.fit(nyu.train(4), validation_data=nyu.val(4), epochs=1,
                                           verbose=0).history.items()}
    for key in ("primary_miou", "primary_pixel_accuracy", "val_primary_miou", "val_primary_pixel_accuracy"):
        assert 0.0 <= logs[key] <= 1.0, key
    for key in ("segmentation_loss", "depth_loss", "normal_loss", "val_segmentation_loss", "val_depth_loss"):
        assert np.isfinite(logs[key]) and logs[key] > 0, key
    # the reported test mIoU / pixel accuracy, recomputed in numpy from the model's predictions
    result = model.evaluate(nyu.test(3), verbose=0, return_dict=True)
    cm = np.zeros((13, 13))
    for batch in nyu.test(3):
        y = batch["labels"]["segmentation"].numpy()
        pred = model(batch["x"])["segmentation"].numpy().argmax(-1)
        cm += np_confusion(np.where(y < 0, 0, y), pred, (y >= 0).astype(float), 13)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    np.testing.assert_allclose(result["primary_miou"], np.mean(np.diag(cm)[union > 0] / union[union > 0]), rtol=1e-5)
    np.testing.assert_allclose(result["primary_pixel_accuracy"], np.trace(cm) / cm.sum(), rtol=1e-5)


def test_segnet_with_three_dense_heads_trains_with_auxilearn(nyu):
    model = nyu_model(nyu, strategies.get("auxilearn"))
    phi = [v.numpy().copy() for v in model.method.upper_variables]
    history = model.fit(nyu.train_with_dev(4), validation_data=nyu.val(4), epochs=1, verbose=0).history
    logs = {k: v[-1] for k, v in history.items()}
    assert 0.0 <= logs["val_primary_miou"] <= 1.0 and 0.0 <= logs["val_primary_pixel_accuracy"] <= 1.0
    assert np.isfinite(logs["hypergrad_norm"]) and logs["hypergrad_norm"] > 0  # an upper step ran (step 2 of 3)
    assert any(np.any(v.numpy() != p) for v, p in zip(model.method.upper_variables, phi))
