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


class Data(L.LightningDataModule):
    def __init__(self, users: int = 16):
        super().__init__()
        self.users = users

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        items = torch.randint(1, 21, (self.users, 6), generator=g)
        rows = [{"user": torch.tensor(i), "items": items[i, :-1], "targets": items[i, 1:],
                 "timestamps": torch.arange(5), "lengths": torch.tensor(5)} for i in range(self.users)]
        return torch.utils.data.DataLoader(rows, batch_size=4)


def test_the_trainer_steps_the_schedule():
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


class Rates(L.Callback):
    """The learning rate of every training step."""

    def __init__(self):
        self.lrs = []

    def on_train_batch_start(self, trainer, *args):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


@pytest.mark.parametrize("schedule, epoch", [("cosine", 0), ("cosine", 1), ("constant", 0)],
                         ids=["cosine, in the warm-up", "cosine, past the warm-up", "constant, in the warm-up"])
def test_a_run_resumed_from_the_old_lambdalr_schedule_goes_on_at_the_uninterrupted_runs_rates(tmp_path, schedule, epoch):
    """A checkpoint whose schedule genrec's hand-written LambdaLR saved resumes (``fit --ckpt_path``)
    with the rate the uninterrupted run took at every later step."""
    from genrec.modules.checkpoints import VERSION_KEY

    optim = OptimConfig(lr=0.01, lr_schedule=schedule, warmup_steps=3 if schedule == "cosine" else 5, min_lr_ratio=0.1)
    total, per_epoch = 6, 2

    def fit(ckpt_path=None, *callbacks):
        torch.manual_seed(0)
        m = RetrievalModule(SASRec(dim=8, num_blocks=1, num_heads=1, max_seq_len=5), num_items=20,
                            loss=LossConfig(num_negatives=4), optim=optim)
        rates = Rates()
        trainer = L.Trainer(max_epochs=total // per_epoch, logger=False, enable_progress_bar=False, enable_model_summary=False,
                            limit_val_batches=0, callbacks=[rates, *callbacks], default_root_dir=tmp_path)
        trainer.fit(m, datamodule=Data(users=4 * per_epoch), ckpt_path=ckpt_path)
        return rates.lrs

    saver = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1, every_n_epochs=1)
    whole = fit(None, saver)
    assert len(whole) == total
    ckpt = torch.load(tmp_path / f"epoch={epoch}.ckpt", weights_only=False)
    step = per_epoch * (epoch + 1)
    rate = optim.lr * reference_factor(step, total, schedule, optim.warmup_steps, optim.min_lr_ratio)
    ckpt["lr_schedulers"] = [{"base_lrs": [optim.lr], "last_epoch": step, "_step_count": step + 1, "verbose": False,
                              "_get_lr_called_within_step": False, "_last_lr": [rate], "lr_lambdas": [None]}]
    ckpt["optimizer_states"][0]["param_groups"][0]["lr"] = rate
    del ckpt[VERSION_KEY]
    torch.save(ckpt, tmp_path / "old.ckpt")
    resumed = fit(str(tmp_path / "old.ckpt"))
    assert resumed == pytest.approx(whole[step:], rel=1e-12)


def test_an_old_lambdalr_state_of_a_constant_rate_leaves_nothing_to_resume():
    from genrec.modules.checkpoints import migrate

    old = {"base_lrs": [0.01], "last_epoch": 7, "_step_count": 8, "_last_lr": [0.01], "lr_lambdas": [None]}
    ckpt = migrate({"hyper_parameters": {"optim": {"lr": 0.01, "warmup_steps": 1}}, "lr_schedulers": [old]})
    assert ckpt["lr_schedulers"] == []  # as ``adamw`` builds no scheduler for it
