"""Autograd registration shared by the op modules."""
import torch


def non_differentiable(name: str, n_inputs: int) -> None:
    """Registers an autograd formula for ``rmpe_ext::name`` whose outputs carry no
    gradient (discrete decisions, integer indices): they do not require grad even
    when the inputs do, so a backward through them fails loudly instead of
    silently giving nothing."""

    def setup_context(ctx, inputs, output):
        outs = output if isinstance(output, tuple) else (output,)
        ctx.mark_non_differentiable(*outs)

    def backward(ctx, *grads):
        return (None,) * n_inputs

    torch.library.register_autograd(f"rmpe_ext::{name}", backward, setup_context=setup_context)
