"""A custom Apache MXNet Gluon network as a Kiln candidate (trainer contract: ``ml_tasks/trainer.py``).

Wide & deep: a linear layer on the features plus a two-layer ReLU network, summed. A binary label trains
with sigmoid cross-entropy; a numeric label on its standardised value, mapped back to the label's unit.
The network is exported as a symbol and params (``HybridBlock.export``), which ``load`` imports for serving.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ml_tasks.train_mxnet import import_mxnet  # MXNet 1.9.1 with numpy's removed aliases put back
from ml_tasks.trainer import Trained, TrainerInput

PREFIX = "wide_deep"


def build(hidden: int):
    mx = import_mxnet()
    from mxnet.gluon import nn

    class WideDeep(nn.HybridBlock):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            with self.name_scope():
                self.wide = nn.Dense(1)
                self.deep = nn.HybridSequential()
                self.deep.add(nn.Dense(hidden, activation="relu"), nn.Dense(hidden, activation="relu"), nn.Dense(1))

        def hybrid_forward(self, F, x):
            return self.wide(x) + self.deep(x)

    net = WideDeep(prefix="wide_deep_")
    net.initialize(mx.init.Xavier(), ctx=mx.cpu())
    net.hybridize()
    return net


def train(inp: TrainerInput) -> Trained:
    mx = import_mxnet()
    from mxnet import autograd, gluon

    p = inp.params
    x, y = inp.train_arrays()
    binary = inp.task == "binary"
    shift, scale = (0.0, 1.0) if binary else (float(y.mean()), float(y.std()) or 1.0)
    target = (y - shift) / scale
    mx.random.seed(inp.seed)
    rng = np.random.default_rng(inp.seed)
    net = build(p["hidden"])
    loss_fn = gluon.loss.SigmoidBinaryCrossEntropyLoss() if binary else gluon.loss.L2Loss()
    trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": p["learning_rate"]})
    for _ in range(p["epochs"]):
        order = rng.permutation(len(y))
        for start in range(0, len(y), p["batch_size"]):
            rows = order[start:start + p["batch_size"]]
            data = mx.nd.array(x[rows].astype(np.float32))
            label = mx.nd.array(target[rows].astype(np.float32)).reshape((-1, 1))
            with autograd.record():
                loss = loss_fn(net(data), label)
            loss.backward()
            trainer.step(len(rows))
    output = {"sigmoid": binary, "shift": shift, "scale": scale}
    net.export(str(inp.output_dir / PREFIX), epoch=0)
    (inp.output_dir / "output.json").write_text(json.dumps(output))
    return Trained(scores=scorer(net, output)(inp.held_out_features()), framework="mxnet-gluon",
                   info={"network": "wide_deep", "label_shift": shift, "label_scale": scale})


def load(model_dir: Path) -> Callable[[np.ndarray], np.ndarray]:
    mx = import_mxnet()
    net = mx.gluon.SymbolBlock.imports(str(model_dir / f"{PREFIX}-symbol.json"), ["data"],
                                       str(model_dir / f"{PREFIX}-0000.params"))
    return scorer(net, json.loads((model_dir / "output.json").read_text()))


def scorer(net, output: dict) -> Callable[[np.ndarray], np.ndarray]:
    mx = import_mxnet()

    def score(x: np.ndarray) -> np.ndarray:
        raw = net(mx.nd.array(np.asarray(x, dtype=np.float32))).asnumpy().astype(np.float64).ravel()
        return 1.0 / (1.0 + np.exp(-raw)) if output["sigmoid"] else raw * output["scale"] + output["shift"]

    return score
