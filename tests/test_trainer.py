import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import skip_where_capped_below
from omegaconf import OmegaConf

from seglab.config import reject_keras_class_weight
from seglab.core.class_weights import Weighting
from seglab.core.scores import scores_from_confusion
from seglab.data.datasets.shapes import shapes
from seglab.data.pipeline import batches
from seglab.losses import CrossEntropy, Dice, Lovasz
from seglab.training.callbacks import NonFiniteGuard
from seglab.training.checkpoints import Checkpointer
from seglab.training.model import build_unet
from seglab.training.prediction import predict_samples
from seglab.training.runtime import (
    FLOAT32,
    Precision,
    cgroup_quota,
    cpu_flags,
    resolve_precision,
    seed_everything,
    set_precision,
    usable_cores,
)
from seglab.training.trainer import Trainer

WEIGHTS = np.array([0.5, 1.0, 2.0, 3.0, 20.0], np.float32)


def fit_small(loss, epochs=2, jit_compile=False, **fit_kwargs):
    seed_everything(0)  # also turns off op determinism another test may have left on
    data = shapes(image_size=32, num_train=12, num_val=10, rare_image_fraction=0.6)
    model = build_unet(data.image_shape, data.num_classes, depth=2, base_filters=4)
    trainer = Trainer(
        lambda: keras.optimizers.Adam(3e-3), epochs=epochs, batch_size=4, jit_compile=jit_compile
    )
    seen = []
    records = trainer.fit(model, loss, data, on_epoch=seen.append, **fit_kwargs)
    return data, model, records, seen


def val_arrays(data):
    return (np.stack(x) for x in zip(*data.val.as_numpy_iterator(), strict=True))


@pytest.fixture(scope="module")
def fitted():
    """The small fit, and the logs Keras itself passed to callbacks at each epoch's end."""
    loss = CrossEntropy(ignore_index=255)
    logs = []
    keep = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, log: logs.append(dict(log)))
    return (*fit_small(loss, weighting=Weighting.for_loss(loss, WEIGHTS), callbacks=[keep]), logs)


def test_one_record_per_epoch_is_passed_to_on_epoch(fitted):
    _, _, records, seen, _ = fitted
    assert [r.epoch for r in records] == [1, 2]
    assert seen == records


def test_records_hold_the_losses_keras_reported_for_each_epoch(fitted):
    _, _, records, _, logs = fitted
    assert [r.train_loss for r in records] == pytest.approx([log["loss"] for log in logs])
    assert [r.val_loss for r in records] == pytest.approx([log["val_loss"] for log in logs])
    assert all(r.train_loss != r.val_loss for r in records)


def test_epoch_end_confusion_matrix_is_exactly_the_validation_set(fitted):
    """Guards the Keras ordering the recorder relies on: validation runs (metrics reset)
    right before on_epoch_end, so the matrix holds every val pixel and nothing else."""
    data, model, records, _, _ = fitted
    images, masks = val_arrays(data)
    predicted = model.predict(images, verbose=0).argmax(-1)
    expected = np.zeros((5, 5), np.int64)
    np.add.at(expected, (masks.ravel(), predicted.ravel()), 1)
    np.testing.assert_array_equal(records[-1].confusion, expected)
    assert records[-1].confusion.sum() == data.num_val * 32 * 32
    np.testing.assert_array_equal(records[-1].scores.iou, scores_from_confusion(expected).iou)


def test_val_loss_is_the_weighted_objective_and_val_ce_the_unweighted_ce(fitted):
    data, model, records, _, _ = fitted
    images, masks = val_arrays(data)
    probs = model.predict(images, verbose=0)
    weighted = keras.losses.SparseCategoricalCrossentropy()(masks, probs, WEIGHTS[masks])
    plain = keras.losses.SparseCategoricalCrossentropy()(masks, probs)
    # Keras averages batch losses weighted by batch size; batches of 4, 4, 2 of equal pixels
    # make that the pixel mean.
    assert records[-1].val_loss == pytest.approx(float(weighted), rel=1e-4)
    assert records[-1].val_ce == pytest.approx(float(plain), rel=1e-4)
    evaluated = model.evaluate(
        batches(data.val, 4, class_weights=WEIGHTS), verbose=0, return_dict=True
    )
    assert records[-1].val_loss == pytest.approx(evaluated["loss"], rel=1e-5)


def test_loss_share_is_each_true_class_fraction_of_the_val_loss(fitted):
    data, model, records, _, _ = fitted
    images, masks = val_arrays(data)
    probs = model.predict(images, verbose=0)
    pixel = -np.log(np.clip(np.take_along_axis(probs, masks[..., None], -1)[..., 0], 1e-7, 1))
    weighted = pixel * WEIGHTS[masks]
    expected = np.array([weighted[masks == c].sum() for c in range(5)]) / weighted.sum()
    np.testing.assert_allclose(records[-1].loss_share, expected, rtol=1e-3)
    assert records[-1].loss_share.sum() == pytest.approx(1.0)


def test_region_loss_share_is_its_per_class_terms():
    data, model, records, _ = fit_small(Dice(ignore_index=255), epochs=1)
    images, masks = val_arrays(data)
    probs = model.predict(images, verbose=0)
    terms = np.zeros(5)
    for start in range(0, len(images), 4):  # Keras' batches: per-batch Dice, batch-size weighted
        sl = slice(start, start + 4)
        terms += np.asarray(Dice(ignore_index=255).per_class(masks[sl], probs[sl])) * len(
            images[sl]
        )
    np.testing.assert_allclose(records[-1].loss_share, terms / terms.sum(), rtol=1e-3)


def test_predict_samples_puts_images_with_the_preferred_class_first(fitted):
    data, model, _, _, _ = fitted
    images, truths, predictions = predict_samples(model, data, count=8, prefer_class=4)
    assert images.shape == (8, 32, 32, 3) and predictions.shape == truths.shape == (8, 32, 32)
    has_rare = [bool((t == 4).any()) for t in truths]
    assert has_rare == sorted(has_rare, reverse=True) and any(has_rare) and not all(has_rare)


KERAS_TRAP = "fails in Keras 3 with 'TypeError: only 0-dimensional arrays"


def test_keras_class_weight_is_rejected_with_the_reason_and_the_alternative():
    trainer = OmegaConf.create({"trainer": {"class_weight": {0: 1.0}}})
    with pytest.raises(ValueError, match=KERAS_TRAP) as error:
        reject_keras_class_weight(OmegaConf.to_container(trainer))
    assert "config key trainer.class_weight" in str(error.value)
    assert "class_weights=<none|inverse_frequency" in str(error.value)
    config = OmegaConf.create({"trainer": {"epochs": 1}, "loss": {"class_weight": [1, 2]}})
    with pytest.raises(ValueError, match=r"config key loss.class_weight: Keras' class_weight"):
        reject_keras_class_weight(OmegaConf.to_container(config))


def test_per_batch_weights_need_a_pixelwise_loss():
    with pytest.raises(ValueError, match=r"per_batch .* loss 'lovasz' takes no pixel weights"):
        fit_small(Lovasz(), epochs=1, weighting=Weighting.for_loss(Lovasz(), per_batch=True))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "trainer.epochs must be >= 1"),
        ({"batch_size": 0}, "trainer.batch_size"),
        (
            {"jit_compile": True, "deterministic": True},
            "trainer.jit_compile=true and trainer.deterministic=true: Keras turns XLA off",
        ),
        ({"steps_per_execution": 0}, "trainer.steps_per_execution must be >= 1, got 0"),
        ({"seed": -1}, r"trainer.seed must be in \[0, 2\*\*32 - 1\], got -1"),
        ({"seed": 2**32}, r"trainer.seed must be in \[0, 2\*\*32 - 1\], got 4294967296"),
    ],
)
def test_trainer_rejects_bad_settings_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Trainer(lambda: keras.optimizers.Adam(), **kwargs)


@pytest.mark.parametrize("rate", [-0.1, 0, 0.0, float("inf"), float("nan"), "abc", True])
def test_a_learning_rate_that_is_not_a_positive_number_is_named(rate):
    from functools import partial

    with pytest.raises(ValueError, match=r"trainer.optimizer.learning_rate must be a number > 0"):
        Trainer(partial(keras.optimizers.Adam, learning_rate=rate))


@pytest.mark.parametrize(("rate", "expected"), [(1, 1.0), (3e-3, 3e-3)])
def test_a_numeric_learning_rate_reaches_keras_as_a_float(rate, expected):
    from functools import partial

    optimizer = Trainer(partial(keras.optimizers.SGD, learning_rate=rate, momentum=0.5)).optimizer()
    assert isinstance(optimizer, keras.optimizers.SGD)
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(expected)
    assert optimizer.momentum == 0.5


def test_the_training_step_is_traced_once(monkeypatch):
    # Keras builds the optimizer inside the first traced step under the default strategy, and
    # TensorFlow traces a step that made variables a second time: ~1 s more per run, at start.
    traces = []
    step = keras.Model.train_step

    def counted(self, data):
        traces.append(1)  # Python runs only while TensorFlow traces the step
        return step(self, data)

    monkeypatch.setattr(keras.Model, "train_step", counted)
    fit_small(CrossEntropy(ignore_index=255))
    assert len(traces) == 1


def test_a_learning_rate_schedule_passes_unchanged():
    from functools import partial

    schedule = keras.optimizers.schedules.ExponentialDecay(1e-2, decay_steps=10, decay_rate=0.5)
    factory = partial(keras.optimizers.Adam, learning_rate=schedule)
    assert Trainer(factory).optimizer is factory


def test_mixed_precision_trains_with_loss_scaling_and_float32_outputs():
    skip_where_capped_below("float16")
    set_precision(Precision("float16", "test"))
    try:
        _, model, records, _ = fit_small(CrossEntropy(ignore_index=255), epochs=1)
        assert model.layers[1].compute_dtype == "float16"
        assert model.output.dtype == "float32"
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert np.isfinite(records[-1].val_loss)
    finally:
        set_precision(FLOAT32)
    assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.slow
def test_xla_compiled_training_gives_the_same_history():
    # trainer.jit_compile=true compiles the train and test steps, the streaming metrics with
    # them; the numbers must not change beyond float reassociation. Lovasz: the loss with the
    # least common ops (sort, gather, cumsum).
    _, _, plain, _ = fit_small(Lovasz(ignore_index=255))
    _, model, compiled, _ = fit_small(Lovasz(ignore_index=255), jit_compile=True)
    assert model.jit_compile  # Keras falls back to no XLA silently when it must
    for a, b in zip(plain, compiled, strict=True):
        np.testing.assert_allclose(b.train_loss, a.train_loss, rtol=1e-3)
        np.testing.assert_allclose(b.val_loss, a.val_loss, rtol=1e-3)
        assert np.abs(b.confusion - a.confusion).sum() <= 0.01 * a.confusion.sum()
        np.testing.assert_allclose(b.loss_share, a.loss_share, atol=1e-3)


def test_a_swallowed_stop_signal_still_ends_training_at_the_next_batch(monkeypatch):
    # Python only prints a KeyboardInterrupt raised inside a __del__; the guard raises it again.
    import signal

    from seglab import signals

    monkeypatch.setattr(signals, "_received", signal.SIGTERM)
    seen = []
    with pytest.raises(KeyboardInterrupt, match="signal 15"):
        fit_small(
            CrossEntropy(255),
            epochs=2,
            callbacks=[
                keras.callbacks.LambdaCallback(
                    on_train_batch_begin=lambda batch, logs: seen.append(batch)
                )
            ],
        )
    assert seen == [0]  # stopped at the end of the first batch


@pytest.mark.parametrize(
    ("hook", "logs", "message"),
    [
        ("on_train_batch_end", {"loss": float("nan")}, "training loss became nan at batch 4 of"),
        ("on_train_batch_end", {"loss": float("inf")}, "training loss became inf at batch 4 of"),
        ("on_train_batch_end", {"loss": -float("inf")}, "training loss became -inf at batch 4"),
        ("on_epoch_end", {"val_loss": float("inf")}, "validation loss became inf at epoch 4"),
        ("on_epoch_end", {"val_loss": float("nan")}, "validation loss became nan at epoch 4"),
    ],
)
def test_a_non_finite_loss_stops_training_saying_which_and_where(hook, logs, message):
    guard = NonFiniteGuard()
    guard.on_epoch_begin(1)
    getattr(guard, hook)(3, {"loss": 0.5, "val_loss": 0.5})  # finite: nothing happens
    with pytest.raises(FloatingPointError, match=message):
        getattr(guard, hook)(3, logs)


class Clock:
    """``time.perf_counter`` at the seconds a test names."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Stream(__import__("io").StringIO):
    def __init__(self, terminal: bool) -> None:
        super().__init__()
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


def progress_of(monkeypatch, terminal: bool, every: float, times: list[float]):
    """What :class:`Progress` writes over one epoch of 10 steps ending at ``times``."""
    from seglab.training import callbacks

    clock = Clock()
    monkeypatch.setattr(callbacks.time, "perf_counter", clock)
    stream = Stream(terminal)
    progress = callbacks.Progress(3, every, stream)
    progress.set_params({"steps": 10, "epochs": 3})
    progress.on_epoch_begin(0)
    for step, now in enumerate(times):
        clock.now = now
        progress.on_train_batch_end(step, {"loss": 0.5})
    progress.on_epoch_end(0)
    return stream.getvalue()


def test_off_a_terminal_progress_prints_a_line_every_so_many_seconds_and_none_for_short_epochs(
    monkeypatch,
):
    assert progress_of(monkeypatch, False, 30, [10, 31, 40, 62]) == (
        "epoch 1/3  step 2/10  31s, ~2m04s left  train/loss 0.5000\n"
        "epoch 1/3  step 4/10  1m02s, ~1m33s left  train/loss 0.5000\n"
    )
    assert progress_of(monkeypatch, False, 30, [1, 2, 3, 29]) == ""  # a short epoch: nothing
    assert progress_of(monkeypatch, False, 0, [100, 200]) == ""  # 0: never


def test_on_a_terminal_progress_rewrites_one_line_and_clears_it_for_the_epoch_line(monkeypatch):
    written = progress_of(monkeypatch, True, 0, [0.2, 0.6, 4000.0])
    first = "epoch 1/3  step 2/10  1s, ~2s left  train/loss 0.5000"
    second = "epoch 1/3  step 3/10  1h06m, ~2h35m left  train/loss 0.5000"  # 4000 s, 9333 s
    assert written == (
        "\r" + first + "\r" + second.ljust(len(first)) + "\r" + " " * len(second) + "\r"
    )


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0.4, "0s"), (59.6, "1m00s"), (125, "2m05s"), (3725, "1h02m")]
)
def test_durations_read_as_a_person_would_say_them(seconds, shown):
    from seglab.training.callbacks import duration

    assert duration(seconds) == shown


@pytest.mark.parametrize(
    ("requested", "gpus", "flags", "environ", "name"),
    [
        ("auto", [], {"avx512f", "avx512_bf16"}, {}, "bfloat16"),  # AMD EPYC (Zen 4), Cooper Lake
        ("auto", [], {"avx512f", "amx_bf16", "amx_tile"}, {}, "bfloat16"),  # Sapphire Rapids
        ("auto", [], {"avx512f", "avx2"}, {}, "float32"),  # Skylake, Ice Lake: no bfloat16 unit
        ("auto", [], set(), {}, "float32"),  # no /proc/cpuinfo
        # oneDNN off or capped below its bfloat16 kernels: float32, whatever the CPU has
        ("auto", [], {"avx512_bf16"}, {"TF_ENABLE_ONEDNN_OPTS": "0"}, "float32"),
        ("auto", [], {"avx512_bf16"}, {"TF_ENABLE_ONEDNN_OPTS": "1"}, "bfloat16"),
        ("auto", [], {"avx512_bf16"}, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, "float32"),
        ("auto", [], {"avx512_bf16"}, {"ONEDNN_MAX_CPU_ISA": "avx512_core"}, "float32"),
        ("auto", [], {"avx512_bf16"}, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, "bfloat16"),
        ("auto", [], {"amx_bf16"}, {"ONEDNN_MAX_CPU_ISA": "ALL"}, "bfloat16"),
        ("auto", [(8, 0)], set(), {}, "bfloat16"),  # A100
        ("auto", [(8, 0)], set(), {"TF_ENABLE_ONEDNN_OPTS": "0"}, "bfloat16"),  # oneDNN: CPU only
        ("auto", [(7, 5)], {"avx512_bf16"}, {}, "float16"),  # T4: the GPU decides
        ("auto", [(9, 0), (7, 0)], set(), {}, "float16"),  # one GPU without bfloat16
        ("float32", [(8, 0)], {"avx512_bf16"}, {}, "float32"),
        ("bfloat16", [], set(), {"TF_ENABLE_ONEDNN_OPTS": "0"}, "bfloat16"),  # asked: as asked
        ("float16", [], set(), {}, "float16"),
    ],
)
def test_the_precision_is_the_one_asked_or_the_fastest_the_hardware_computes(
    requested, gpus, flags, environ, name
):
    precision = resolve_precision(requested, gpus, flags, environ)
    assert precision.name == name
    assert precision.policy == {"float32": "float32"}.get(name, f"mixed_{name}")
    assert precision.reason.startswith("auto: " if requested == "auto" else "trainer.precision=")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n\nflags\t: other\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx512f", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == set()


def test_an_unknown_precision_is_named_with_the_choices():
    with pytest.raises(ValueError, match=r"trainer.precision='fp8'.*auto.*float32.*bfloat16"):
        Trainer(lambda: keras.optimizers.Adam(), precision="fp8")


def test_bfloat16_trains_checkpoints_and_reloads_predicting_float32(tmp_path):
    """Under bfloat16 the layers compute in bfloat16 over float32 variables without loss
    scaling; the probabilities, losses and metrics stay float32; a checkpoint restores and the
    saved model reloads with the same float32 predictions."""
    skip_where_capped_below("bfloat16")
    trainer = Trainer(lambda: keras.optimizers.Adam(3e-3), 1, 4, precision="bfloat16")
    trainer.prepare()
    data = shapes(image_size=32, num_train=8, num_val=8)
    with trainer.building():
        model = build_unet(data.image_shape, data.num_classes, depth=2, base_filters=4)
    assert keras.mixed_precision.global_policy().name == "float32"  # nothing else inherits it
    (record,) = trainer.fit(model, CrossEntropy(ignore_index=255), data)
    assert trainer.precision.name == "bfloat16"
    assert model.layers[1].compute_dtype == "bfloat16"
    assert {v.dtype for v in model.trainable_variables} == {"float32"}
    assert not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert np.isfinite(record.val_loss) and record.confusion.sum() > 0
    images = next(iter(batches(data.val, 4)))[0]
    predicted = np.asarray(model(images, training=False))
    assert predicted.dtype == np.float32
    Checkpointer(tmp_path).save(model, 1, {"val/min_iou": 0.1, "val/miou": 0.2})
    model.save(tmp_path / "model.keras")
    restored = build_unet(data.image_shape, data.num_classes, depth=2, base_filters=4)
    restored.compile(optimizer=keras.optimizers.Adam())
    Checkpointer(tmp_path).restore(restored)  # into a float32 model: the same variables
    np.testing.assert_array_equal(
        np.asarray(restored.trainable_variables[0]), np.asarray(model.trainable_variables[0])
    )
    reloaded = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    again = np.asarray(reloaded(images, training=False))
    assert again.dtype == np.float32
    np.testing.assert_array_equal(again, predicted)


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "150000 100000\n"}, 1.5),  # cgroup v2: 1.5 cores
        ({"cpu.max": "max 100000\n"}, None),  # unlimited
        ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),  # no cgroup files
        ({"cpu.max": "garbled\n"}, None),
    ],
)
def test_the_cgroup_quota_is_read_in_cores(tmp_path, files, quota):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_quota(tmp_path) == quota


def test_the_usable_cores_are_the_affinity_capped_by_the_quota_rounded_up(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    assert usable_cores(tmp_path) == affinity  # no quota
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert usable_cores(tmp_path) == 1  # half a core still gets a thread
    (tmp_path / "cpu.max").write_text(f"{(affinity + 3) * 100000} 100000\n")
    assert usable_cores(tmp_path) == affinity  # a quota above the affinity changes nothing


def test_prepare_sizes_tensorflows_threads_to_the_usable_cores():
    trainer = Trainer(lambda: keras.optimizers.Adam(), precision="float32")
    trainer.prepare()
    # the suite's process started TensorFlow long ago: the pools keep their first size
    assert trainer.threads == tf.config.threading.get_intra_op_parallelism_threads()
    assert trainer.threads in (0, usable_cores())


@pytest.mark.parametrize("threads", [0, -2, "many", 1.5])
def test_a_bad_thread_count_is_named(threads):
    with pytest.raises(
        ValueError, match=rf"trainer.threads must be 'auto' or an integer >= 1, got {threads!r}"
    ):
        Trainer(lambda: keras.optimizers.Adam(), threads=threads)
