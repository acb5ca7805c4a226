"""The compiled executions' graph rewrites (serve_app/model/graph_rewrites.py): a 1x1 convolution of a concatenation
that holds an upsampling runs before the upsampling, on the fewer pixels, with the same result; where the pattern
is not exact, or would not save work, the graph is left as it was. Then the same through inductor on the CPU, as
the service compiles, saves and loads a bucket. The deformable convolutions written channels-last, or with their
batch norm and ReLU straight into the concatenation that reads them, their offsets and mask from one convolution,
and the MLPs' GELU joined to their first product, with the same values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from serve_app.model.graph_rewrites import (
    ConvBeforeUpsample,
    DeformBnReluConcat,
    DeformChannelsLast,
    FeaturesChannelsLast,
    GeluInMatmul,
    GraphRewrites,
    OffsetMaskConv,
)


class DecoderTail(nn.Module):
    """BiRefNet's last decoder step: features at a quarter of the side, upsampled to the input's size, beside a block
    computed there, reduced to one channel by a 1x1 convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 16, 4, stride=4)
        self.side = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.BatchNorm2d(8))
        self.out = nn.Sequential(nn.Conv2d(16 + 8, 1, 1, 1, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        upsampled = F.interpolate(self.features(x), size=x.shape[2:], mode="bilinear", align_corners=True)
        return self.out(torch.cat((upsampled, self.side(x)), 1))


class Lateral(nn.Module):
    """The encoder's multi-scale features: a half-size copy upsampled between two parts, into a 1x1 convolution with
    `out` channels."""

    def __init__(self, out: int, kernel: int = 1, mode: str = "bilinear") -> None:
        super().__init__()
        self.mode = mode
        self.lateral = nn.Conv2d(2 + 3 + 1, out, kernel, padding=kernel // 2)

    def forward(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        upsampled = F.interpolate(b, size=a.shape[2:], mode=self.mode)
        return self.lateral(torch.cat([a, upsampled, c], dim=1))


def forward(module: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """The compiled forward's function of (module, batch), as the model core's `segment_logits` is."""
    return module(batch)


def traced_and_rewritten(module: nn.Module, *inputs: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """`module`'s output through the graph Dynamo traces, after the upsampling rewrite, and the calls left in it."""
    return traced_with(ConvBeforeUpsample(), module, *inputs)


def traced_with(rewrite: object, module: nn.Module, *inputs: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """`module`'s output through the graph Dynamo traces, after `rewrite`, and the calls left in that graph."""
    out, nodes = traced_nodes(rewrite, module, *inputs)
    return out, [getattr(node.target, "__name__", str(node.target)) for node in nodes if node.op == "call_function"]


def traced_nodes(rewrite: object, module: nn.Module, *inputs: torch.Tensor) -> tuple[torch.Tensor, list[torch.fx.Node]]:
    """`module`'s output through the graph Dynamo traces, after `rewrite`, and the nodes of that graph."""
    nodes: list[torch.fx.Node] = []

    def backend(graph_module: torch.fx.GraphModule, example_inputs: list) -> object:
        rewrite(graph_module.graph)  # type: ignore[operator]
        graph_module.recompile()
        nodes.extend(graph_module.graph.nodes)
        return graph_module.forward

    torch._dynamo.reset()
    with torch.no_grad():
        out = torch.compile(module, backend=backend, fullgraph=True, dynamic=False)(*inputs)
    return out, nodes


def compiled_afresh(rewrites: GraphRewrites, module: nn.Module,
                    x: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """`module`'s output for `x` (one input or a tuple of them) compiled by inductor with `rewrites` as its pre-grad
    pass, and its eager output. Compiled afresh, not served by a cache of an earlier run, so that the passes run in
    this process."""
    inputs = x if isinstance(x, tuple) else (x,)
    torch._dynamo.reset()
    with (torch.no_grad(), torch._inductor.config.patch(fx_graph_cache=False),
          torch._functorch.config.patch(enable_autograd_cache=False)):
        got = torch.compile(module, dynamic=False, options={"pre_grad_custom_pass": rewrites})(*inputs)
        expected = module(*inputs)
    return got, expected


def test_the_decoders_last_convolution_runs_before_its_upsampling() -> None:
    torch.manual_seed(0)
    tail = DecoderTail().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = tail(x)
    got, calls = traced_and_rewritten(tail, x)
    assert "cat" not in calls and calls.count("interpolate") == 1 and "add" in calls
    assert got.shape == expected.shape == (2, 1, 32, 32)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_an_upsampled_part_between_others_splits_the_weight_around_it() -> None:
    torch.manual_seed(1)
    lateral = Lateral(out=3).eval()
    inputs = (torch.randn(2, 2, 16, 16), torch.randn(2, 3, 8, 8), torch.randn(2, 1, 16, 16))
    with torch.no_grad():
        expected = lateral(*inputs)
    got, calls = traced_and_rewritten(lateral, *inputs)
    assert calls.count("conv2d") == 2 and calls.count("interpolate") == 1 and "add" in calls
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("lateral", "why"), [
    (Lateral(out=4), "more channels out than the upsampled part has: no saving"),
    (Lateral(out=3, kernel=3), "a 3x3 convolution mixes pixels: not exact"),
    (Lateral(out=3, mode="bicubic"), "only bilinear and nearest upsampling are taken"),
])
def test_a_graph_outside_the_pattern_is_left_as_it_was(lateral: Lateral, why: str) -> None:
    inputs = (torch.randn(2, 2, 16, 16), torch.randn(2, 3, 8, 8), torch.randn(2, 1, 16, 16))
    with torch.no_grad():
        expected = lateral.eval()(*inputs)
    got, calls = traced_and_rewritten(lateral, *inputs)
    assert calls.count("cat") == 1 and calls.count("conv2d") == 1, why
    torch.testing.assert_close(got, expected)


def test_an_upsampling_that_something_else_reads_is_kept() -> None:
    class Shared(DecoderTail):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
            upsampled = F.interpolate(self.features(x), size=x.shape[2:], mode="bilinear", align_corners=True)
            return self.out(torch.cat((upsampled, self.side(x)), 1)), upsampled.mean()

    _, calls = traced_and_rewritten(Shared().eval(), torch.randn(1, 3, 16, 16))
    assert calls.count("cat") == 1


# Compiles DecoderTail's batch-1 bucket with inductor on the CPU into the cache argv[1], as the service does, and
# prints its output beside eager's and whether the bucket was compiled or loaded from the cache.
_COMPILE = """
import json, sys
from pathlib import Path
import torch
from serve_app.model.compiled import CompiledForward
from serve_app.model.graph_rewrites import ConvBeforeUpsample
from tests.unit.test_graph_rewrites import DecoderTail, forward
torch.manual_seed(0)
tail = DecoderTail().eval()
x = torch.randn(1, 3, 32, 32)
compiled = CompiledForward(forward, tail, sample_shape=(3, 32, 32), dtype=torch.float32,
                           memory_format=torch.contiguous_format, device=torch.device("cpu"), batch_sizes=[1],
                           cache_dir=Path(sys.argv[1]), rewrites=("conv_before_upsample",))
compiled.wait_for_buckets(timeout=600)
with torch.no_grad():
    got, expected = compiled(x), tail(x)
print(json.dumps({"difference": float((got - expected).abs().max()), "scale": float(expected.abs().max()),
                  "precompiled": compiled.warmup[1]["precompiled"], "rewrites": ConvBeforeUpsample.applied}))
"""


def test_the_rewritten_bucket_compiles_saves_and_loads_with_the_same_result(tmp_path: Path) -> None:
    def start() -> dict:
        output = subprocess.run([sys.executable, "-c", _COMPILE, str(tmp_path)], check=True, capture_output=True,
                                text=True, timeout=600, cwd=Path(__file__).parents[2]).stdout
        return json.loads(output.splitlines()[-1])

    first, again = start(), start()
    # compiled with the rewrite, then loaded as saved, without tracing again
    assert not first["precompiled"] and first["rewrites"] == 1
    assert again["precompiled"] and again["rewrites"] == 0
    for run in (first, again):
        assert run["difference"] <= 1e-5 * max(run["scale"], 1.0), run


class AsppBranches(nn.Module):
    """BiRefNet's ASPP block in small: a 1x1 convolution and a modulated deformable one of the same input, each after
    its own batch norm and ReLU, concatenated for a 1x1 convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.plain = nn.Conv2d(4, 6, 1)
        self.offsets = nn.Conv2d(4, 2 * 9, 3, padding=1)
        self.modulation = nn.Conv2d(4, 9, 3, padding=1)
        self.deform_weight = nn.Parameter(torch.randn(6, 4, 3, 3) * 0.2)
        self.norms = nn.ModuleList([nn.BatchNorm2d(6), nn.BatchNorm2d(6)])
        self.out = nn.Conv2d(12, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torchvision

        deformed = torchvision.ops.deform_conv2d(x, self.offsets(x), self.deform_weight, padding=1,
                                                 mask=self.modulation(x).sigmoid())
        branches = [F.relu(norm(branch)) for norm, branch in zip(self.norms, (self.plain(x), deformed), strict=True)]
        return self.out(torch.cat(branches, 1))


def test_deformable_convolutions_write_channels_last_with_the_same_values() -> None:
    pytest.importorskip("torchvision")
    torch.manual_seed(0)
    block = AsppBranches().eval()
    x = torch.randn(2, 4, 10, 12)
    calls: list[str] = []

    def backend(graph_module: torch.fx.GraphModule, example_inputs: list) -> object:
        DeformChannelsLast()(graph_module.graph)
        graph_module.recompile()
        calls.extend(str(node.target) for node in graph_module.graph.nodes if node.op == "call_function")
        return graph_module.forward

    torch._dynamo.reset()
    before = DeformChannelsLast.applied
    with torch.no_grad():
        expected = block(x)
        got = torch.compile(block, backend=backend, fullgraph=True, dynamic=False)(x)
    assert DeformChannelsLast.applied == before + 1
    assert "serve_app.deform_conv2d_channels_last.default" in calls
    assert not any(call.startswith("torchvision.deform_conv2d") for call in calls), calls
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # the operator itself: torchvision's values, channels-last, from inputs in either layout
    offsets, modulation = block.offsets(x).detach(), block.modulation(x).sigmoid().detach()
    arguments = (block.deform_weight.detach(), offsets, modulation, torch.zeros(6), 1, 1, 1, 1, 1, 1, 1, 1, True)
    reference = torch.ops.torchvision.deform_conv2d(x, *arguments)
    for layout in (torch.contiguous_format, torch.channels_last):
        out = torch.ops.serve_app.deform_conv2d_channels_last(x.contiguous(memory_format=layout), *arguments)
        assert out.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(out, reference)


def test_inductor_compiles_both_rewrites_with_the_same_result() -> None:
    pytest.importorskip("torchvision")
    torch.manual_seed(0)
    block = AsppBranches().eval()
    x = torch.randn(2, 4, 10, 12)
    rewrites = GraphRewrites(["deform_conv_channels_last", "conv_before_upsample"])
    assert rewrites.names == ["conv_before_upsample", "deform_conv_channels_last"]  # one order, one cache key
    before = DeformChannelsLast.applied
    got, expected = compiled_afresh(rewrites, block, x)
    assert DeformChannelsLast.applied == before + 1
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="unknown graph rewrites"):
        GraphRewrites(["conv_first"])


class AsppWithPool(AsppBranches):
    """`AsppBranches` with BiRefNet's fifth branch: the input pooled to one pixel, convolved and upsampled back."""

    def __init__(self) -> None:
        super().__init__()
        self.pooled = nn.Conv2d(4, 5, 1)
        self.out = nn.Conv2d(12 + 5, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torchvision

        deformed = torchvision.ops.deform_conv2d(x, self.offsets(x), self.deform_weight, padding=1,
                                                 mask=self.modulation(x).sigmoid())
        branches = [F.relu(norm(branch)) for norm, branch in zip(self.norms, (self.plain(x), deformed), strict=True)]
        pooled = F.relu(self.pooled(F.adaptive_avg_pool2d(x, (1, 1))))
        upsampled = F.interpolate(pooled, size=x.shape[2:], mode="bilinear", align_corners=True)
        return self.out(torch.cat([*branches, upsampled], 1))


def aspp_with_statistics() -> AsppWithPool:
    """`AsppWithPool` in inference, its batch norms' statistics and affine values away from the defaults."""
    torch.manual_seed(0)
    block = AsppWithPool().eval()
    for norm in block.norms:
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.data.uniform_(0.5, 1.5)
        norm.bias.data.normal_()
    return block


@pytest.mark.filterwarnings("error:erase_node")  # each replaced node erased once
def test_a_concatenations_deformable_branch_writes_its_batch_norm_and_relu_into_it() -> None:
    pytest.importorskip("torchvision")
    block = aspp_with_statistics()
    x = torch.randn(2, 4, 10, 12)
    with torch.no_grad():
        expected = block(x)
    before = DeformBnReluConcat.applied
    got, calls = traced_with(DeformBnReluConcat(), block, x)
    assert DeformBnReluConcat.applied == before + 1
    assert "deform_bn_relu_concat.default" in calls and "cat" not in calls and "deform_conv2d" not in calls
    assert calls.count("batch_norm") == 1  # the plain branch's, copied into the concatenation as it is
    assert "interpolate" not in calls  # the pooled pixel is broadcast into its channels, not upsampled first
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_a_branch_whose_batch_norm_uses_the_batchs_statistics_is_left_as_it_was() -> None:
    pytest.importorskip("torchvision")
    block = aspp_with_statistics().train()
    before = DeformBnReluConcat.applied
    _, calls = traced_with(DeformBnReluConcat(), block, torch.randn(2, 4, 10, 12))
    assert DeformBnReluConcat.applied == before and "cat" in calls and "deform_conv2d" in calls


def test_inductor_compiles_the_concatenated_branches_with_the_same_result() -> None:
    pytest.importorskip("torchvision")
    block = aspp_with_statistics()
    x = torch.randn(2, 4, 10, 12)
    concatenated, channels_last = DeformBnReluConcat.applied, DeformChannelsLast.applied
    got, expected = compiled_afresh(GraphRewrites(["deform_conv_channels_last", "deform_bn_relu_concat"]), block, x)
    # the concatenation's rewrite runs first and takes the deformable convolution: none is left to swap
    assert (DeformBnReluConcat.applied, DeformChannelsLast.applied) == (concatenated + 1, channels_last)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


class ModulatedDeformable(nn.Module):
    """A modulated deformable convolution as BiRefNet's decoder writes one: offsets and a mask (twice a sigmoid) from
    two convolutions of its input with the kernel's geometry, 2 x taps and taps channels."""

    def __init__(self, kernel: int = 7, mask_padding: int | None = None) -> None:
        super().__init__()
        taps, pad = kernel * kernel, kernel // 2
        self.offsets = nn.Conv2d(4, 2 * taps, kernel, padding=pad)
        self.mask = nn.Conv2d(4, taps, kernel, padding=pad if mask_padding is None else mask_padding)
        self.weight = nn.Parameter(torch.randn(6, 4, kernel, kernel) * 0.1)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torchvision

        mask = 2.0 * torch.sigmoid(self.mask(x))
        return torchvision.ops.deform_conv2d(x, self.offsets(x), self.weight, padding=self.pad, mask=mask)


@pytest.mark.filterwarnings("error:erase_node")
@pytest.mark.parametrize("block", [ModulatedDeformable, AsppBranches], ids=["7x7, 98 + 49 channels", "ASPP, 18 + 9"])
def test_a_deformable_convolutions_offsets_and_mask_come_from_one_convolution(block: type) -> None:
    pytest.importorskip("torchvision")
    torch.manual_seed(0)
    module = block().eval()
    x = torch.randn(2, 4, 10, 12)
    with torch.no_grad():
        expected = module(x)
    convolutions = sum(isinstance(layer, nn.Conv2d) for layer in module.modules())
    before = OffsetMaskConv.applied
    got, calls = traced_with(OffsetMaskConv(), module, x)
    assert OffsetMaskConv.applied == before + 1
    assert calls.count("conv2d") == convolutions - 1 and calls.count("narrow") == 2
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_offsets_and_a_mask_of_another_geometry_stay_two_convolutions() -> None:
    pytest.importorskip("torchvision")
    torch.manual_seed(0)
    module = ModulatedDeformable(kernel=3).eval()
    module.mask = nn.Conv2d(4, 9, 3, padding=2, dilation=2)  # the same output size from other input pixels
    x = torch.randn(2, 4, 9, 9)
    with torch.no_grad():
        expected = module(x)
    before = OffsetMaskConv.applied
    got, calls = traced_with(OffsetMaskConv(), module, x)
    assert OffsetMaskConv.applied == before and calls.count("conv2d") == 2 and "narrow" not in calls
    torch.testing.assert_close(got, expected)


def test_inductor_compiles_the_joined_convolution_with_the_concatenation_rewrite() -> None:
    pytest.importorskip("torchvision")
    block = aspp_with_statistics()
    x = torch.randn(2, 4, 10, 12)
    joined, concatenated = OffsetMaskConv.applied, DeformBnReluConcat.applied
    rewrites = GraphRewrites(["deform_bn_relu_concat", "offset_mask_conv"])
    assert rewrites.names == ["offset_mask_conv", "deform_bn_relu_concat"]  # the convolutions joined first
    got, expected = compiled_afresh(rewrites, block, x)
    assert (OffsetMaskConv.applied, DeformBnReluConcat.applied) == (joined + 1, concatenated + 1)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


class SwinMlp(nn.Module):
    """A Swin block's MLP as timm and BiRefNet write it: a linear layer, GELU, dropout, a linear layer."""

    def __init__(self, approximate: str = "none", bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 32, bias=bias)
        self.act = nn.GELU(approximate=approximate)
        self.drop = nn.Dropout(0.0)
        self.fc2 = nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))


def test_the_mlps_gelu_joins_its_first_product() -> None:
    torch.manual_seed(0)
    mlp = SwinMlp().eval()
    x = torch.randn(3, 5, 8)  # tokens of windows: the product takes them as rows
    with torch.no_grad():
        expected = mlp(x)
    got, calls = traced_with(GeluInMatmul(), mlp, x)
    assert "_addmm_activation.default" in calls and "gelu" not in calls and calls.count("linear") == 1
    assert got.shape == expected.shape
    # the CPU computes the exact GELU in the joined call: the same values up to the product's rounding
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("mlp", "why"), [
    (SwinMlp(approximate="tanh"), "the tanh form is another function on the CPU"),
    (SwinMlp(bias=False), "no bias to carry into the epilogue"),
])
def test_a_gelu_outside_the_pattern_is_left_as_it_was(mlp: SwinMlp, why: str) -> None:
    x = torch.randn(2, 4, 8)
    got, calls = traced_with(GeluInMatmul(), mlp.eval(), x)
    assert "gelu" in calls and calls.count("linear") == 2, why
    with torch.no_grad():
        torch.testing.assert_close(got, mlp(x))


def test_a_product_that_something_else_reads_keeps_its_gelu_apart() -> None:
    class Shared(SwinMlp):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            hidden = self.fc1(x)
            return self.fc2(self.act(hidden)) + hidden[..., :8]

    _, calls = traced_with(GeluInMatmul(), Shared().eval(), torch.randn(2, 4, 8))
    assert "gelu" in calls and calls.count("linear") == 2


def test_inductor_compiles_the_joined_gelu_with_the_same_result() -> None:
    torch.manual_seed(0)
    mlp = SwinMlp().eval()
    x = torch.randn(2, 6, 8)
    before = GeluInMatmul.applied
    got, expected = compiled_afresh(GraphRewrites(["gelu_in_matmul"]), mlp, x)
    assert GeluInMatmul.applied == before + 1
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_every_rewrite_is_a_model_setting_of_its_name() -> None:
    from serve_app.model.graph_rewrites import REWRITES
    from serve_app.settings import ModelSettings

    # the model takes the rewrites whose settings are on, by these names (BackgroundRemovalModel.from_settings)
    for name in REWRITES:
        assert ModelSettings.model_fields[name].annotation is bool, name


class SwinFeatures(nn.Module):
    """A Swin backbone's last steps as BiRefNet reads them: each stage's normalised tokens viewed as an image and
    copied channels-first, the half-size input's map upsampled beside the full-size one, into a convolution whose
    one channel is the output; `reader` names another ending, or tokens that something else reads too."""

    def __init__(self, reader: str = "one channel") -> None:
        super().__init__()
        self.reader = reader
        self.norm = nn.LayerNorm(8)
        self.lateral = nn.Conv2d(16, 4 if reader.startswith("conv") else 1, 1)

    def forward(self, tokens: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
        normed = self.norm(tokens)
        if self.reader == "tokens sliced":  # a view of memory that something else could change
            normed = self.norm(torch.cat([tokens, tokens]))[:2]  # contiguous, the first half
        x = normed.view(-1, 6, 6, 8).permute(0, 3, 1, 2).contiguous()
        y = self.norm(half).view(-1, 3, 3, 8).permute(0, 3, 1, 2).contiguous()
        both = torch.cat([x, F.interpolate(y, size=x.shape[2:], mode="bilinear", align_corners=True)], dim=1)
        if self.reader == "view":  # reads the channels-first strides: C, H and W merged
            return both.view(both.shape[0], -1)
        out = self.lateral(both)
        if self.reader == "conv then view":  # the convolution's output keeps its input's layout
            return out.view(out.shape[0], -1)
        if self.reader == "tokens read twice":  # the channels-last map would be the tokens' own memory
            return out + normed.sum()
        return out  # "conv": four channels out, whose strides would change


def rewritten_copies(module: nn.Module, *inputs: torch.Tensor) -> list[dict]:
    """The keyword arguments of every `.contiguous()` left in `module`'s traced graph after FeaturesChannelsLast."""
    _, nodes = traced_nodes(FeaturesChannelsLast(), module, *inputs)
    return [dict(node.kwargs) for node in nodes if node.target == "contiguous"]


def test_a_swin_stages_feature_maps_stay_in_the_tokens_order() -> None:
    torch.manual_seed(0)
    features = SwinFeatures().eval()
    tokens, half = torch.randn(2, 36, 8), torch.randn(2, 9, 8)
    assert rewritten_copies(features, tokens, half) == [{"memory_format": torch.channels_last}] * 2
    before = FeaturesChannelsLast.applied
    got, expected = compiled_afresh(GraphRewrites(["features_channels_last"]), features, (tokens, half))
    assert FeaturesChannelsLast.applied == before + 2
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert got.is_contiguous()  # as the caller gets it uncompiled (one channel lies alike either way)


@pytest.mark.parametrize("reader", ["view", "conv then view", "conv", "tokens read twice", "tokens sliced"])
def test_feature_maps_whose_layout_something_could_see_are_copied_channels_first_as_written(reader: str) -> None:
    torch.manual_seed(0)
    features = SwinFeatures(reader).eval()
    tokens, half = torch.randn(2, 36, 8), torch.randn(2, 9, 8)
    copies = rewritten_copies(features, tokens, half)
    assert {"memory_format": torch.channels_last} not in copies[:1], reader  # the full-size map, which they read
    got, expected = compiled_afresh(GraphRewrites(["features_channels_last"]), features, (tokens, half))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert got.is_contiguous() == expected.is_contiguous()
