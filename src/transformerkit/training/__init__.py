"""Training: one loop for every objective (`train`), its settings (`TrainConfig`) and
learning-rate schedules that are pure functions of the step."""
from .schedule import SCHEDULES, cosine, learning_rate, noam
from .trainer import (
                      TrainConfig,
                      batch_indices,
                      causal_lm_batch,
                      evaluate,
                      load_checkpoint,
                      make_optimizer,
                      save_checkpoint,
                      train,
)

__all__ = ["SCHEDULES", "cosine", "learning_rate", "noam", "TrainConfig", "batch_indices", "causal_lm_batch",
           "evaluate", "load_checkpoint", "make_optimizer", "save_checkpoint", "train"]
