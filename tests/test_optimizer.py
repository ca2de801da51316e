"""The trainer's SGD: fused where torch has the kernel, and the same steps as torch's default SGD."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from timm_fer.engine import create_sgd


def test_cpu_sgd_is_fused():
    optimizer = create_sgd([torch.nn.Parameter(torch.zeros(3))], torch.device('cpu'), lr=0.1)
    assert optimizer.defaults['fused'] is True


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 16), momentum=st.sampled_from([0., 0.9]), weight_decay=st.sampled_from([0., 5e-4]),
       nesterov=st.booleans(), steps=st.integers(1, 4))
def test_fused_sgd_takes_the_default_sgds_steps(seed, momentum, weight_decay, nesterov, steps):
    generator = torch.Generator().manual_seed(seed)
    shapes = [(7,), (3, 5), (2, 3, 3, 3)]
    start = [torch.randn(shape, generator=generator) for shape in shapes]
    grads = [[torch.randn(shape, generator=generator) for shape in shapes] for _ in range(steps)]
    nesterov = nesterov and momentum > 0
    results = []
    for make in (lambda p: create_sgd(p, torch.device('cpu'), lr=0.05, momentum=momentum,
                                      weight_decay=weight_decay, nesterov=nesterov),
                 lambda p: torch.optim.SGD(p, lr=0.05, momentum=momentum, weight_decay=weight_decay,
                                           nesterov=nesterov)):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        optimizer = make(params)
        for step_grads in grads:
            for param, grad in zip(params, step_grads):
                param.grad = grad.clone()
            optimizer.step()
        results.append(params)
    for fused, default in zip(*results):
        torch.testing.assert_close(fused.detach(), default.detach(), rtol=1e-5, atol=1e-6)
