"""Request lengths that vary: the context a decode step actually sees.

A serving engine holds a request for as long as it decodes, so a decode step samples requests in proportion
to their output length (the inspection paradox). With input ``i`` and output ``o`` drawn per request, the
mean context of the sequences in a decode step, each at a uniformly random point of its output, is

    E[o (i + o/2)] / E[o] = E[i] + cov(i, o) / E[o] + (E[o]^2 + var(o)) / (2 E[o])

and the mean final length of those sequences (the KV cache each will hold) is
``E[i] + cov(i, o)/E[o] + (E[o]^2 + var(o)) / E[o]``. Fixed lengths give the familiar ``isl + osl/2`` and
``isl + osl``; a dataset with a long tail of outputs gives much more. This is length-biased sampling,
the waiting-time (inspection) paradox of renewal theory (Feller, *An Introduction to Probability Theory
and Its Applications*, Vol. II); that a batch holds each request in proportion to its decode time is
Little's law applied per request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import InputError

# Widest spread (standard deviation / mean) a length may have: beyond it a gamma's half-percentiles are all but
# zero and stop describing the distribution (the widest benchmark set shipped, deepseek-r1's outputs, has 1.25).
MAX_CV = 10.0
# Narrower spreads than this are fixed lengths (the gamma's shape parameter would overflow).
MIN_CV = 1e-6


@dataclass(frozen=True)
class Lengths:
    """Mean request lengths (tokens) and, optionally, their spread across requests."""

    isl: float
    osl: float
    isl_std: float = 0.0
    osl_std: float = 0.0
    corr: float = 0.0  # correlation of a request's input and output lengths
    osl_points: tuple[float, ...] = ()  # equal-weight quantiles of the output length, for latency tails

    def __post_init__(self):
        if self.osl_points and min(self.osl_points) <= 0:
            raise InputError("osl_points: expected positive output lengths")
        if not (math.isfinite(self.isl) and math.isfinite(self.osl)) or self.isl <= 0 or self.osl <= 0:
            raise InputError(f"--isl/--osl: expected positive token counts (got {self.isl}, {self.osl})")
        for flag, v, mean in (("--isl-std", self.isl_std, self.isl), ("--osl-std", self.osl_std, self.osl)):
            if not math.isfinite(v) or v < 0:
                raise InputError(f"{flag}: expected a finite standard deviation >= 0, got {v}")
            if v > MAX_CV * mean:
                raise InputError(f"{flag}: expected at most {MAX_CV:g} x the mean ({MAX_CV * mean:g} tokens), got {v:g}; "
                                 "a wider spread has no usable gamma quantiles")
        if not -1.0 <= self.corr <= 1.0:
            raise InputError(f"--isl-osl-corr: expected a correlation between -1 and 1, got {self.corr}")

    @property
    def varies(self) -> bool:
        return self.osl_std > 0 or self.isl_std > 0

    def output_points(self) -> "np.ndarray":
        """Output lengths standing for the requests (equal weights), rescaled to the mean ``osl``. Without
        quantiles but with ``osl_std``, the 200 half-percentiles of a gamma distribution of that mean and
        spread (the maximum-entropy shape for a positive length of given mean and mean log); with neither,
        the mean alone."""
        if self.osl_points:
            pts = np.asarray(self.osl_points, dtype=float)
        elif self.osl_std > 0:
            pts = np.maximum(_gamma_points(self.osl, self.osl_std, 200), 1.0)
        else:
            return np.array([self.osl])
        return pts * (self.osl / pts.mean())

    def prompt_scales(self) -> "np.ndarray":
        """Prompt lengths relative to the mean (equal weights, mean 1): the 64 half-percentiles of a gamma
        distribution with the prompts' coefficient of variation, or 1 alone for fixed prompts."""
        if self.isl_std <= 0:
            return np.array([1.0])
        pts = _gamma_points(self.isl, self.isl_std, 64)
        return pts / pts.mean()

    @property
    def prompt_cv2(self) -> float:
        """Squared coefficient of variation of the prompt length: what an M/G/1 prompt queue's wait scales by
        (as ``1 + cv^2``), taking prefill time as proportional to the prompt."""
        return (self.isl_std / self.isl) ** 2

    @property
    def prompt_attention_length(self) -> float:
        """The prompt length whose causal attention (``L^2 / 2`` query-key pairs) is the mean over prompts:
        ``sqrt(E[i^2]) = sqrt(isl^2 + isl_std^2)``. Projections and MLPs scale with ``E[i]``; attention does not."""
        return math.hypot(self.isl, self.isl_std)

    @property
    def _cov_term(self) -> float:
        return self.corr * self.isl_std * self.osl_std / self.osl

    @property
    def decode_context(self) -> float:
        """Mean context (tokens) of the sequences in a decode step."""
        return self.isl + self._cov_term + (self.osl ** 2 + self.osl_std ** 2) / (2 * self.osl)

    @property
    def final_context(self) -> float:
        """Mean final length (tokens) of the sequences in a decode step: the KV cache each will hold."""
        return self.isl + self._cov_term + (self.osl ** 2 + self.osl_std ** 2) / self.osl


def _gamma_points(mean: float, std: float, n: int) -> np.ndarray:
    """The ``n`` half-percentiles (equal weights) of a gamma distribution of this mean and spread: the
    maximum-entropy shape for a positive length of given mean and mean log."""
    from scipy.stats import gamma

    if std < MIN_CV * mean:
        return np.full(n, float(mean))
    shape = (mean / std) ** 2
    return gamma.ppf((np.arange(n) + 0.5) / n, shape, scale=mean / shape)
