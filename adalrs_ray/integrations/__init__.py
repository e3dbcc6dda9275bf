"""AdaLRS in the trainers users already run: transformers' ``Trainer`` and Lightning.

:mod:`~adalrs_ray.integrations.hf_trainer` holds :class:`AdaLRSTrainerCallback` and the
:class:`AdaLRSTrainerMixin` that hands it the loss; :mod:`~adalrs_ray.integrations.lightning`
holds :class:`AdaLRSLightningCallback`. Both drive :class:`adalrs_ray.torch_binding.AdaLRSScheduler`
(the multiplier on the trainer's own schedule, snapshots and backtracking) and add no logic of
their own beyond feeding it one loss per optimizer step and keeping its state in the trainer's
checkpoints.

May import: :mod:`adalrs_ray.torch_binding`, :mod:`adalrs_ray.core`, torch, transformers,
lightning. Never ray. The names load lazily, so ``import adalrs_ray.integrations`` needs neither
transformers nor lightning.
"""

from __future__ import annotations

from adalrs_ray.core.lazy import lazy_exports

_LAZY = {
    "AdaLRSTrainerCallback": "adalrs_ray.integrations.hf_trainer",
    "AdaLRSTrainerMixin": "adalrs_ray.integrations.hf_trainer",
    "AdaLRSTrainer": "adalrs_ray.integrations.hf_trainer",
    "AdaLRSLightningCallback": "adalrs_ray.integrations.lightning",
    "reduce_mean_across_ranks": "adalrs_ray.integrations.common",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
