import math

import lightning as L
import pytest
import torch

from genrec.models import SASRec
from genrec.modules import RetrievalModule
from genrec.modules.negatives import LossConfig
from genrec.modules.optim import OptimConfig, lr_factor


def test_cosine_warms_up_then_decays_to_the_floor():
    f = [lr_factor(s, 100, "cosine", 10, 0.1) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(f[:10], f[1:10]))  # warm-up rises
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # then only falls
    assert f[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert lr_factor(100, 100, "cosine", 10, 0.1) == pytest.approx(0.1)


def test_constant_is_flat_after_warm_up():
    assert [lr_factor(s, 50, "constant", 4, 0.0) for s in (0, 3, 4, 49)] == [0.25, 1.0, 1.0, 1.0]


def test_the_trainer_steps_the_schedule():
    class Data(L.LightningDataModule):
        def train_dataloader(self):
            g = torch.Generator().manual_seed(0)
            items = torch.randint(1, 21, (16, 6), generator=g)
            rows = [{"user": torch.tensor(i), "items": items[i, :-1], "targets": items[i, 1:],
                     "timestamps": torch.arange(5), "lengths": torch.tensor(5)} for i in range(16)]
            return torch.utils.data.DataLoader(rows, batch_size=4)

    m = RetrievalModule(SASRec(dim=8, num_blocks=1, num_heads=1, max_seq_len=5), num_items=20,
                        loss=LossConfig(num_negatives=4), optim=OptimConfig(lr=0.01, lr_schedule="cosine", warmup_steps=2))
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)
    trainer.fit(m, datamodule=Data())
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert lr == pytest.approx(0.01 * lr_factor(8, 8, "cosine", 2, 0.0))  # annealed to the floor
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 8


@pytest.mark.parametrize("kw, key", [({"lr_schedule": "step"}, "model.optim.lr_schedule"),
                                     ({"warmup_steps": -1}, "model.optim.warmup_steps"),
                                     ({"min_lr_ratio": 2.0}, "model.optim.min_lr_ratio"),
                                     ({"betas": (0.9, 1.0)}, r"model.optim.betas\[1\]")])
def test_bad_schedules_are_named(kw, key):
    with pytest.raises(ValueError, match=key):
        OptimConfig(**kw)
