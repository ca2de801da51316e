"""The learning-rate schedule of training: timm's step and cosine schedulers, counted in optimiser updates."""
from typing import Sequence

import torch
from timm.scheduler import CosineLRScheduler, MultiStepLRScheduler
from timm.scheduler.scheduler import Scheduler

__all__ = ['create_lr_scheduler']


def create_lr_scheduler(
        optimizer: torch.optim.Optimizer,
        sched: str,
        total_steps: int,
        milestone_steps: Sequence[int],
        warmup_steps: int = 0,
) -> Scheduler:
    """The learning-rate schedule of a run: call ``step_update(n)`` after optimiser update n (n counts from 1).

    The lr of update n (from 0) is a function of n alone: ``state_dict()`` and ``load_state_dict()`` carry it over a
    resume. Warm-up is timm's: linear from 0 at update 0 to the peak at update ``warmup_steps``. (The LambdaLR this
    replaces ramped one update ahead, peak x (n + 1) / ``warmup_steps``, so it reached the peak one update earlier and
    held it for two; timm's schedulers have no such offset. Runs without warm-up are unchanged.)

    Args:
        optimizer: Optimiser whose initial lr is the peak.
        sched: 'step' (x0.1 from each milestone on, the paper's) or 'cosine' (half a cosine from the peak after
            warm-up to 0 at ``total_steps``).
        total_steps: Optimiser updates of the whole run.
        milestone_steps: Updates from which the step schedule multiplies lr by another 0.1 (counted from the start,
            warm-up included).
        warmup_steps: Updates of linear warm-up to the peak before either schedule.
    """
    if sched == 'cosine':
        return CosineLRScheduler(optimizer, t_initial=total_steps - warmup_steps, warmup_t=warmup_steps,
                                 warmup_prefix=True, t_in_epochs=False)
    # timm decays once t + 1 reaches a milestone: + 1 decays from update m on, as torch's MultiStepLR did
    return MultiStepLRScheduler(optimizer, decay_t=[milestone + 1 for milestone in milestone_steps], decay_rate=0.1,
                                warmup_t=warmup_steps, warmup_prefix=False, t_in_epochs=False)
