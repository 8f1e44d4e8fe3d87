"""Pooling: token vectors + attention mask -> one vector per text.

The same modes as sentence-transformers' `Pooling` module, with the same arithmetic, so that
fp32 results agree to rounding. Several modes concatenate in the order given (the caller passes
them in the order sentence-transformers would: see `modules.pooling_modes`).
Accumulation is always in fp32, whatever dtype the transformer ran in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

POOLING_MODES = ("mean", "max", "cls", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")


def without_prompt(attention_mask: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """The mask with the first `prompt_length` real tokens of each row turned off (a copy)."""
    import torch

    mask = attention_mask.clone()
    first = attention_mask.to(torch.int32).argmax(dim=1)  # > 0 only where the tokenizer pads on the left
    positions = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
    mask[positions < (first + prompt_length).unsqueeze(1)] = 0
    return mask


def pool(
    token_embeddings: torch.Tensor, attention_mask: torch.Tensor, modes: tuple[str, ...], prompt_length: int = 0
) -> torch.Tensor:
    """Pool `token_embeddings` (batch, seq, hidden) under `attention_mask` (batch, seq) to fp32 (batch, dim).

    `prompt_length` > 0 leaves that many leading tokens (a prompt, [CLS] included) out of every
    mode, as sentence-transformers does for models whose Pooling config has include_prompt false.
    """
    import torch

    tokens = token_embeddings.float()
    original = attention_mask
    if prompt_length:
        attention_mask = without_prompt(attention_mask, prompt_length)
    mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
    rows = torch.arange(tokens.shape[0], device=tokens.device)
    outputs = []
    for mode in modes:
        if mode == "cls":
            # First attended position (position 0 unless the tokenizer pads on the left).
            outputs.append(tokens[rows, attention_mask.to(torch.int).argmax(dim=1)])
        elif mode == "max":
            outputs.append(tokens.masked_fill(mask == 0, float("-inf")).max(dim=1).values)
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            summed = (tokens * mask).sum(dim=1)
            counts = torch.clamp(mask.sum(dim=1), min=1e-9)
            outputs.append(summed / (counts if mode == "mean" else torch.sqrt(counts)))
        elif mode == "weightedmean":
            # Weight position i (1-based, counted from the first real token, prompt included: a
            # left-out prompt keeps the text's weights where they were) by i.
            positions = torch.arange(1, tokens.shape[1] + 1, device=tokens.device, dtype=tokens.dtype).view(1, -1, 1)
            left_pad = original.to(torch.int32).argmax(dim=1).view(-1, 1, 1)
            weights = mask * (positions - left_pad)
            outputs.append((tokens * weights).sum(dim=1) / torch.clamp(weights.sum(dim=1), min=1e-9))
        elif mode == "lasttoken":
            seq_len = attention_mask.shape[1]
            values, from_end = attention_mask.flip(1).max(1)
            from_end = torch.where(values == 0, seq_len - 1, from_end)
            # A row with no attended token gives zeros, as sentence-transformers' gather over masked tokens.
            outputs.append((tokens * mask)[rows, seq_len - from_end - 1])
        else:
            raise ValueError(f"unknown pooling mode {mode!r}")
    return torch.cat(outputs, dim=-1)
