"""im2win.optimize on small blocks shaped like torchvision's BasicBlock and Bottleneck, an
inverted residual, functional activations and activation-then-add: outputs against the
float64 original, the fused calls counted, what was left alone reported."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import im2win
from helpers import DEVICE, TOL, assert_close, randn
from im2win.fusion import FusedConv2d


def randomize_bn(model: nn.Module) -> nn.Module:
    """Non-trivial batch-norm statistics and affine parameters (not the defaults)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn_like(m.running_mean))
                m.running_var.copy_(torch.rand_like(m.running_var) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.randn_like(m.weight))
                    m.bias.copy_(torch.randn_like(m.bias))
    return model


def conv_bn(c_in, c_out, k=3, stride=1, groups=1, bias=False, affine=True):
    return [
        nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=bias),
        nn.BatchNorm2d(c_out, affine=affine),
    ]


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: conv-bn-relu, conv-bn, += identity (or downsample), relu."""

    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(c_in, c_out, stride=stride)
        self.relu = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = conv_bn(c_out, c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(*conv_bn(c_in, c_out, k=1, stride=stride))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck: 1x1, 3x3 (stride), 1x1 expansion, each conv-bn; one relu
    module used three times; downsample conv-bn on the identity."""

    def __init__(self, c_in, width, stride=1):
        super().__init__()
        c_out = width * 4
        self.conv1, self.bn1 = conv_bn(c_in, width, k=1)
        self.conv2, self.bn2 = conv_bn(width, width, stride=stride)
        self.conv3, self.bn3 = conv_bn(width, c_out, k=1)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = nn.Sequential(*conv_bn(c_in, c_out, k=1, stride=stride))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = self.downsample(x)
        out += identity
        return self.relu(out)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: expand conv-bn-relu6, depthwise conv-bn-relu6, project conv-bn,
    + identity."""

    def __init__(self, c, expand=2):
        super().__init__()
        hidden = c * expand
        self.conv = nn.Sequential(
            *conv_bn(c, hidden, k=1), nn.ReLU6(inplace=True),
            *conv_bn(hidden, hidden, groups=hidden), nn.ReLU6(inplace=True),
            *conv_bn(hidden, c, k=1),
        )  # fmt: skip

    def forward(self, x):
        return x + self.conv(x)


class Functional(nn.Module):
    """Functional and method activations, a conv with a bias and a BN without affine, and
    activation-then-add (the residual after the activation)."""

    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(c, c, bias=True)
        self.conv2, self.bn2 = conv_bn(c, c, affine=False)
        self.conv3, self.bn3 = conv_bn(c, c)
        self.conv4, self.bn4 = conv_bn(c, c)
        self.conv5 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        y = F.silu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y)).relu_()
        y = torch.add(F.gelu(self.bn3(self.conv3(y))), x)  # activation, then the residual
        y = F.hardswish(self.bn4(self.conv4(y)) + y)
        return torch.sigmoid(self.conv5(y))  # no batch norm: the activation alone fuses


class BatchNormAct2d(nn.BatchNorm2d):
    """timm's batch norm with its activation (`timm.layers.norm_act.BatchNormAct2d`), as it
    runs in eval: batch norm, then `drop`, then `act`. optimize knows it by module and name
    (timm is not a test dependency), so the class claims timm's module."""

    def __init__(self, c, act=None):
        super().__init__(c)
        self.drop = nn.Identity()
        self.act = act or nn.Identity()

    def forward(self, x):
        return self.act(self.drop(super().forward(x)))


BatchNormAct2d.__module__ = "timm.layers.norm_act"


class TimmInvertedResidual(nn.Module):
    """timm's EfficientNet block: 1x1 expand with BatchNormAct2d(SiLU), depthwise with
    BatchNormAct2d(SiLU), 1x1 project with BatchNormAct2d(identity), + shortcut."""

    def __init__(self, c, expand=2):
        super().__init__()
        hidden = c * expand
        self.conv_pw, self.bn1 = (
            nn.Conv2d(c, hidden, 1, bias=False),
            BatchNormAct2d(hidden, nn.SiLU()),
        )
        self.conv_dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False)
        self.bn2 = BatchNormAct2d(hidden, nn.SiLU(inplace=True))
        self.conv_pwl, self.bn3 = nn.Conv2d(hidden, c, 1, bias=False), BatchNormAct2d(c)

    def forward(self, x):
        y = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        return self.bn3(self.conv_pwl(y)) + x


class TimmBottleneck(nn.Module):
    """timm's RegNet block end: conv, BatchNormAct2d(identity), + shortcut, ReLU; and a
    BatchNormAct2d(ReLU) before it."""

    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = (
            nn.Conv2d(c, c, 3, padding=1, bias=False),
            BatchNormAct2d(c, nn.ReLU()),
        )
        self.conv2, self.bn2 = nn.Conv2d(c, c, 1, bias=False), BatchNormAct2d(c)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.bn2(self.conv2(self.bn1(self.conv1(x)))) + x)


class Mlp(nn.Module):
    """timm's `Mlp`: fc1, act, drop1, norm (identity), fc2, drop2."""

    def __init__(self, c, hidden, act=nn.GELU):
        super().__init__()
        self.fc1, self.act, self.drop1 = nn.Linear(c, hidden), act(), nn.Dropout(0.0)
        self.norm, self.fc2, self.drop2 = nn.Identity(), nn.Linear(hidden, c), nn.Dropout(0.0)

    def forward(self, x):
        return self.drop2(self.fc2(self.norm(self.drop1(self.act(self.fc1(x))))))


class TimmConvNeXtBlock(nn.Module):
    """timm's ConvNeXt block (conv_mlp=False): depthwise 7x7, LayerNorm and the MLP over
    [N, H, W, C], permuted back, times the layer scale `gamma`, plus the shortcut."""

    def __init__(self, c):
        super().__init__()
        self.conv_dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.mlp = Mlp(c, 4 * c)
        self.gamma = nn.Parameter(torch.rand(c) + 0.5)
        self.shortcut = nn.Identity()

    def forward(self, x):
        shortcut = x
        x = self.norm(self.conv_dw(x).permute(0, 2, 3, 1))
        x = self.mlp(x).permute(0, 3, 1, 2)
        x = x.mul(self.gamma.reshape(1, -1, 1, 1))
        return x + self.shortcut(shortcut)


def stochastic_depth(input, p, mode, training=True):
    """torchvision's `stochastic_depth` as optimize sees it (a wrapped function of
    torchvision.ops), here the identity it is in eval."""
    assert not training
    return input


stochastic_depth.__module__ = "torchvision.ops.stochastic_depth"
torch.fx.wrap("stochastic_depth")


class Permute(nn.Module):
    """torchvision's `ops.misc.Permute`."""

    def __init__(self, dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return torch.permute(x, self.dims)


class TorchvisionCNBlock(nn.Module):
    """torchvision's ConvNeXt block: one Sequential from the depthwise conv to the permute
    back, `layer_scale * block(input)`, stochastic depth, `+=` the input."""

    def __init__(self, c):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(c, c, 7, padding=3, groups=c), Permute([0, 2, 3, 1]),
            nn.LayerNorm(c, eps=1e-6), nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c),
            Permute([0, 3, 1, 2]),
        )  # fmt: skip
        self.layer_scale = nn.Parameter(torch.rand(c, 1, 1) + 0.5)

    def forward(self, input):
        result = self.layer_scale * self.block(input)
        result = stochastic_depth(result, 0.1, "row", self.training)
        result += input
        return result


# model, input shape, FusedConv2d modules expected (the residual blocks fuse every conv).
MODELS = {
    "basic": (lambda: BasicBlock(4, 4), (2, 4, 7, 6), 2),
    "basic_downsample": (lambda: BasicBlock(4, 6, stride=2), (2, 4, 7, 6), 3),
    "bottleneck": (lambda: Bottleneck(8, 3, stride=2), (1, 8, 6, 7), 4),
    "inverted_residual": (lambda: InvertedResidual(4), (2, 4, 5, 6), 3),
    "functional": (lambda: Functional(4), (1, 4, 6, 5), 5),
    "timm_inverted_residual": (lambda: TimmInvertedResidual(4), (2, 4, 5, 6), 3),
    "timm_bottleneck": (lambda: TimmBottleneck(5), (1, 5, 7, 6), 2),
    # the MLP's two Linears as 1x1 convs; the depthwise conv, before a LayerNorm, converted
    "timm_convnext": (lambda: TimmConvNeXtBlock(8), (2, 8, 5, 6), 2),
    "torchvision_convnext": (lambda: TorchvisionCNBlock(8), (1, 8, 6, 7), 2),
}


def make(name: str, dtype=torch.float32) -> tuple[nn.Module, tuple[int, ...], int]:
    build, shape, fused = MODELS[name]
    model = randomize_bn(build()).to(DEVICE, dtype).eval()
    return model, shape, fused


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def check(model, x, fused: int, bound: float) -> nn.Module:
    """optimize(model): fused calls counted, no batch norm left, the output against the
    float64 original, `model` itself unchanged."""
    expected = copy.deepcopy(model).double()(x.double())
    before, modules = state_of(model), dict(model.named_modules())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left alone
        opt = im2win.optimize(model)
    assert isinstance(opt, torch.fx.GraphModule)
    assert sum(isinstance(m, FusedConv2d) for m in opt.modules()) == fused
    assert not any(isinstance(m, nn.BatchNorm2d) for m in opt.modules())
    with torch.no_grad():
        y = opt(x)
    assert y.dtype == x.dtype
    assert_close(y.double(), expected, bound)
    assert dict(model.named_modules()) == modules  # same objects, same classes
    assert all(type(m) is not im2win.nn.Conv2d for m in model.modules())
    after = state_of(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    return opt


@pytest.mark.parametrize("name", MODELS)
def test_blocks_fp32(name):
    torch.manual_seed(0)
    model, shape, fused = make(name)
    check(model, randn(*shape), fused, TOL[torch.float32])


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize(
    "name",
    ["bottleneck", "inverted_residual", "functional", "timm_inverted_residual", "timm_convnext"],
)
def test_blocks_16bit(name, dtype, layout):
    """The model cast to 16 bits before optimize; the reference is that model in float64.
    The folded weight is rounded once more than the stock model's: about twice its error
    (bf16: 3e-3 to 6e-3 here, the stock model 2e-3 to 3e-3), still in the tier's bound."""
    torch.manual_seed(1)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    model, shape, fused = make(name, dtype)
    x = randn(*shape, dtype=dtype, channels_last=layout == "channels_last")
    check(model, x, fused, TOL[dtype])


@pytest.mark.parametrize("name", ["timm_convnext", "torchvision_convnext"])
def test_convnext_mlp_becomes_two_fused_convs(name):
    """ConvNeXt's MLP: the first Linear a 1x1 conv with the GELU in its store, the second
    with the layer scale folded into its weight and bias and the shortcut added in its
    store; no Linear, multiply, add or stochastic depth left in the graph."""
    torch.manual_seed(4)
    model, shape, _ = make(name)
    opt = im2win.optimize(model)
    first, second = [m for m in opt.modules() if isinstance(m, FusedConv2d)]
    assert (first.activation, first.residual) == ("gelu", None)
    assert (second.activation, second.residual) == (None, "before")
    scale = (model.gamma if name == "timm_convnext" else model.layer_scale).detach().reshape(-1)
    fc2 = model.mlp.fc2 if name == "timm_convnext" else model.block[5]
    assert_close(second.weight.double().squeeze(), fc2.weight.double() * scale.double()[:, None],
                 1e-7)  # fmt: skip
    assert_close(second.bias.double(), fc2.bias.double() * scale.double(), 1e-7)
    assert not any(isinstance(m, nn.Linear) for m in opt.modules())
    ops = [n.target for n in opt.graph.nodes if n.op in ("call_method", "call_function")]
    names = [getattr(t, "__name__", t) for t in ops]
    assert not {"mul", "add", "iadd", "stochastic_depth", "gelu"} & set(names), names


class MlpLeftAlone(nn.Module):
    """MLPs that do not match in whole: fc1's output used twice (nothing fuses); a scale
    along W, not the channels (the MLP fuses, the multiply and the add stay)."""

    def __init__(self, c):
        super().__init__()
        self.a = Mlp(c, 2 * c, act=nn.ReLU)
        self.b = Mlp(c, 2 * c)
        self.along_w = nn.Parameter(torch.rand(5) + 0.5)

    def forward(self, x):
        h = self.a.fc1(x.permute(0, 2, 3, 1))
        y = (self.a.fc2(F.relu(h)) + h[..., :1]).permute(0, 3, 1, 2)
        z = self.b(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return z * self.along_w + y


def test_mlp_that_does_not_match_stays_correct():
    torch.manual_seed(5)
    model = MlpLeftAlone(4).eval()
    x = randn(2, 4, 3, 5)
    opt = im2win.optimize(model)
    fused = [m for m in opt.modules() if isinstance(m, FusedConv2d)]
    assert [(m.activation, m.residual) for m in fused] == [("gelu", None), (None, None)]
    assert sum(isinstance(m, nn.Linear) for m in opt.modules()) == 2  # a's
    with torch.no_grad():
        assert_close(opt(x).double(), model.double()(x.double()), TOL[torch.float32])


def test_fold_math():
    """One conv (bias) -> BN: the folded weight and bias against the formula in float64; a
    conv without bias and a BN without affine folds too."""
    torch.manual_seed(2)
    for bias, affine in ((True, True), (False, False)):
        model = randomize_bn(nn.Sequential(*conv_bn(3, 5, bias=bias, affine=affine))).eval()
        opt = im2win.optimize(model)
        fused = opt.get_submodule("0")
        conv, bn = model
        scale = (bn.weight.double() if affine else 1) / (bn.running_var.double() + bn.eps).sqrt()
        b = conv.bias.double() if bias else 0
        shift = bn.bias.double() if affine else 0
        assert_close(fused.weight.double(), conv.weight.double() * scale.view(-1, 1, 1, 1), 1e-7)
        assert_close(fused.bias.double(), (b - bn.running_mean.double()) * scale + shift, 1e-7)
        x = randn(2, 3, 5, 4)
        with torch.no_grad():
            assert_close(opt(x).double(), model.double()(x.double()), TOL[torch.float32])


class LeftAlone(nn.Module):
    """Three BNs that cannot fold: training mode, after a reflect-padded conv, after a conv
    whose output is also used elsewhere."""

    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(c, c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, padding_mode="reflect")
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3, self.bn3 = conv_bn(c, c)

    def forward(self, x):
        y = self.bn1(self.conv1(x))
        y = self.bn2(self.conv2(y))
        z = self.conv3(y)
        return self.bn3(z) + z


def test_what_cannot_fold_is_left_and_reported():
    torch.manual_seed(3)
    model = randomize_bn(LeftAlone(4)).eval()
    model.bn1.train()
    x = randn(1, 4, 5, 5)
    with torch.no_grad():
        expected = copy.deepcopy(model).double()(x.double())
    with pytest.warns(UserWarning, match="left these as they were") as record:
        opt = im2win.optimize(model)
    assert len(record) == 1
    report = str(record[0].message)
    assert "bn1 (after conv1): not folded: the batch norm is in training mode" in report
    assert "bn2 (after conv2): not folded: the conv's padding_mode is 'reflect'" in report
    assert "bn3 (after conv3): not folded: the conv's output has other users" in report
    assert sum(isinstance(m, nn.BatchNorm2d) for m in opt.modules()) == 3
    assert not any(isinstance(m, FusedConv2d) for m in opt.modules())
    assert all(type(opt.get_submodule(f"conv{i}")) is im2win.nn.Conv2d for i in (1, 2, 3))
    running_mean = model.bn1.running_mean.clone()
    with torch.no_grad():  # bn1 normalizes with the batch's statistics, as in the original
        assert_close(opt(x).double(), expected, TOL[torch.float32])
    assert torch.equal(model.bn1.running_mean, running_mean)  # the copy's were updated


def test_batch_norm_act_with_another_activation_is_left_and_reported():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), BatchNormAct2d(4, nn.LeakyReLU()))
    model = randomize_bn(model).eval()
    x = randn(1, 3, 6, 5)
    with pytest.warns(UserWarning, match="1 .after 0.: not folded: its activation LeakyReLU"):
        opt = im2win.optimize(model)
    assert isinstance(opt.get_submodule("1"), BatchNormAct2d)
    with torch.no_grad():
        assert_close(opt(x).double(), model.double()(x.double()), TOL[torch.float32])


def test_training_mode_raises():
    with pytest.raises(ValueError, match="eval"):
        im2win.optimize(BasicBlock(4, 4))


def test_untraceable_model_raises():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else x

    with pytest.raises(RuntimeError, match="torch.fx cannot trace Branchy"):
        im2win.optimize(Branchy().eval())


def test_already_converted_and_broadcast_residual():
    """An im2win Conv2d folds as a torch one (its precision kept); a bare conv becomes im2win;
    an add of a broadcast tensor runs unfused and stays right."""
    torch.manual_seed(4)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = conv_bn(3, 4)
            self.conv2 = nn.Conv2d(4, 4, 1)

        def forward(self, x, b):
            return self.conv2(F.relu(self.bn1(self.conv1(x)) + b))

    model = randomize_bn(Model()).eval()
    im2win.convert(model.conv1, precision="ieee")
    opt = im2win.optimize(model)
    fused = opt.get_submodule("conv1")
    assert isinstance(fused, FusedConv2d) and fused.precision == "ieee"
    assert fused.residual == "before" and fused.activation == "relu"
    assert type(opt.get_submodule("conv2")) is im2win.nn.Conv2d
    assert "+ residual, relu, precision='ieee'" in repr(fused)
    x, b = randn(2, 3, 5, 5), randn(4, 1, 1)
    with torch.no_grad():
        y = opt(x, b)
    assert_close(y.double(), model.double()(x.double(), b.double()), TOL[torch.float32])


def test_in_place_ops():
    """An in-place activation module then an add fuses (residual after the activation); an
    add after an in-place op on the conv's input does not (the fused call, made at the add,
    would read the mutated input): that chain stops at the folded batch norm."""
    torch.manual_seed(5)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = conv_bn(4, 4)
            self.relu = nn.ReLU(inplace=True)
            self.conv2, self.bn2 = conv_bn(4, 4)

        def forward(self, x):
            y = self.relu(self.bn1(self.conv1(x))) + x
            z = self.bn2(self.conv2(y))
            y.relu_()
            return z + y

    model = randomize_bn(Model()).eval()
    x = randn(2, 4, 5, 6)
    expected = copy.deepcopy(model).double()(x.double())
    opt = im2win.optimize(model)
    conv1, conv2 = opt.get_submodule("conv1"), opt.get_submodule("conv2")
    assert (conv1.activation, conv1.residual) == ("relu", "after")
    assert (conv2.activation, conv2.residual) == (None, None)
    with torch.no_grad():
        assert_close(opt(x).double(), expected, TOL[torch.float32])
