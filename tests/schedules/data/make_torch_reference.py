"""Generates `torch_one_cycle.json`: PyTorch's OneCycleLR, step by step.

Run once, by hand, with PyTorch 2.13.0 in a separate environment (the tests
only read the JSON file; torch is not a test dependency)::

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch==2.13.0 numpy
    /tmp/torchenv/bin/python tests/schedules/data/make_torch_reference.py

For every case it records, for steps 0 .. total_steps - 1, the learning rate
and the momentum that `torch.optim.SGD` (momentum) and `torch.optim.Adam`
(betas[0]) hold while taking that step.
"""

import json
import pathlib

import torch

CASES = [
    dict(max_lr=0.1, total_steps=1000),
    dict(max_lr=0.1, total_steps=1000, anneal_strategy="linear"),
    dict(max_lr=1.0, total_steps=137, pct_start=0.25, three_phase=True),
    dict(
        max_lr=1.0,
        total_steps=137,
        pct_start=0.25,
        three_phase=True,
        anneal_strategy="linear",
    ),
    dict(max_lr=3e-3, total_steps=250, div_factor=10.0, final_div_factor=100.0),
    dict(
        max_lr=0.5,
        total_steps=97,
        pct_start=0.45,
        div_factor=4.0,
        final_div_factor=1e3,
        base_momentum=0.8,
        max_momentum=0.99,
    ),
    dict(max_lr=2.0, total_steps=10, pct_start=0.35, three_phase=True),
    dict(max_lr=0.01, total_steps=7, pct_start=0.3, anneal_strategy="linear"),
]


def trace(case, optimizer_class, momentum_key):
    parameter = torch.nn.Parameter(torch.zeros(1))
    if optimizer_class is torch.optim.SGD:
        optimizer = optimizer_class([parameter], lr=0.1, momentum=0.9)
    else:
        optimizer = optimizer_class([parameter], lr=0.1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, **case)
    rates, momenta = [], []
    for _ in range(case["total_steps"]):
        group = optimizer.param_groups[0]
        rates.append(float(group["lr"]))
        value = group[momentum_key]
        momenta.append(float(value[0] if momentum_key == "betas" else value))
        optimizer.step()
        scheduler.step()
    return rates, momenta


def main():
    torch.set_default_dtype(torch.float64)
    records = []
    for case in CASES:
        rates, momenta = trace(case, torch.optim.SGD, "momentum")
        adam_rates, betas = trace(case, torch.optim.Adam, "betas")
        assert adam_rates == rates and betas == momenta
        records.append({"arguments": case, "learning_rate": rates, "momentum": momenta})
    path = pathlib.Path(__file__).with_name("torch_one_cycle.json")
    payload = {"torch_version": torch.__version__, "cases": records}
    path.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {len(records)} cases to {path}")


if __name__ == "__main__":
    main()
