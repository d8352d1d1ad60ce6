import math
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from genrec.models import SASRec
from genrec.modules import RetrievalModule
from genrec.modules.negatives import LossConfig
from genrec.modules.optim import OptimConfig, adamw

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def reference_factor(step: int, total: int, schedule: str, warmup: int, min_ratio: float) -> float:
    """The hand-written LambdaLR factor genrec used before issue 41, which ``optim.schedule`` replaces."""
    warm = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    if schedule == "constant":
        return warm
    progress = min(1.0, max(0.0, (step - warmup) / max(1, total - warmup)))
    return warm * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def scheduled_lrs(config: OptimConfig, total: int) -> list[float]:
    """The learning rate of each of ``total`` optimizer steps under ``adamw``'s scheduler."""
    out = adamw([torch.nn.Parameter(torch.zeros(1))], config, lambda: total)
    opt, sched = (out, None) if isinstance(out, torch.optim.Optimizer) else (out["optimizer"], out["lr_scheduler"]["scheduler"])
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stepping the scheduler without optimizer steps
        for _ in range(total):
            lrs.append(opt.param_groups[0]["lr"])
            if sched is not None:
                sched.step()
    return lrs


def shipped_schedules() -> list[tuple[str, dict, int]]:
    """Every config's ``model.init_args.optim`` with its ``trainer.max_epochs``."""
    out = []
    for path in sorted(CONFIGS.rglob("*.yaml")):
        cfg = yaml.safe_load(path.read_text()) or {}
        optim = ((cfg.get("model") or {}).get("init_args") or {}).get("optim")
        if optim:
            out.append((path.relative_to(CONFIGS).as_posix(), optim, (cfg.get("trainer") or {}).get("max_epochs") or 1))
    return out


SETTINGS = [(name, optim, epochs * per_epoch) for name, optim, epochs in shipped_schedules() for per_epoch in (48,)] + [
    ("warm-up, constant", {"warmup_steps": 10}, 300), ("one warm-up step", {"lr_schedule": "cosine", "warmup_steps": 1}, 50),
    ("cosine to a floor", {"lr_schedule": "cosine", "warmup_steps": 7, "min_lr_ratio": 0.1}, 500),
    ("no warm-up", {"lr_schedule": "cosine", "min_lr_ratio": 0.2}, 100), ("warm-up past the end", {"warmup_steps": 40, "lr_schedule": "cosine"}, 30)]


@pytest.mark.parametrize("name, optim, total", SETTINGS, ids=[f"{n}-{t}" for n, _, t in SETTINGS])
def test_the_torch_schedule_gives_the_hand_written_one_at_every_step(name, optim, total):
    config = OptimConfig(**optim)
    want = [config.lr * reference_factor(s, total, config.lr_schedule, config.warmup_steps, config.min_lr_ratio)
            for s in range(total)]
    got = scheduled_lrs(config, total)
    assert got == pytest.approx(want, rel=1e-10, abs=1e-20)
    # the parameters are float32: every step's rate rounds to the same float32
    assert torch.equal(torch.tensor(got, dtype=torch.float32), torch.tensor(want, dtype=torch.float32))


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
    assert lr == pytest.approx(0.01 * reference_factor(8, 8, "cosine", 2, 0.0))  # annealed to the floor
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 8


@pytest.mark.parametrize("kw, key", [({"lr_schedule": "step"}, "model.optim.lr_schedule"),
                                     ({"warmup_steps": -1}, "model.optim.warmup_steps"),
                                     ({"min_lr_ratio": 2.0}, "model.optim.min_lr_ratio"),
                                     ({"betas": (0.9, 1.0)}, r"model.optim.betas\[1\]")])
def test_bad_schedules_are_named(kw, key):
    with pytest.raises(ValueError, match=key):
        OptimConfig(**kw)


def test_the_tokenizer_autoencoder_takes_its_optimiser_from_optim():
    from genrec.modules.tokenizer_ae import TokenizerAutoencoder
    from genrec.tokenizers.item_tokenizer import ItemTokenizer

    m = TokenizerAutoencoder(num_tokens=2, levels=(4, 4), hidden_dim=8, optim=OptimConfig(lr=0.002, warmup_steps=5))
    m.tokenizer = ItemTokenizer(16, 2, (4, 4), 8, "encoder", "{title}")
    out = m.configure_optimizers()
    group = out["optimizer"].param_groups[0]
    assert group["initial_lr"] == 0.002 and group["weight_decay"] == 0.01
    assert TokenizerAutoencoder().optim_config.weight_decay == 0.0  # its default: no decay, as before
    assert group["lr"] == pytest.approx(0.002 / 5)  # the first warm-up step
    assert dict(m.hparams)["optim"]["lr"] == 0.002
