"""A differentiable PESQ (ITU-T P.862) as a training loss, from the `torch-pesq` package.

PESQ compares loudness-domain Bark spectra of the reference and the estimate after level,
frequency-response and frame-gain equalisation, and punishes added energy (the asymmetric
disturbance) harder than missing energy. A log-mel L1 weighs both alike, which is one reason a
codec trained on it can score lower PESQ than its mel distance suggests. `torch-pesq` follows
P.862 except for its time alignment (none; our decoder has no delay) and IIR level filter; on our
decoded speech it ranks 1.5 kbps below 3.5 kbps for the same file like the `pesq` package does,
though its absolute scores scatter (correlation 0.62 across 14 files and two rates).

The loss is `torch-pesq`'s: 0.1 * symmetric + 0.0309 * asymmetric disturbance, the part of the
MOS formula before its compression curve, so 4.5 minus the loss is the raw MOS estimate.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from training.losses import loud_items


def _zero_non_finite_items(grad: Tensor) -> Tensor:
    """Gradient [B, T] with the items that hold a NaN or inf set to 0. torch-pesq sends NaN back
    for an item whose frames it all calls silent (0 / 0) and, in float32, for a 20-frame window
    without audible error (its floored disturbances' sixth powers underflow to 0, where the sixth
    root has no finite slope). Those items then teach nothing instead of poisoning the weights;
    float64 would avoid the underflow at several times the cost."""
    return grad.masked_fill(~torch.isfinite(grad).all(dim=1, keepdim=True), 0.0)


class PesqLoss(nn.Module):
    """x_hat, x [B, 1, T] -> mean PESQ disturbance over the items loud enough to score."""

    def __init__(self, sample_rate: int):
        super().__init__()
        try:
            from torch_pesq import PesqLoss as TorchPesq
        except ImportError as error:
            raise ImportError("the PESQ loss needs `pip install torch-pesq` (the training extra)") from error
        self.pesq = TorchPesq(1.0, sample_rate=sample_rate)

    def forward(self, x_hat: Tensor, x: Tensor) -> Tensor:
        reference, estimate = x[:, 0].float(), x_hat[:, 0].float()
        loud = loud_items(reference)  # PESQ levels every signal to the same loudness
        if not loud.any():
            return x_hat.sum() * 0.0
        # torch-pesq scales its inputs in place on the way; give it copies.
        reference, estimate = reference[loud].clone(), estimate[loud].clone()
        if estimate.requires_grad:
            estimate.register_hook(_zero_non_finite_items)
        disturbance = self.pesq(reference, estimate)
        finite = torch.isfinite(disturbance.detach())
        if not finite.any():
            return x_hat.sum() * 0.0
        return disturbance[finite].mean()

    @torch.no_grad()
    def mos(self, x_hat: Tensor, x: Tensor) -> Tensor:
        """x_hat, x [B, 1, T] -> PESQ-WB-like MOS per item [B] (for tests and diagnostics)."""
        return self.pesq.mos(x[:, 0].float().clone(), x_hat[:, 0].float().clone())
