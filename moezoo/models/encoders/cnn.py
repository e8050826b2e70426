"""A small CNN trained from scratch, whose features the prompt modulates with FiLM.

FiLM (Perez et al. 2018, *FiLM: Visual Reasoning with a General Conditioning Layer*, arXiv
1709.07871): a per-channel scale and shift, computed from the question, applied to the
visual features, ``h = h * (1 + gamma(c)) + beta(c)``. moezoo's probes on 64x64 shapes-VQA
(../shared/DESIGN.md, "The quickstart takes design work") found a 4-stage CNN FiLM-modulated by
the mean question embedding after stages 2-4 reached 0.83 in 6 minutes on 2 cores, while every
unconditioned trunk stalled near 0.5: binding a colour word to a shape needs the question to
shape the visual features. This is that trunk, the quickstart's encoder. The condition ``c``
pools the prompt's token embeddings (:meth:`CNNEncoder.pool_condition`: a learned attention
pool by default, see :mod:`moezoo.models.prompt_pooling`) and is layer-normalised.

Each stage is a stride-2 3x3 conv (+ optional stride-1 convs), a norm and a ReLU; 64 px in
gives a 4x4 map, 16 tokens of width ``channels[-1]``. As in the FiLM paper, the modulation sits
between the norm and the ReLU, so the question can switch channels off. ``gamma`` and ``beta``
start at zero: an untrained FiLM CNN is exactly the plain CNN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from moezoo.models.encoders.base import ENCODERS, Encoder
from moezoo.models.prompt_pooling import AttentionPooling, ContextualPooling, sincos_2d
from moezoo.utils.checks import check_min, require
from moezoo.utils.config import Config

NORMS = ("batch", "group", "none")
POOLINGS = ("attention", "mean", "contextual")
# Mean / std 0.5: pixels land in [-1, 1], centred; ImageNet statistics mean nothing to a trunk
# trained from scratch on synthetic scenes.
PIXEL_MEAN = PIXEL_STD = (0.5, 0.5, 0.5)


def _norm(kind: str, channels: int) -> nn.Module:
    builders = {
        "batch": lambda: nn.BatchNorm2d(channels),
        "group": lambda: nn.GroupNorm(math.gcd(8, channels), channels),  # up to 8 groups that divide the width
        "none": nn.Identity,
    }
    return builders[kind]()


class FiLM(nn.Module):
    """``h * (1 + gamma(c)) + beta(c)``, per channel; zero-initialised, so it starts as the identity."""

    def __init__(self, condition_dim: int, channels: int):
        super().__init__()
        self.gamma = nn.Linear(condition_dim, channels)
        self.beta = nn.Linear(condition_dim, channels)
        for linear in (self.gamma, self.beta):
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, h_NCHW: torch.Tensor, condition_ND: torch.Tensor) -> torch.Tensor:
        gamma_NC11 = self.gamma(condition_ND)[:, :, None, None]
        beta_NC11 = self.beta(condition_ND)[:, :, None, None]
        return h_NCHW * (1 + gamma_NC11) + beta_NC11


class CNNStage(nn.Module):
    """Stride-2 conv3x3 (+ stride-1 convs) -> norm -> [FiLM] -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, convs: int, norm: str, condition_dim: int | None):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=norm == "none")]
        for _ in range(convs - 1):
            layers += [_norm(norm, out_channels), nn.ReLU(inplace=True),
                       nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=norm == "none")]
        self.convs = nn.Sequential(*layers)
        self.norm = _norm(norm, out_channels)
        self.film = FiLM(condition_dim, out_channels) if condition_dim is not None else None

    def forward(self, x_NCHW: torch.Tensor, condition_ND: torch.Tensor | None) -> torch.Tensor:
        h_NCHW = self.norm(self.convs(x_NCHW))
        if self.film is not None:
            h_NCHW = self.film(h_NCHW, condition_ND)
        return torch.relu(h_NCHW)


class SpatialSoftArgmax(nn.Module):
    """``keypoints`` maps read from a feature map, each reduced to where it peaks: a 1x1 conv gives
    ``K`` maps, a softmax over each map's cells weighs the cells' ``(x, y)`` in [-1, 1], and the
    ``K`` expected positions become one token (a linear layer of the ``2K`` coordinates).

    The spatial soft-argmax of deep spatial autoencoders (Finn et al. 2016, arXiv 1509.06113;
    Levine et al. 2016): where a map peaks is read at sub-cell precision, and the token holds
    coordinates, so "is A left of B" is a difference of two of its inputs. With FiLM before it,
    the question picks what each map fires on.

    Example:
        >>> head = SpatialSoftArgmax(in_channels=8, keypoints=2, out_dim=16)
        >>> head(torch.randn(3, 8, 16, 16)).shape
        torch.Size([3, 1, 16])
    """

    def __init__(self, in_channels: int, keypoints: int, out_dim: int):
        super().__init__()
        self.maps = nn.Conv2d(in_channels, keypoints, 1)
        self.token = nn.Linear(2 * keypoints, out_dim)

    def positions(self, h_NCHW: torch.Tensor) -> torch.Tensor:
        """``(N, K, 2)``: each map's expected ``(x, y)``, each in [-1, 1]."""
        logits_NKHW = self.maps(h_NCHW)
        H, W = logits_NKHW.shape[-2:]
        weights_NKL = logits_NKHW.flatten(2).float().softmax(-1)
        ys = torch.linspace(-1, 1, H, device=h_NCHW.device)
        xs = torch.linspace(-1, 1, W, device=h_NCHW.device)
        grid_yx_L2 = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1).reshape(H * W, 2)
        return (weights_NKL @ grid_yx_L2.flip(-1)).to(h_NCHW.dtype)  # (x, y)

    def forward(self, h_NCHW: torch.Tensor) -> torch.Tensor:
        return self.token(self.positions(h_NCHW).flatten(1))[:, None, :]


class CNNEncoder(Encoder):
    """``pixel_values (N, 3, S, S)`` (+ ``condition (N, Dc)``) -> ``(N, (S / 2**stages)**2, channels[-1])``."""

    def __init__(self, config: CNNEncoderConfig):
        super().__init__()
        self.config = config
        if config.film:
            require(config, "condition_dim", config.condition_dim is not None,
                    "must be set when film=True (the multimodal model sets it to its prompt-embedding width)")
        self.conditioned = config.film
        # The condition pools prompt embeddings: at the LM's initialisation (std 0.02, averaged
        # over ~30 tokens) its entries are ~0.004, and zero-initialised FiLM weights fed that
        # barely move for hundreds of steps. Normalising it gives FiLM a unit-scale input from
        # the first step, whatever the embeddings' scale, then or later in training (eps 1e-6:
        # the default 1e-5 is close to that ~0.004**2 variance and would still shrink it).
        self.condition_norm = nn.LayerNorm(config.condition_dim, eps=1e-6) if config.film else None
        pools = {"attention": AttentionPooling, "contextual": ContextualPooling}
        pool = pools.get(config.condition_pooling) if config.film else None
        self.condition_pool = pool(config.condition_dim, num_queries=config.condition_queries) if pool else None
        film_stages = config.film_stages if config.film_stages is not None else range(2, len(config.channels) + 1)
        in_channels = 3 + 2 * config.coord_channels
        widths = [in_channels, *config.channels]
        self.stages = nn.ModuleList(
            CNNStage(widths[i], widths[i + 1], config.convs_per_stage, config.norm,
                     config.condition_dim if config.film and i + 1 in film_stages else None)
            for i in range(len(config.channels)))
        side = config.image_size
        for _ in config.channels:
            side = (side + 1) // 2  # a stride-2, padding-1 3x3 conv rounds up
        self.num_tokens = side * side + (config.keypoints > 0)
        self.out_dim = config.channels[-1]
        if config.keypoints:
            self.keypoint_head = SpatialSoftArgmax(config.channels[config.keypoint_stage - 1], config.keypoints,
                                                   self.out_dim)
        if config.token_positions:  # a buffer, not a weight: rebuilt from the config, never saved
            self.register_buffer("positions_TC", sincos_2d(side, side, self.out_dim), persistent=False)

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """``x (N, 3, S, S)``, ``condition (N, condition_dim)`` (required with FiLM) -> ``(N, T, C)``."""
        size = self.config.image_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, size, size):
            raise ValueError(f"expected pixel_values of shape (N, 3, {size}, {size}), got {tuple(x.shape)}")
        if self.conditioned:
            if condition is None:
                raise ValueError("this CNN encoder is FiLM-conditioned: forward needs condition (N, "
                                 f"{self.config.condition_dim}), got None")
            if condition.shape != (x.shape[0], self.config.condition_dim):
                raise ValueError(f"expected condition of shape ({x.shape[0]}, {self.config.condition_dim}), "
                                 f"got {tuple(condition.shape)}")
            condition = self.condition_norm(condition.to(x.dtype))
        if self.config.coord_channels:  # CoordConv (Liu et al. 2018): where each pixel is, in [-1, 1]
            ys = torch.linspace(-1, 1, size, device=x.device, dtype=x.dtype)
            grid_2HW = torch.stack(torch.meshgrid(ys, ys, indexing="ij"))
            x = torch.cat([x, grid_2HW.expand(x.shape[0], 2, size, size)], dim=1)
        h = x
        for number, stage in enumerate(self.stages, 1):
            h = stage(h, condition)
            if number == self.config.keypoint_stage and self.config.keypoints:
                keypoint_N1C = self.keypoint_head(h)
        tokens_NTC = h.flatten(2).transpose(1, 2)  # (N, C, h, w) -> (N, h*w, C)
        if self.config.token_positions:
            tokens_NTC = tokens_NTC + self.positions_TC.to(tokens_NTC.dtype)
        if self.config.keypoints:
            tokens_NTC = torch.cat([tokens_NTC, keypoint_N1C], dim=1)
        return tokens_NTC

    def pool_condition(self, prompt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The prompt's embeddings pooled as ``condition_pooling`` says (see :mod:`moezoo.models.prompt_pooling`)."""
        if self.condition_pool is not None:
            return self.condition_pool(prompt, mask)
        return super().pool_condition(prompt, mask)

    def preprocess_spec(self) -> dict[str, Any]:
        """``{"kind": "simple", "size": [S, S], "mean": [0.5] * 3, "std": [0.5] * 3, "resize": "squash"}``."""
        size = self.config.image_size
        return {"kind": "simple", "size": [size, size], "mean": list(PIXEL_MEAN), "std": list(PIXEL_STD),
                "resize": "squash"}


@ENCODERS.register(CNNEncoder)
@dataclass
class CNNEncoderConfig(Config):
    """The quickstart's from-scratch CNN, FiLM-conditioned on the prompt.

    Args:
        channels: output width of each stride-2 stage; ``len(channels)`` stages.
        image_size: square input side; ``ceil(image_size / 2**stages)**2`` tokens come out.
        film: modulate the stages in ``film_stages`` with the condition (the prompt).
        condition_dim: width of the condition vector; the multimodal model sets it (its
            prompt-embedding width). Required when ``film``.
        film_stages: the 1-based stages whose features FiLM modulates; default every stage but the
            first (the probe's 2-4). The quickstart modulates all four: at stage 1 the question can
            already keep the colour it names (0.60 against 0.57 after 6 minutes, one run each).
        condition_pooling: how the prompt's embeddings become the condition: ``"attention"``
            (default: a learned attention pool, which can weigh the question's words above the
            chat template's), ``"mean"``, or ``"contextual"`` (a transformer layer reads the
            prompt in order before the attention pool, so "the X relative to the Y" and "the Y
            relative to the X" differ: the two pools above are bags of words). Each is
            layer-normalised before FiLM reads it.
        condition_queries: score vectors of the attention pool (``"attention"`` / ``"contextual"``): with
            more than one, each pools its own vector and a linear layer merges them.
        coord_channels: append x / y coordinate channels to the input (CoordConv); the probe
            found them neutral (0.80 vs 0.83), so off by default.
        token_positions: add fixed 2-D sine-cosine positions (:func:`~moezoo.models.prompt_pooling.sincos_2d`)
            to the output tokens, so each token's value says which cell it is (a ViT's tokens carry
            theirs; a CNN's carry only what padding and ``coord_channels`` leave in the features).
        keypoints: with ``K > 0``, one more token: where each of ``K`` learned maps of stage
            ``keypoint_stage``'s features peaks (:class:`SpatialSoftArgmax`), so the position of what
            the question names is an explicit input to the LLM.
        keypoint_stage: the 1-based stage whose features the keypoint maps read (default 2: a
            16x16 map at 64 px).
        norm: ``"batch"`` (default: the FiLM paper's choice, and the fastest from-scratch
            convergence at the quickstart's batch of 128), ``"group"`` (per sample, identical in
            training and eval: for small or varying batches) or ``"none"``.
        convs_per_stage: 3x3 convs per stage (the first has stride 2); the probe used one.

    Example:
        >>> CNNEncoderConfig(condition_dim=64).to_dict()["channels"]
        [32, 64, 128, 128]
        >>> CNNEncoderConfig(film_stages=[5])
        Traceback (most recent call last):
        ...
        ValueError: CNNEncoderConfig.film_stages=[5] must be stage numbers in [1, 4]
    """

    kind: ClassVar[str] = "cnn"
    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 128])
    image_size: int = 64
    film: bool = True
    condition_dim: int | None = None
    film_stages: list[int] | None = None
    condition_pooling: str = "attention"
    condition_queries: int = 1
    coord_channels: bool = False
    token_positions: bool = False
    keypoints: int = 0
    keypoint_stage: int = 2
    norm: str = "batch"
    convs_per_stage: int = 1

    def __post_init__(self) -> None:
        require(self, "channels", len(self.channels) >= 1 and all(c >= 1 for c in self.channels),
                "must be a non-empty list of widths >= 1")
        check_min(self, image_size=1, convs_per_stage=1, condition_queries=1)
        if self.film_stages is not None:
            require(self, "film_stages", all(1 <= s <= len(self.channels) for s in self.film_stages),
                    f"must be stage numbers in [1, {len(self.channels)}]")
        require(self, "norm", self.norm in NORMS, f"must be one of {NORMS}")
        check_min(self, keypoints=0)
        require(self, "keypoint_stage", 1 <= self.keypoint_stage <= len(self.channels),
                f"must be a stage number in [1, {len(self.channels)}]")
        require(self, "condition_pooling", self.condition_pooling in POOLINGS, f"must be one of {POOLINGS}")
        if self.condition_dim is not None:
            check_min(self, condition_dim=1)
