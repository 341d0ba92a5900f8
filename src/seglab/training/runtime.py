"""Where and how a run computes: seeds, numeric precision and the ``tf.distribute`` strategy."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # disable_op_determinism: no API

from seglab.core.checks import check_choice


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seeds Python, NumPy and TensorFlow; ``deterministic`` also makes TF ops deterministic.

    With both, the same seed on the same machine and TensorFlow build gives the same per-class
    IoU history. Without op determinism, parallel reductions may differ in the last bits.
    """
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    else:  # the jobs of a multirun share this process: one job's setting must not leak on
        tf_config.disable_op_determinism()


PRECISIONS = ("auto", "float32", "bfloat16", "float16")
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo's names
# oneDNN's instruction-set caps (ONEDNN_MAX_CPU_ISA), oldest first, up to its float16 kernels.
ONEDNN_ISAS = (
    "SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2",
    "AVX512_CORE", "AVX512_CORE_VNNI", "AVX512_CORE_BF16", "AVX512_CORE_FP16",
)  # fmt: skip


def onednn_capped_below(isa: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``ONEDNN_MAX_CPU_ISA`` (in ``environ``, default this process's) caps oneDNN
    below ``isa``, one of :data:`ONEDNN_ISAS` (a cap it does not list, or none, does not)."""
    cap = (os.environ if environ is None else environ).get("ONEDNN_MAX_CPU_ISA", "").upper()
    return cap in ONEDNN_ISAS[: ONEDNN_ISAS.index(isa)]


@dataclass(frozen=True)
class Precision:
    """The precision a run computes in, and why it was chosen."""

    name: str  # float32, bfloat16 or float16
    reason: str

    @property
    def policy(self) -> str:
        """Keras' dtype policy: ``mixed_*`` computes in ``name`` and keeps float32 variables."""
        return POLICIES[self.name]


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The instruction-set flags of this machine's CPU (empty where ``cpuinfo`` is missing)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def gpu_capabilities() -> list[tuple[int, int]]:
    """The CUDA compute capability of each visible GPU."""
    details = (
        tf.config.experimental.get_device_details(gpu)
        for gpu in tf.config.list_physical_devices("GPU")
    )
    return [tuple(d.get("compute_capability", (0, 0))) for d in details]


def resolve_precision(
    requested: str,
    gpus: Sequence[tuple[int, int]] | None = None,
    flags: set[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Precision:
    """``trainer.precision``: ``float32``, ``bfloat16``, ``float16`` as asked, or for ``auto``
    bfloat16 where the hardware computes it (GPUs of compute capability 8.0 or later; CPUs with
    AVX512-BF16 or AMX, through oneDNN), float16 on older GPUs and float32 otherwise.

    On a CPU, bfloat16 is fast only through oneDNN's kernels: with oneDNN off
    (``TF_ENABLE_ONEDNN_OPTS=0``) TensorFlow's own took 8.5x float32's time per step of the
    CamVid experiment's U-Net, and with oneDNN capped below its bfloat16 instructions
    (``ONEDNN_MAX_CPU_ISA``) TensorFlow still sends bfloat16 to oneDNN, which then has no kernel
    for it. ``auto`` is float32 in both cases.

    Args:
        requested: One of :data:`PRECISIONS`.
        gpus: The GPUs' compute capabilities (default: this machine's).
        flags: The CPU's flags (default: this machine's).
        environ: The environment oneDNN reads (default: this process's).
    """
    check_choice("trainer.precision", requested, PRECISIONS)
    if requested != "auto":
        return Precision(requested, f"trainer.precision={requested}")
    gpus = gpu_capabilities() if gpus is None else gpus
    if gpus:
        if min(gpus) >= (8, 0):
            return Precision("bfloat16", "auto: GPUs of compute capability >= 8.0")
        return Precision("float16", "auto: a GPU of compute capability < 8.0 (no bfloat16)")
    found = sorted((cpu_flags() if flags is None else flags) & set(BF16_CPU_FLAGS))
    if not found:
        return Precision(
            "float32", "auto: this CPU has no bfloat16 instructions (AVX512-BF16, AMX)"
        )
    environ = os.environ if environ is None else environ
    if environ.get("TF_ENABLE_ONEDNN_OPTS") == "0":
        return Precision("float32", "auto: oneDNN is off (TF_ENABLE_ONEDNN_OPTS=0)")
    if onednn_capped_below("AVX512_CORE_BF16", environ):
        cap = environ["ONEDNN_MAX_CPU_ISA"].upper()
        return Precision(
            "float32", f"auto: oneDNN is capped below bfloat16 (ONEDNN_MAX_CPU_ISA={cap})"
        )
    return Precision("bfloat16", f"auto: this CPU has {found[0].upper()}")


def set_precision(precision: Precision) -> None:
    """Sets Keras' global dtype policy for the models built after this call (a run sets it only
    while it builds its model: :meth:`seglab.training.trainer.Trainer.building`).

    Under ``mixed_float16`` Keras wraps the optimizer in a ``LossScaleOptimizer`` at compile
    (bfloat16 has float32's range and needs none); the U-Net's output activation, seglab's
    losses and metrics compute in float32.
    """
    keras.mixed_precision.set_global_policy(precision.policy)


FLOAT32 = Precision("float32", "trainer.precision=float32")


@contextmanager
def built_in(precision: Precision) -> Iterator[None]:
    """Context in which the models built compute in ``precision``; Keras' global dtype policy
    is set back on leaving (the layers keep theirs, so nothing built later inherits it)."""
    previous = keras.mixed_precision.global_policy()
    set_precision(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def usable_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may keep busy: its CPU affinity, capped by the CPU quota of its
    cgroup (v2 ``cpu.max``, or v1 ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``), rounded up:
    what a container or a SLURM job grants, where the host's core count would oversubscribe."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = cgroup_quota(cgroup)
    return max(1, min(cores or 1, math.ceil(quota) if quota else cores or 1))


def cgroup_quota(cgroup: Path) -> float | None:
    """The cgroup's CPU quota in cores, ``None`` when unlimited or unreadable."""
    try:
        if (cgroup / "cpu.max").exists():
            limit, _, period = (cgroup / "cpu.max").read_text().strip().partition(" ")
        else:
            limit = (cgroup / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (cgroup / "cpu" / "cpu.cfs_period_us").read_text().strip()
        if limit in ("max", "-1"):
            return None
        return int(limit) / int(period or 100_000)
    except (OSError, ValueError):
        return None


def set_threads(cores: int) -> int:
    """TensorFlow's intra- and inter-op thread pools sized to ``cores`` (the default sizes them
    to the host), before TensorFlow starts; a later call with other sizes keeps the first (the
    pools cannot change once made). Returns the intra-op threads in use."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(cores)
        tf.config.threading.set_inter_op_parallelism_threads(cores)
    except RuntimeError:  # a job of a multirun after one that set other sizes
        pass
    return int(tf.config.threading.get_intra_op_parallelism_threads())


STRATEGIES = ("default", "mirrored")
MULTI_WORKER_ERROR = (
    "trainer.strategy='multi_worker' is not available: Keras 3's model.fit fails under "
    "tf.distribute.MultiWorkerMirroredStrategy ('Attempt to convert a value (PerReplica...)', "
    "keras-team/keras#20585, tensorflow/tensorflow#72388; reproduced here with two workers, "
    "see tests/test_strategy.py). Use trainer.strategy=mirrored for several devices of one "
    "host, and a Hydra launcher (hydra/launcher=slurm) to spread a sweep's jobs over hosts."
)


def check_strategy(name: str) -> None:
    """Raises naming ``trainer.strategy`` unless ``name`` is one of :data:`STRATEGIES`."""
    if name == "multi_worker":
        raise ValueError(MULTI_WORKER_ERROR)
    check_choice("trainer.strategy", name, STRATEGIES)


def distribution_strategy(name: str) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy called ``name`` (one of :data:`STRATEGIES`).

    ``mirrored`` replicates the model on every GPU, or on every logical CPU device when there is
    no GPU (how the tests run it on CPU).
    """
    check_strategy(name)
    if name == "default":
        return tf.distribute.get_strategy()
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in devices])
