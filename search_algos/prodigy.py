"""Prodigy arm: one full-budget run of the Prodigy optimizer, which estimates its own step size.

Prodigy (Mishchenko & Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free Learner",
ICML 2024, arXiv 2306.06101; package ``prodigyopt``) is Adam with a step size ``d * lr`` where
``d`` is estimated online from the distance travelled; ``lr`` stays 1.0 (the authors'
recommendation) and the LM task's base schedule (cosine or WSD, with its warmup) multiplies it, as
the authors recommend a cosine decay on top. The report's LR is ``d * lr`` of the first param
group. Needs the extra ``lrfree``; LM task only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from search_algos._lrfree import LRFreeArm
from search_algos.registry import register_arm


@register_arm
@dataclass(frozen=True)
class ProdigyArm(LRFreeArm):
    """One trial with ``LMConfig.optimizer = "prodigy"`` at ``lr`` 1.0 (``lrs`` may give another
    multiplier of d), the comparison's base schedule on top.

    Example::

        ProdigyArm()            # one trial, lr 1.0
    """

    name: ClassVar[str] = "prodigy"
    optimizer: ClassVar[str] = "prodigy"
    package: ClassVar[str] = "prodigyopt"

    def starting_lrs(self, total_steps: int, report_every: int) -> list[float]:
        return list(self.lrs) if self.lrs is not None else [1.0]
