"""The model-based attack (after DP, Huang et al. 2021, and Rev, Tang et al. 2020): a surrogate
SASRec trained on the clean training data picks, per step, among its ``candidates`` likeliest next
items the one whose appended state scores the targets highest.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from genrec.data.datamodule import Collator, TrainWindows
from genrec.data.preprocess import SequenceData
from genrec.models import SASRec
from genrec.modules import RetrievalModule
from genrec.modules.negatives import LossConfig
from genrec.modules.retrieval_module import RETRIEVAL_OPTIM
from genrec.robust.attack_config import ModelAttack

SURROGATE_LEN = 50
BATCH = 128


@torch.enable_grad()
def train_surrogate(data: SequenceData, train_end: np.ndarray, config: ModelAttack, seed: int):
    torch.manual_seed(seed)
    net = SASRec(dim=config.surrogate_dim, num_blocks=2, num_heads=1, dropout=0.2, max_seq_len=SURROGATE_LEN)
    module = RetrievalModule(net, num_items=data.num_items, loss=LossConfig(negatives="sequence"),
                             optim=replace(RETRIEVAL_OPTIM, lr=2e-3))
    windows = TrainWindows(data, train_end, SURROGATE_LEN, "last")
    collate = Collator(data, SURROGATE_LEN).train
    opt = module.configure_optimizers()
    gen = torch.Generator().manual_seed(seed)
    module.train()
    for _ in range(config.surrogate_epochs):
        for idx in torch.randperm(len(windows), generator=gen).split(BATCH):
            batch = collate([windows[int(i)] for i in idx])
            valid = batch["targets"] > 0
            logits = module._logits(module.encode(batch), batch["targets"], valid)
            loss = F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return module.eval()


@torch.no_grad()
def model_based_profiles(data: SequenceData, train_end: np.ndarray, counts: np.ndarray, targets: np.ndarray,
                         lengths: np.ndarray, config: ModelAttack, rng: np.random.Generator,
                         planted: np.ndarray | None = None) -> list[np.ndarray]:
    """Fake profiles of ``lengths``: fillers drawn by popularity, then the last ``model_steps`` chosen
    greedily, then ``planted`` (default: each target once)."""
    planted = targets if planted is None else planted
    module = train_surrogate(data, train_end, config, int(rng.integers(2**31)))
    items = module.item_vectors()  # (N+1, D)
    target_vecs = items[torch.as_tensor(targets)]  # (T, D)
    popularity = counts[1:] / counts[1:].sum()
    fillers = [n - len(planted) for n in lengths]
    # Each fake starts from a popular item, then grows greedily for up to model_steps items.
    prefixes = [list(rng.choice(data.num_items, 1, p=popularity) + 1) for _ in fillers]
    banned = torch.zeros(len(fillers), data.num_items + 1, dtype=torch.bool)
    banned[:, 0] = True
    banned[:, torch.as_tensor(targets)] = True
    for r, p in enumerate(prefixes):
        banned[r, p] = True
    steps = min(config.model_steps, max(fillers)) - 1
    for step in range(steps):
        active = [r for r, n in enumerate(fillers) if len(prefixes[r]) < min(n, config.model_steps)]
        if not active:
            break
        batch = _batch([prefixes[r] for r in active])
        state = module.user_vectors(batch)  # (A, D)
        next_scores = (state @ items.T).masked_fill(banned[active], float("-inf"))  # (A, N+1)
        cands = next_scores.topk(config.candidates, dim=1).indices  # (A, C)
        grown = [prefixes[r] + [int(c)] for r, row in zip(active, cands) for c in row]
        gain = (module.user_vectors(_batch(grown)) @ target_vecs.T).mean(1)  # (A*C,)
        best = cands.gather(1, gain.view(len(active), -1).argmax(1, keepdim=True)).squeeze(1)  # (A,)
        for r, c in zip(active, best.tolist()):
            prefixes[r].append(c)
            banned[r, c] = True
    out = []
    for r, n in enumerate(fillers):
        greedy = np.asarray(prefixes[r][:n], np.int64)
        allowed = np.flatnonzero(~banned[r].numpy())
        weights = counts[allowed] + 1.0
        head = rng.choice(allowed, min(n - len(greedy), len(allowed)), replace=False, p=weights / weights.sum())
        head = np.resize(head, n - len(greedy)) if len(head) else np.zeros(0, np.int64)
        out.append(np.concatenate([head, greedy, rng.permutation(planted)]).astype(np.int64))
    return out


def _batch(prefixes: list[list[int]]) -> dict[str, torch.Tensor]:
    windows = [torch.as_tensor(p[-SURROGATE_LEN:]) for p in prefixes]
    items = torch.nn.utils.rnn.pad_sequence(windows, batch_first=True)
    lengths = torch.as_tensor([len(w) for w in windows])
    return {"items": items, "timestamps": torch.zeros_like(items), "lengths": lengths}

