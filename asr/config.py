"""Typed, frozen configuration for features, model, losses and decoding.

Every checkpoint stores the resolved :class:`ModelConfig` (as a plain dict), so a checkpoint alone
rebuilds its model. YAML/CLI layers hold only overrides on top of these defaults.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = 16000  # Hz; audio at another rate is rejected, never silently misread
    num_mel_bins: int = 80  # log-mel filterbank channels
    frame_length_ms: float = 25.0  # analysis window
    frame_shift_ms: float = 10.0  # hop between frames
    dither: float = 0.0  # 0 at inference; training may add a little
    # Top edge of the mel filters; negative = offset below Nyquist. -400 is lhotse's Fbank (and
    # so icefall's); kaldi-native-fbank's own default (0 = Nyquist) moves the top bins by ~7 log units.
    mel_high_freq: float = -400.0

    @property
    def window_samples(self) -> int:
        return int(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def shift_samples(self) -> int:
        return int(self.sample_rate * self.frame_shift_ms / 1000)


@dataclass(frozen=True)
class MergeConfig:
    """Adjacent token merging (asr/model/merge.py) and the named granularities of one model.

    Each granularity is one value for every merge module: a cosine threshold (mode "threshold";
    1.0 merges nothing) or a fraction of tokens merged away per chunk (mode "ratio"; 0 merges
    nothing, at most 0.5). Matryoshka training runs every batch at each granularity and weighs
    their losses; at inference the granularity is chosen per request.
    """

    layers: tuple[int, ...] = ()  # Conformer blocks (0-based) with a merge module after attention; () = none
    mode: str = "threshold"  # "threshold" or "ratio"
    granularities: tuple[str, ...] = ("full",)  # names, finest first; the first is the default
    values: tuple[float, ...] = (1.0,)  # threshold or ratio of each granularity
    loss_weights: tuple[float, ...] = (1.0,)  # Matryoshka training weight of each granularity
    proportional_attention: bool = True  # add log(token size) to attention logits of merged keys

    def value_merges(self, value: float) -> bool:
        """Whether a threshold/ratio merges anything: a ratio above 0, a threshold below 1."""
        return value > 0.0 if self.mode == "ratio" else value < 1.0

    def merges(self, granularity: str) -> bool:
        """Whether this granularity merges any tokens."""
        return bool(self.layers) and self.value_merges(self.values[self.granularities.index(granularity)])


@dataclass(frozen=True)
class MoEConfig:
    """MoME-style mixture-of-experts feed-forward layers after the first merge point: top-k routed
    experts plus always-on shared experts, one router for every granularity."""

    enabled: bool = False
    num_experts: int = 4  # routed experts per layer
    top_k: int = 1  # routed experts per token
    num_shared: int = 1  # experts every token goes through
    expert_dim: int = 0  # hidden size of one expert; 0 = ff_dim / (top_k + num_shared): dense-equal active size
    balance_scale: float = 0.01  # weight of the load-balancing loss


@dataclass(frozen=True)
class EncoderConfig:
    num_features: int = 80  # input feature dimension (fbank bins)
    d_model: int = 256  # width of every Conformer block
    num_layers: int = 12  # Conformer blocks
    num_heads: int = 4  # attention heads; d_model must divide evenly
    ff_dim: int = 1024  # hidden size of each macaron feed-forward
    conv_kernel: int = 31  # causal depthwise conv kernel (frames after subsampling)
    subsampling_channels: int = 64  # channels of the 4x conv front-end
    dropout: float = 0.1
    rotary_base: float = 10000.0  # rotary position embedding base
    # Dynamic chunk training: with probability `full_context_prob` a batch sees full context,
    # otherwise a chunk size drawn from `train_chunk_sizes` and a left context drawn from
    # `train_left_chunks` (in chunks; -1 = unlimited).
    full_context_prob: float = 0.5
    train_chunk_sizes: tuple[int, ...] = (2, 4, 8, 16, 32)
    train_left_chunks: tuple[int, ...] = (-1, 2, 4, 8)
    merge: MergeConfig = field(default_factory=MergeConfig)
    moe: MoEConfig = field(default_factory=MoEConfig)


@dataclass(frozen=True)
class DecoderConfig:
    """Stateless prediction network: embedding of the last `context_size` tokens + a conv."""

    d_model: int = 256
    context_size: int = 2


@dataclass(frozen=True)
class JoinerConfig:
    d_joiner: int = 256  # width of the joint space before the output layer


@dataclass(frozen=True)
class LossConfig:
    s_range: int = 5  # width of the pruned lattice (token positions kept per frame)
    simple_scale: float = 0.5  # weight of the simple loss after warm-up
    lm_only_scale: float = 0.25  # smoothing of the simple loss (k2's lm_only_scale)
    am_only_scale: float = 0.0  # smoothing of the simple loss (k2's am_only_scale)
    warmup_steps: int = 2000  # steps over which the pruned loss weight rises from 0.1 to 1
    ctc_scale: float = 0.0  # weight of the optional CTC head (0 = no CTC head)
    # Also train the CTC head on granularities that merge tokens. CTC needs a frame per token (two for
    # a repeat); coarse granularities come close to that, and the loss then forces one alignment.
    ctc_on_merged: bool = True


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 500  # including blank (id 0)
    blank_id: int = 0
    features: FeatureConfig = field(default_factory=FeatureConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    joiner: JoinerConfig = field(default_factory=JoinerConfig)
    loss: LossConfig = field(default_factory=LossConfig)


@dataclass(frozen=True)
class StreamingConfig:
    chunk_size: int = 8  # encoder frames per chunk (8 x 40 ms = 320 ms)
    left_context: int = 64  # encoder frames of attention cache (64 x 40 ms = 2.56 s)


@dataclass(frozen=True)
class DataConfig:
    data_dir: str = "data/librispeech"  # output of the recipe's prepare step (see recipes/librispeech)
    train_parts: tuple[str, ...] = ("train-clean-100",)
    valid_parts: tuple[str, ...] = ("dev-clean",)
    test_parts: tuple[str, ...] = ("test-clean",)
    vocab_size: int = 500  # which lang/bpe_<N>.model to use
    max_duration: float = 200.0  # seconds of audio per batch (per process)
    num_buckets: int = 10  # duration buckets of the dynamic bucketing sampler
    num_workers: int = 2  # data loader processes; 0 loads in the training process
    min_cut_seconds: float = 0.5  # shorter cuts are dropped before training
    max_cut_seconds: float = 30.0  # longer cuts are dropped before training
    on_the_fly_features: bool = False  # compute fbank while loading (needed for speed perturbation)
    speed_perturb: bool = False  # lhotse 0.9x/1.1x speed perturbation (needs on-the-fly features)
    volume_perturb: bool = False  # random gain
    noise_cuts: str = ""  # lhotse CutSet of noise to mix in at 10-20 dB SNR; "" = none
    spec_augment: bool = True  # time warp, frequency and time masks on training features
    # SpecAugment strength; the defaults are icefall's LibriSpeech setting (up to 10 masks of
    # 1 s each: meant for 10-20 s utterances). Short clips want fewer, narrower masks.
    spec_time_warp: int = 80  # time-warp factor (frames)
    spec_feature_masks: int = 2  # frequency masks per utterance
    spec_feature_mask_size: int = 27  # widest frequency mask (mel bins)
    spec_frame_masks: int = 10  # time masks per utterance (lhotse scales them to the utterance length)
    spec_frame_mask_size: int = 100  # widest time mask (frames)
    spec_max_frames_fraction: float = 0.15  # at most this share of the frames are masked


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 3e-3  # peak learning rate (AdamW)
    weight_decay: float = 1e-3
    warmup_steps: int = 500  # linear warm-up of the learning rate
    decay_steps: float = 5000.0  # Eden-style decay: lr * ((step/decay_steps)^2 + 1)^-0.25 ...
    decay_epochs: float = 6.0  # ... * ((epoch/decay_epochs)^2 + 1)^-0.25
    grad_clip: float = 5.0  # max global gradient norm
    # Cool-down: over the last `cooldown` fraction of the training budget (max_steps or max_minutes,
    # whichever runs out first) the learning rate falls linearly to `cooldown_floor` times its
    # scheduled value. A recipe that trains for a fixed time ends on a low learning rate.
    cooldown: float = 0.0
    cooldown_floor: float = 0.05


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    exp_dir: str = "exp/default"  # checkpoints, logs, decode results
    num_epochs: int = 10
    max_steps: int = 0  # stop after this many steps (0 = run all epochs)
    max_minutes: float = 0.0  # stop after this much wall time (0 = no limit)
    seed: int = 42
    init_from: str = ""  # a serving checkpoint whose weights start a fresh run (fine-tuning); "" = random init
    checkpoint_every: int = 500  # steps between training checkpoints (resume points)
    keep_checkpoints: int = 5  # older step checkpoints are deleted
    average_last: int = 3  # the final model averages this many last checkpoints
    log_every: int = 20  # steps between CSV log rows
    device: str = "auto"  # "auto" (cuda if available), "cpu" or "cuda"
    bf16: bool = True  # bf16 autocast on GPU (ignored on CPU)


def to_dict(config: Any) -> dict:
    """A plain, JSON/pickle-friendly dict of a (nested) config dataclass."""
    return dataclasses.asdict(config)


def from_dict(cls: type[T], data: dict) -> T:
    """Rebuild a (nested) config dataclass from `to_dict` output; unknown keys are an error."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {sorted(unknown)}; valid: {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        ftype = known[name].type
        sub = _CONFIG_TYPES.get(ftype if isinstance(ftype, str) else getattr(ftype, "__name__", ""))
        if sub is not None and isinstance(value, dict):
            value = from_dict(sub, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def apply_overrides(config: T, overrides: dict) -> T:
    """A copy of `config` with nested `overrides` (e.g. from YAML) applied; unknown keys are an error."""
    known = {f.name for f in dataclasses.fields(config)}
    changes = {}
    for name, value in overrides.items():
        if name not in known:
            raise ValueError(f"unknown {type(config).__name__} field {name!r}; valid: {sorted(known)}")
        current = getattr(config, name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"{name} is a section ({type(current).__name__}); give it a mapping, got {value!r}")
            value = apply_overrides(current, value)
        else:
            value = _coerce(f"{type(config).__name__}.{name}", current, value)
        changes[name] = value
    return dataclasses.replace(config, **changes)


def _coerce(where: str, current: Any, value: Any) -> Any:
    """`value` converted to the type of the field's current value, or a clear error.

    YAML reads `1.0e9` (no sign in the exponent) as a string and `3` as an int; both are fine for a
    float field. A string where a number belongs, or a number where a flag belongs, is an error.
    """
    if isinstance(current, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} is a list; got {value!r}")
        return tuple(_coerce(f"{where}[{i}]", current[0], v) if current else v for i, v in enumerate(value))
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{where} is true/false; got {value!r}")
        return value
    if isinstance(current, (int, float)):
        want = type(current)
        if isinstance(value, bool):
            raise ValueError(f"{where} is a number; got {value!r}")
        try:
            number = float(value) if isinstance(value, str) else value
        except ValueError:
            raise ValueError(f"{where} is a number; got {value!r}") from None
        if not isinstance(number, (int, float)):
            raise ValueError(f"{where} is a number; got {value!r}")
        if want is int:
            if float(number) != int(number):
                raise ValueError(f"{where} is a whole number; got {value!r}")
            return int(number)
        return float(number)
    if isinstance(current, str) and not isinstance(value, str):
        raise ValueError(f"{where} is text; got {value!r}")
    return value


def dotted_override(assignment: str) -> dict:
    """'optim.lr=1e-3' -> {'optim': {'lr': 0.001}} (the value is parsed as YAML)."""
    import yaml

    if "=" not in assignment:
        raise ValueError(f"an override looks like section.field=value, got {assignment!r}")
    path, raw = assignment.split("=", 1)
    value: Any = yaml.safe_load(raw)
    for key in reversed(path.strip().split(".")):
        value = {key: value}
    return value


_CONFIG_TYPES: dict[str, type] = {
    c.__name__: c
    for c in (FeatureConfig, MergeConfig, MoEConfig, EncoderConfig, DecoderConfig, JoinerConfig, LossConfig, ModelConfig, StreamingConfig,
              DataConfig, OptimConfig, TrainConfig)
}
