"""Hard (stochastic) attention, Xu et al. 2015: attend to exactly one position.

Training picks the position by sampling ``s ~ Multinoulli(α)`` and learns with REINFORCE
(reward minus a moving-average baseline, plus an entropy bonus), or by straight-through
Gumbel-softmax (Jang et al. 2017). Inference takes the argmax. The weights are one-hot.

Shape legend: B batch, T query steps, S source length.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from attnkit.functional import attention_weights
from attnkit.layers.single import ScoreParameters, SingleHeadAttention, as_normalizer

ESTIMATORS = ("reinforce", "gumbel")


class HardAttention(SingleHeadAttention):
    """One-hot attention over source states; returns ``(context, one_hot_weights)``.

    Args:
        query_dim, key_dim: Dq and Dk.
        score: any score of :class:`ScoreParameters` (default ``"additive"``).
        estimator: ``"reinforce"`` (sample; call :meth:`reinforce_loss` with the reward) or
            ``"gumbel"`` (straight-through Gumbel-softmax; ordinary backprop).
        tau: Gumbel-softmax temperature.
        baseline_decay: the moving-average baseline's decay (REINFORCE).
        entropy_weight: the entropy bonus λ_H (REINFORCE).

    Raises:
        ValueError: an unknown estimator, ``tau`` ≤ 0, a decay outside [0, 1).
    """

    def __init__(
        self,
        query_dim: int,
        key_dim: int,
        *,
        score: str = "additive",
        hidden_dim: int | None = None,
        estimator: str = "reinforce",
        tau: float = 1.0,
        baseline_decay: float = 0.9,
        entropy_weight: float = 0.0,
        backend: str = "auto",
    ) -> None:
        super().__init__(
            ScoreParameters(score, query_dim, key_dim, hidden_dim=hidden_dim), backend=backend
        )
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {list(ESTIMATORS)}, got {estimator!r}")
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        if not 0.0 <= baseline_decay < 1.0:
            raise ValueError(f"baseline_decay must be in [0, 1), got {baseline_decay}")
        self.estimator, self.tau = estimator, tau
        self.baseline_decay, self.entropy_weight = baseline_decay, entropy_weight
        self.register_buffer("baseline", torch.zeros(()))
        self._log_probs: list[Tensor] = []
        self._entropies: list[Tensor] = []

    def normalizer(
        self, query: Tensor, keys: Tensor, key_lengths: Tensor | None, **kwargs: Any
    ) -> Any:
        if not self.training:
            return "hardmax"
        if self.estimator == "gumbel":
            return as_normalizer("gumbel_softmax", tau=self.tau)
        return "multinoulli"

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        values: Tensor | None = None,
        *,
        mask: Tensor | None = None,
        key_lengths: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        context, one_hot = super().forward(
            query, keys, values, mask=mask, key_lengths=key_lengths
        )  # (B, [T,] Dv), (B, [T,] S)
        if self.training and self.estimator == "reinforce":
            probs = self.probabilities(query, keys, mask=mask, key_lengths=key_lengths)
            chosen = (probs * one_hot).sum(dim=-1)  # (B, [T])
            self._log_probs.append(torch.log(chosen.clamp_min(1e-12)))
            plogp = torch.where(probs > 0, probs * torch.log(probs.clamp_min(1e-12)), 0.0)
            self._entropies.append(-plogp.sum(dim=-1))  # (B, [T])
        return context, one_hot

    def probabilities(
        self,
        query: Tensor,
        keys: Tensor,
        *,
        mask: Tensor | None = None,
        key_lengths: Tensor | None = None,
    ) -> Tensor:
        """The soft distribution ``α`` the positions are sampled from: ``(B, [T,] S)``."""
        q, k, _, allowed, step = self.prepare(query, keys, mask=mask, key_lengths=key_lengths)
        probs = attention_weights(
            q, k, score=self.scorer.spec(), mask=allowed, backend=self.backend
        ).squeeze(1)  # (B, T, S)
        return probs.squeeze(1) if step else probs

    def reinforce_loss(self, reward: Tensor) -> Tensor:
        """The REINFORCE surrogate loss for the samples drawn since the last call.

        ``−(reward − b) · Σ log α(sampled) − λ_H · entropy``, averaged over the batch; updates
        the moving-average baseline ``b`` and clears the stored samples.

        Args:
            reward: ``(B,)``, e.g. the log-likelihood of the target under the model.

        Raises:
            ValueError: no samples stored (not training with ``estimator="reinforce"``), or a
                reward of the wrong shape.
        """
        if not self._log_probs:
            raise ValueError(
                "reinforce_loss: no sampled positions; call forward in training mode with "
                "estimator='reinforce' first"
            )
        log_prob = sum(lp.reshape(lp.shape[0], -1).sum(dim=-1) for lp in self._log_probs)
        entropy = sum(h.reshape(h.shape[0], -1).sum(dim=-1) for h in self._entropies)
        if reward.shape != log_prob.shape:
            raise ValueError(
                f"reward must be (B,) = {tuple(log_prob.shape)}, got {tuple(reward.shape)}"
            )
        reward = reward.detach().to(log_prob.dtype)
        advantage = reward - self.baseline
        with torch.no_grad():
            self.baseline.mul_(self.baseline_decay).add_((1 - self.baseline_decay) * reward.mean())
        self._log_probs.clear()
        self._entropies.clear()
        return -(advantage * log_prob).mean() - self.entropy_weight * entropy.mean()

    def extra_repr(self) -> str:
        return f"estimator={self.estimator!r}, tau={self.tau}"
