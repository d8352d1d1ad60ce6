"""Batched beam search over item tokens, constrained to a catalogue trie or not.

``step_fn(t, prefix)`` maps the beams' tokens so far (B, W, t) to log-probs (B, W, V) of token ``t``.
Constrained search expands beams only along trie edges, so every result is a distinct catalogue item.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from genrec.decoding.trie import CodeTrie

StepFn = Callable[[int, Tensor], Tensor]
ChildBias = Callable[[int, Tensor], Tensor]


def _select(scores: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """Top ``width`` of (B, M) scores: (values, flat indices), padded with -inf when M < width."""
    top, idx = scores.topk(min(width, scores.shape[1]), dim=1)
    if top.shape[1] < width:
        pad = width - top.shape[1]
        top = torch.cat([top, top.new_full((len(top), pad), float("-inf"))], 1)
        idx = torch.cat([idx, idx.new_zeros((len(idx), pad))], 1)
    return top, idx


@torch.no_grad()
def constrained_beam_search(step_fn: StepFn, trie: CodeTrie, batch_size: int, beam_width: int, k: int,
                            exclude: Tensor | None = None, child_bias: ChildBias | None = None,
                            normalize: bool = False) -> tuple[Tensor, Tensor]:
    """The k best catalogue items per row: ((B, k) item ids, (B, k) scores), best first; unfillable slots
    hold item 0 with score -inf. ``exclude`` (B, H) ids are never returned; ``child_bias(t, next)`` adds a
    score per child node (B, W, K); ``normalize`` log-softmaxes each beam's scores over its valid children.
    """
    dev, B, width = trie.device, batch_size, max(beam_width, k)
    nodes = torch.zeros(B, 1, dtype=torch.long, device=dev)
    scores = torch.zeros(B, 1, device=dev)
    prefix = torch.zeros(B, 1, 0, dtype=torch.long, device=dev)
    for t in range(trie.depth):
        last = t == trie.depth - 1
        logp = step_fn(t, prefix)  # (B, W, V)
        if t == 0:  # one beam at the root: mask the logits densely, O(V) whatever the catalogue size
            nxt, valid = (x.expand(B, 1, -1) for x in trie.root_children(logp.shape[-1]))
            codes = torch.arange(logp.shape[-1], device=dev).expand(B, 1, -1)
        else:
            codes, nxt, valid = trie.children(t, nodes)  # (B, W, K)
            logp = logp.gather(-1, codes)
        if child_bias is not None:
            logp = logp + child_bias(t, nxt)
        logp = logp.masked_fill(~valid, float("-inf"))
        if normalize:  # a beam whose children all score -inf keeps -inf, not NaN
            logp = logp - logp.logsumexp(-1, keepdim=True).clamp(min=-1e30)
        cand = (scores[..., None] + logp).masked_fill(torch.isinf(scores)[..., None], float("-inf"))
        if last and exclude is not None:
            banned = (nxt[..., None] == exclude[:, None, None, :]).any(-1) & (nxt > 0)  # (B, W, K)
            cand = cand.masked_fill(banned, float("-inf"))
        K = codes.shape[-1]
        scores, flat = _select(cand.view(B, -1), k if last else width)  # (B, W')
        beam = flat // K
        prefix = torch.cat([prefix.gather(1, beam[..., None].expand(-1, -1, t)),
                            codes.view(B, -1).gather(1, flat)[..., None]], dim=2)
        nodes = nxt.view(B, -1).gather(1, flat)
    return nodes.masked_fill(torch.isinf(scores), 0), scores


@torch.no_grad()
def beam_search(step_fn: StepFn, batch_size: int, depth: int, vocab_size: int, beam_width: int,
                device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Unconstrained beam search (the baseline of the decoding benchmark): ((B, W, T) tokens, (B, W) scores)."""
    B, W = batch_size, beam_width
    scores = torch.zeros(B, 1, device=device)
    prefix = torch.zeros(B, 1, 0, dtype=torch.long, device=device)
    for t in range(depth):
        cand = scores[..., None] + step_fn(t, prefix)  # (B, W, V)
        scores, flat = cand.view(B, -1).topk(min(W, cand[0].numel()), dim=1)
        beam = flat // vocab_size
        prefix = torch.cat([prefix.gather(1, beam[..., None].expand(-1, -1, t)), (flat % vocab_size)[..., None]], 2)
    return prefix, scores
