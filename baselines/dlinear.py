"""DLinear: the simple linear reference of long-term forecasting.

Paper: Zeng, Chen, Zhang and Xu, "Are Transformers Effective for Time Series Forecasting?" (AAAI
2023, https://arxiv.org/abs/2205.13504). Implemented here from the paper and the Time-Series-
Library description (``shared/specs/timeseries_protocol.md`` §9.3): a series decomposition (moving
average of ``moving_avg`` steps with the first/last value repeated (k-1)/2 times at each end; the
seasonal part is the rest), then one Linear(L -> H) for the seasonal and one for the trend part,
shared by all channels (``individual=False``) or one per channel, weights initialised to 1/L;
output = their sum; no normalisation. ``forecast`` kind: x (B, L, C) -> y (B, H, C).

DLinear has no sequence mixer, so it has no ``_dense`` or ``_monarch`` variant.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from baselines.ts_common import series_decomp
from m2bench.errors import ConfigError
from m2bench.registry import register_model


@dataclass(frozen=True)
class DLinearConfig:
    """DLinear's settings; the task sets the geometry (seq_len, pred_len, enc_in)."""

    seq_len: int = 96  # input steps L
    pred_len: int = 96  # forecast steps H
    enc_in: int = 7  # channels C
    mark_dim: int = 0  # time features: accepted and ignored (DLinear uses none)
    moving_avg: int = 25  # odd kernel of the trend's moving average
    individual: bool = False  # one pair of linear maps per channel

    def __post_init__(self) -> None:
        if self.moving_avg < 1 or self.moving_avg % 2 == 0:
            raise ConfigError(f"moving_avg must be odd and positive, got {self.moving_avg}")
        if min(self.seq_len, self.pred_len, self.enc_in) < 1:
            raise ConfigError("seq_len, pred_len and enc_in must be positive")


class DLinear(nn.Module):
    """DLinear forecaster."""

    def __init__(self, config: DLinearConfig) -> None:
        super().__init__()
        self.config = config
        n = config.enc_in if config.individual else 1
        self.seasonal = nn.ModuleList(nn.Linear(config.seq_len, config.pred_len) for _ in range(n))
        self.trend = nn.ModuleList(nn.Linear(config.seq_len, config.pred_len) for _ in range(n))
        for layer in (*self.seasonal, *self.trend):
            nn.init.constant_(layer.weight, 1.0 / config.seq_len)

    def features(self, x: torch.Tensor, x_mark: torch.Tensor | None = None) -> torch.Tensor:
        """(B, H * C): the forecast, flattened (TSLib's DLinear classifier input)."""
        return self.forward(x).reshape(x.shape[0], -1)

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None = None,
                y_mark: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """Forecast (B, H, C) from the input window ``x`` (B, L, C); marks and mask unused."""
        c = self.config
        if x.shape[1] != c.seq_len:
            raise ValueError(f"DLinear was built for seq_len {c.seq_len}, got {x.shape[1]} steps")
        seasonal, trend = (t.transpose(1, 2) for t in series_decomp(x, c.moving_avg))  # (B, C, L)
        if c.individual:
            out = torch.stack([self.seasonal[i](seasonal[:, i]) + self.trend[i](trend[:, i])
                               for i in range(c.enc_in)], dim=1)  # fmt: skip
        else:
            out = self.seasonal[0](seasonal) + self.trend[0](trend)
        return out.transpose(1, 2)


@register_model(
    "dlinear",
    kind="forecast",
    family="baseline",
    params_m=0.0186,
    config_cls=DLinearConfig,
    description="DLinear (Zeng et al. 2023): decomposition + two linear maps, 96 -> 96",
)
def dlinear(**overrides: object) -> DLinear:
    """DLinear with TSLib's defaults (moving average 25, shared linear maps)."""
    return DLinear(replace(DLinearConfig(), **overrides))
