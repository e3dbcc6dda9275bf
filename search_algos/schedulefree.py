"""Schedule-Free AdamW arm: one full-budget run without an LR schedule.

Schedule-Free AdamW (Defazio et al., "The Road Less Scheduled", NeurIPS 2024, arXiv 2405.15682;
package ``schedulefree``) replaces the schedule's decay by an average of the iterates: the LR is
constant after its own linear warmup (``warmup_steps`` of the LM task) and evaluation and
checkpoints switch the model to the averaged weights (``optimizer.eval()`` / ``train()``, done by
the LM loop). It still takes an LR: by default the middle of the arm's range in log space (the
comparison's ``lr_ref``, where the AdaLRS 1x start is), or the one of ``lrs``. The report's LR is
that LR times the warmup factor. Needs the extra ``lrfree``; LM task only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from search_algos._lrfree import LRFreeArm
from search_algos.registry import register_arm


@register_arm
@dataclass(frozen=True)
class ScheduleFreeArm(LRFreeArm):
    """One trial with ``LMConfig.optimizer = "schedulefree"`` at the geometric mean of
    [lr_min, lr_max] (or ``lrs``), constant LR after its own warmup.

    Example::

        ScheduleFreeArm(lrs=(3e-3,))
    """

    name: ClassVar[str] = "schedulefree"
    optimizer: ClassVar[str] = "schedulefree"
    package: ClassVar[str] = "schedulefree"
