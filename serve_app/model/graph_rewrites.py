"""Rewrites of the traced forward before inductor compiles it: the same result up to rounding, less work.

BiRefNet's decoder ends at full resolution: it upsamples its last features (96 or more channels at a quarter of the
input's side) to the input's size, concatenates a few channels computed there, and reduces the concatenation to the
one-channel mask with a 1x1 convolution. At 1024x1024 and batch 8 the upsampled features alone are gigabytes written
and read again. Upsampling and a 1x1 convolution commute: upsampling mixes pixels with the same weights in every
channel, a 1x1 convolution mixes channels with the same weights at every pixel, and both are linear. So
`conv1x1(cat(upsample(a), b))` is `upsample(conv1x1_a(a)) + conv1x1_b(b)`, where the weight splits along its input
channels at `a`'s count and the bias goes with `b`: the convolution of `a` runs at its own resolution and one channel
is upsampled instead of all of `a`'s.

`ConvBeforeUpsample` makes that rewrite on the graph Dynamo traces (torch-level calls, before inductor lowers them),
wherever the pattern is exact and saves work: a 1x1 convolution (stride 1, no padding or dilation, one group) of a
concatenation along the channels, one of whose parts is a bilinear or nearest upsampling to a fixed, larger size that
nothing else uses, with no more channels out of the convolution than the upsampled part has. The encoder's
multi-scale features take it too where a 1x1 lateral convolution reads them (the half-size copy's, upsampled).

`DeformChannelsLast` has every `torchvision::deform_conv2d` call write its output channels-last
(`serve_app::deform_conv2d_channels_last`, the same values), the layout inductor gives the compiled model's
convolutions, so that what reads a deformable convolution beside an ordinary one reads both along the grain.

`GeluInMatmul` computes a linear layer's GELU in its matrix product's epilogue (`aten._addmm_activation`: on CUDA
cuBLASLt's GELU epilogue, GELU's tanh form, which differs from the exact form by at most 4.7e-4; elsewhere the exact
form), wherever the GELU alone reads the layer's output: the Swin blocks' MLPs, whose hidden activations, four times
the block's width, are otherwise written by the product, read and written again by the GELU, and read by the next
product.

`DeformBnReluConcat` has the deformable convolutions that a concatenation reads through a batch norm (inference) and
a ReLU write relu(batch norm) of their sums straight into their channels of the concatenation
(`serve_app::deform_bn_relu_concat`): BiRefNet's ASPP blocks, whose concatenation kernel otherwise reads four
branches back and writes all their channels again.

`OffsetMaskConv` computes a modulated deformable convolution's offsets and mask (BiRefNet's `DeformableConv2d`: two
convolutions of the same input, 2 x taps and taps channels, 98 and 49 for a 7x7 kernel) as one convolution, its
output channels padded with zero filters to a multiple of 8, read as two slices: the input is read once, and cuDNN can
take its tensor-core kernels, which odd channel counts can keep it from. The Triton deformable convolution reads the
slices where they lie.

`FeaturesChannelsLast` keeps a transformer backbone's feature maps in the order its tokens lie in memory. Swin ends
each stage with `x.view(B, H, W, C).permute(0, 3, 1, 2).contiguous()`: a copy of every stage's output into
channels-first memory, while the compiled model's convolutions run channels-last. BiRefNet upsamples the half-size
input's maps beside the full-size ones into the concatenations its lateral convolutions read, and those upsamplings
were among the slowest elementwise kernels of the compiled forward until the maps kept the tokens' order. Where only
convolutions, upsamplings, concatenations, sums and products read such a map, nothing else reads its tokens, and the
graph still traces to outputs of the same layout, its `.contiguous()` becomes
`.contiguous(memory_format=torch.channels_last)`: the tokens' own order, no copy, the same values.

`REWRITES` names them as the model settings do; `GraphRewrites` is the one pass that runs those named.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import operator
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch.fx import Graph, Node

try:
    from torch._inductor.custom_graph_pass import CustomGraphPass
except ImportError:  # pragma: no cover - torch versions without it call a plain function
    CustomGraphPass = object  # type: ignore[assignment,misc]

logger = logging.getLogger(__name__)

_CONVOLUTIONS = (torch.conv2d, F.conv2d)
_CONCATENATIONS = (torch.cat, torch.concat, torch.concatenate)
_LINEAR_MODES = ("bilinear", "nearest")


class _Rewrite(CustomGraphPass):  # type: ignore[misc]
    """A pre-grad pass of this module: inductor's cache key for it is the module's code."""

    def uuid(self) -> bytes:
        return _code_digest()


class _DeformRewrite(_Rewrite):
    """A pass that names or inserts this package's deformable convolution operators."""

    def __init__(self) -> None:
        # The operators are registered here, before a saved bucket that calls them loads, whatever else this process
        # imported (the grid_sample deformable convolution leaves the Triton module alone).
        from serve_app.model import deform_triton  # noqa: F401


class ConvBeforeUpsample(_Rewrite):
    """The pre-grad pass (`torch._inductor.config.pre_grad_custom_pass`): every match rewritten, in place."""

    applied: ClassVar[int] = 0  # rewrites made in this process, by every instance

    def __call__(self, graph: Graph) -> None:
        for node in list(graph.nodes):
            match = _match(node)
            if match is not None:
                _rewrite(graph, node, *match)
                ConvBeforeUpsample.applied += 1


def _match(conv: Node) -> tuple[Node, int] | None:
    """(the concatenation, the index of its upsampled part) where `conv` is the pattern, else None."""
    if conv.op != "call_function" or conv.target not in _CONVOLUTIONS:
        return None
    arguments = _conv_arguments(conv)
    if arguments is None:
        return None
    concatenated, kernel = arguments["input"], _shape(arguments["weight"])
    if not (isinstance(concatenated, Node) and concatenated.op == "call_function"
            and concatenated.target in _CONCATENATIONS and len(concatenated.users) == 1):
        return None
    parts, dim = _concatenation(concatenated)
    if len(parts) < 2 or dim not in (1, -3) or kernel is None or tuple(kernel[2:]) != (1, 1):
        return None
    for index, part in enumerate(parts):
        if not (isinstance(part, Node) and part.op == "call_function" and part.target is F.interpolate
                and len(part.users) == 1 and _fixed_size_linear_upsampling(part)):
            continue
        low, high = _shape(part.args[0]), _shape(part)
        # worth it where the upsampling enlarges and the convolution has no more channels out than the part in
        if (low is not None and high is not None and len(low) == 4 and low[2] * low[3] < high[2] * high[3]
                and kernel[0] <= low[1]):
            return concatenated, index
    return None


def _concatenation(node: Node) -> tuple[list[Any], Any]:
    parts = node.args[0] if node.args else node.kwargs.get("tensors", ())
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    return (list(parts) if isinstance(parts, (list, tuple)) else []), dim


def _conv_call(conv: Node) -> dict[str, Any] | None:
    """conv2d's arguments by name (defaults filled in), or None where `conv` is not a conv2d call."""
    if conv.op != "call_function" or conv.target not in _CONVOLUTIONS:
        return None
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    defaults: dict[str, Any] = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}
    arguments = {**defaults, **dict(zip(names, conv.args, strict=False)), **conv.kwargs}
    if set(arguments) - set(names) or "input" not in arguments or "weight" not in arguments:
        return None
    return arguments


def _conv_arguments(conv: Node) -> dict[str, Any] | None:
    """conv2d's arguments by name, or None unless it is a 1-group convolution with stride 1, no padding, no dilation."""
    arguments = _conv_call(conv)
    if arguments is None:
        return None
    ones = (1, [1, 1], (1, 1))
    zeros = (0, [0, 0], (0, 0))
    if arguments["stride"] not in ones or arguments["dilation"] not in ones or arguments["padding"] not in zeros:
        return None
    return arguments if arguments["groups"] == 1 else None


def _fixed_size_linear_upsampling(node: Node) -> bool:
    names = ("input", "size", "scale_factor", "mode", "align_corners", "recompute_scale_factor", "antialias")
    arguments = {"scale_factor": None, "mode": "nearest", "antialias": False,
                 **dict(zip(names, node.args, strict=False)), **node.kwargs}
    return (arguments.get("size") is not None and arguments["scale_factor"] is None
            and arguments["mode"] in _LINEAR_MODES and not arguments["antialias"])


def _shape(node: Any) -> tuple[int, ...] | None:
    value = node.meta.get("example_value") if isinstance(node, Node) else None
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _rewrite(graph: Graph, conv: Node, concatenated: Node, index: int) -> None:
    arguments = _conv_arguments(conv)
    assert arguments is not None
    weight, bias = arguments["weight"], arguments["bias"]
    parts, _ = _concatenation(concatenated)
    upsampled = parts[index]
    counts = [_shape(part)[1] for part in parts]  # type: ignore[index]
    start, channels, total = sum(counts[:index]), counts[index], sum(counts)
    with graph.inserting_before(conv):
        low = graph.call_function(torch.conv2d, (upsampled.args[0],
                                                 graph.call_function(torch.narrow, (weight, 1, start, channels))))
        raised = graph.call_function(F.interpolate, (low, *upsampled.args[1:]), dict(upsampled.kwargs))
        others = parts[:index] + parts[index + 1:]
        rest = others[0] if len(others) == 1 else graph.call_function(torch.cat, (others, 1))
        slices = [graph.call_function(torch.narrow, (weight, 1, first, count))
                  for first, count in ((0, start), (start + channels, total - start - channels)) if count]
        rest_weight = slices[0] if len(slices) == 1 else graph.call_function(torch.cat, (slices, 1))
        result = graph.call_function(torch.add, (raised, graph.call_function(torch.conv2d, (rest, rest_weight, bias))))
    result.meta.update(conv.meta)
    conv.replace_all_uses_with(result)
    for done in (conv, concatenated, upsampled):
        graph.erase_node(done)


class DeformChannelsLast(_DeformRewrite):
    """The pre-grad pass that has every deformable convolution write channels-last: its operator swapped for
    `serve_app::deform_conv2d_channels_last`, which takes the same arguments (serve_app/model/deform_triton.py)."""

    applied: ClassVar[int] = 0  # calls swapped in this process, by every instance

    def __call__(self, graph: Graph) -> None:
        targets = _deform_conv_targets()
        if not targets:
            return
        for node in graph.nodes:
            if node.op == "call_function" and node.target in targets:
                node.target = torch.ops.serve_app.deform_conv2d_channels_last.default
                DeformChannelsLast.applied += 1


def _deform_conv_targets() -> tuple[Any, ...]:
    """torchvision's deformable convolution as a traced graph names it, or () without torchvision's operators."""
    try:
        packet = torch.ops.torchvision.deform_conv2d
        return packet, packet.default
    except (AttributeError, RuntimeError):
        return ()


def _deformable_convolutions() -> tuple[Any, ...]:
    """Every target of a deformable convolution call in a traced graph: torchvision's, and the channels-last one
    `DeformChannelsLast` puts in its place; () without torchvision's operators."""
    targets = _deform_conv_targets()
    return (*targets, torch.ops.serve_app.deform_conv2d_channels_last.default) if targets else ()


class GeluInMatmul(_Rewrite):
    """The pre-grad pass that joins `gelu(linear(x, weight, bias))` into one `aten._addmm_activation` call, where
    the GELU is the exact form and alone reads the linear layer's output, and the shapes are fixed."""

    applied: ClassVar[int] = 0  # GELUs joined in this process, by every instance

    def __call__(self, graph: Graph) -> None:
        for node in list(graph.nodes):
            linear = _gelu_of_linear(node)
            if linear is not None:
                _join(graph, node, linear)
                GeluInMatmul.applied += 1


_GELUS = (F.gelu, torch._C._nn.gelu)
_LINEARS = (F.linear, torch._C._nn.linear)


def _gelu_of_linear(gelu: Node) -> Node | None:
    """The linear layer whose output `gelu` alone reads, if it has a bias and fixed shapes, else None."""
    if gelu.op != "call_function" or gelu.target not in _GELUS or len(gelu.args) != 1:
        return None
    if gelu.kwargs.get("approximate", "none") != "none" or set(gelu.kwargs) - {"approximate"}:
        return None
    linear = gelu.args[0]
    if not (isinstance(linear, Node) and linear.op == "call_function" and linear.target in _LINEARS
            and len(linear.users) == 1 and not linear.kwargs and len(linear.args) == 3
            and isinstance(linear.args[2], Node)):
        return None
    shape, weight = _shape(linear.args[0]), _shape(linear.args[1])
    if shape is None or weight is None or len(shape) < 2 or len(weight) != 2:
        return None
    return linear if all(isinstance(size, int) for size in shape) else None


def _join(graph: Graph, gelu: Node, linear: Node) -> None:
    x, weight, bias = linear.args
    shape, features = _shape(x), _shape(weight)
    assert shape is not None and features is not None
    with graph.inserting_before(gelu):
        rows = graph.call_function(torch.reshape, (x, (-1, shape[-1])))
        joined = graph.call_function(torch.ops.aten._addmm_activation.default,
                                     (bias, rows, graph.call_function(torch.t, (weight,))), {"use_gelu": True})
        result = graph.call_function(torch.reshape, (joined, (*shape[:-1], features[0])))
    result.meta.update(gelu.meta)
    gelu.replace_all_uses_with(result)
    graph.erase_node(gelu)
    graph.erase_node(linear)


class OffsetMaskConv(_DeformRewrite):
    """The pre-grad pass that computes a modulated deformable convolution's offsets and mask, two convolutions of the
    same input with the same geometry, as one convolution whose output channels are both sets, padded with zero
    filters to a multiple of 8, and read as two slices of its output."""

    applied: ClassVar[int] = 0  # pairs joined in this process, by every instance

    def __call__(self, graph: Graph) -> None:
        targets = _deformable_convolutions()
        order = {node: index for index, node in enumerate(graph.nodes)}
        for node in list(graph.nodes):
            if node.op != "call_function" or node.target not in targets or node.kwargs or len(node.args) != 14:
                continue
            pair = _offset_and_mask_convolutions(node)
            if pair is None:
                continue
            earlier, later = sorted(pair, key=order.__getitem__)
            # the joined convolution goes where the earlier one was: before anything reads either
            if all(order.get(source, len(order)) < order[earlier] for source in later.all_input_nodes):
                _join_convolutions(graph, *pair, at=earlier)
                OffsetMaskConv.applied += 1


def _offset_and_mask_convolutions(deform: Node) -> tuple[Node, Node] | None:
    """The convolutions that compute `deform`'s offsets and (through a sigmoid and products with numbers) its mask,
    where only those read them, they read the same input with the same geometry and one group, and their weights'
    shapes are known; else None."""
    offset, mask, use_mask = deform.args[2], deform.args[3], deform.args[13]
    if use_mask is not True:
        return None
    offsets_conv, mask_conv = _through_elementwise(offset), _through_elementwise(mask)
    if offsets_conv is None or mask_conv is None or offsets_conv is mask_conv:
        return None
    calls = [_conv_call(offsets_conv) or {}, _conv_call(mask_conv) or {}]  # found as conv2d calls, so parsed
    shapes = [_shape(call.get("weight")) for call in calls]
    geometry = [tuple(_pair(call[name]) for name in ("stride", "padding", "dilation")) for call in calls]
    if (shapes[0] is None or shapes[1] is None or len(shapes[0]) != 4 or shapes[0][1:] != shapes[1][1:]
            or calls[0]["input"] is not calls[1]["input"] or geometry[0] != geometry[1]
            or calls[0]["groups"] != 1 or calls[1]["groups"] != 1
            or (calls[0]["bias"] is None) != (calls[1]["bias"] is None)):
        return None
    return offsets_conv, mask_conv


def _pair(value: Any) -> Any:
    return (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, list) else value


def _through_elementwise(node: Any) -> Node | None:
    """The convolution whose output `node` is, through sigmoids and products with numbers that only the next step
    reads, or None."""
    while isinstance(node, Node) and node.op in ("call_function", "call_method") and len(node.users) == 1:
        if node.op == "call_function" and node.target in _CONVOLUTIONS:
            return node
        if (node.target in (torch.sigmoid, "sigmoid") and len(node.args) == 1 and not node.kwargs):
            node = node.args[0]
        elif (node.target in (operator.mul, torch.mul) and len(node.args) == 2 and not node.kwargs
              and sum(isinstance(argument, Node) for argument in node.args) == 1
              and all(isinstance(argument, (Node, int, float)) for argument in node.args)):
            node = next(argument for argument in node.args if isinstance(argument, Node))
        else:
            return None
    return None


def _join_convolutions(graph: Graph, offsets: Node, mask: Node, *, at: Node) -> None:
    first, second = _conv_call(offsets), _conv_call(mask)
    assert first is not None and second is not None
    shapes = [_shape(first["weight"]), _shape(second["weight"])]
    assert shapes[0] is not None and shapes[1] is not None
    counts = [shapes[0][0], shapes[1][0]]
    padding = -sum(counts) % 8  # tensor-core convolution kernels take channel counts in multiples of 8
    with graph.inserting_before(at):
        weights = [first["weight"], second["weight"]]
        biases = [first["bias"], second["bias"]]
        if padding:
            weights.append(graph.call_method("new_zeros", (first["weight"], (padding, *shapes[0][1:]))))
            if biases[0] is not None:
                biases.append(graph.call_method("new_zeros", (biases[0], (padding,))))
        joined = graph.call_function(torch.conv2d, (
            first["input"], graph.call_function(torch.cat, (weights, 0)),
            graph.call_function(torch.cat, (biases, 0)) if biases[0] is not None else None,
            first["stride"], first["padding"], first["dilation"], 1))
        slices = [graph.call_function(torch.narrow, (joined, 1, start, count))
                  for start, count in ((0, counts[0]), (counts[0], counts[1]))]
    for conv, part in zip((offsets, mask), slices, strict=True):
        part.meta.update(conv.meta)
        conv.replace_all_uses_with(part)
        graph.erase_node(conv)


class DeformBnReluConcat(_DeformRewrite):
    """The pre-grad pass that turns `cat([relu(batch_norm(deform_conv2d(...))), ..., other, ...], dim=1)` into one
    `serve_app::deform_bn_relu_concat` call (serve_app/model/deform_triton.py), wherever each such branch is read by
    the concatenation alone, its batch norm uses running statistics and its deformable convolution has one weight
    and one offset group and a mask; the concatenation's other parts are copied in."""

    applied: ClassVar[int] = 0  # concatenations rewritten in this process, by every instance

    def __call__(self, graph: Graph) -> None:
        targets = _deformable_convolutions()
        if not targets:
            return
        for node in list(graph.nodes):
            if node.op != "call_function" or node.target not in _CONCATENATIONS:
                continue
            parts, dim = _concatenation(node)
            branches = [_deform_bn_relu(part, targets) for part in parts]
            shapes = [_shape(part) for part in parts]
            if (dim not in (1, -3) or not any(branches) or any(shape is None or len(shape) != 4 for shape in shapes)
                    or len({shape[2:] for shape in shapes if shape is not None}) != 1):
                continue
            _concatenate_branches(graph, node, parts, branches)
            DeformBnReluConcat.applied += 1


_RELUS = (F.relu, torch.relu, torch.relu_)


def _deform_bn_relu(part: Any, targets: tuple[Any, ...]) -> tuple[Node, Node, Node] | None:
    """(relu, batch norm, deformable convolution) where `part` is such a branch that only its reader reads."""
    if not (isinstance(part, Node) and part.op == "call_function" and part.target in _RELUS
            and len(part.args) == 1 and len(part.users) == 1):
        return None
    norm = part.args[0]
    if not (isinstance(norm, Node) and norm.op == "call_function" and norm.target is F.batch_norm
            and len(norm.users) == 1 and not norm.kwargs and len(norm.args) == 8 and norm.args[5] is False):
        return None
    deform = norm.args[0]
    if not (isinstance(deform, Node) and deform.op == "call_function" and deform.target in targets
            and len(deform.users) == 1 and not deform.kwargs and len(deform.args) == 14):
        return None
    groups, offset_groups, use_mask = deform.args[11:14]
    if (groups, offset_groups, use_mask) != (1, 1, True) or not all(isinstance(a, int) for a in deform.args[5:11]):
        return None
    return part, norm, deform


def _one_pixel_before_upsampling(part: Any) -> Node | None:
    """The one-pixel input of `part` where `part` is a linear upsampling of it that only its reader reads (every
    output pixel then equals that pixel: the ASPP blocks' pooled branch), else None."""
    if not (isinstance(part, Node) and part.op == "call_function" and part.target is F.interpolate
            and len(part.users) == 1 and _fixed_size_linear_upsampling(part)):
        return None
    pixel = part.args[0] if part.args else part.kwargs.get("input")
    shape = _shape(pixel)
    return pixel if isinstance(pixel, Node) and shape is not None and len(shape) == 4 and shape[2:] == (1, 1) else None


def _concatenate_branches(graph: Graph, cat: Node, parts: list[Any],
                          branches: list[tuple[Node, Node, Node] | None]) -> None:
    columns: dict[str, list[Any]] = {name: [] for name in ("inputs", "weights", "offsets", "masks", "scales",
                                                             "shifts", "geometry", "others", "order")}
    upsamplings: list[Node] = []  # of one pixel, which the copy into the concatenation broadcasts instead
    with graph.inserting_before(cat):
        for part, branch in zip(parts, branches, strict=True):
            if branch is None:
                pixel = _one_pixel_before_upsampling(part)
                if pixel is not None:
                    upsamplings.append(part)
                columns["order"].append(-len(columns["others"]) - 1)
                columns["others"].append(pixel or part)
                continue
            _, norm, deform = branch
            x, weight, offset, mask, bias = deform.args[:5]
            _, mean, variance, gamma, beta, _, _, eps = norm.args
            # the batch norm as one scale and shift a channel, in float32; the convolution's bias goes into the shift
            scale = graph.call_function(torch.rsqrt, (graph.call_function(
                torch.add, (graph.call_method("float", (variance,)), eps)),))
            if gamma is not None:
                scale = graph.call_function(torch.mul, (scale, graph.call_method("float", (gamma,))))
            centred = graph.call_method("float", (mean,))
            if bias is not None:
                centred = graph.call_function(torch.sub, (centred, graph.call_method("float", (bias,))))
            shift = graph.call_function(torch.neg, (graph.call_function(torch.mul, (centred, scale)),))
            if beta is not None:
                shift = graph.call_function(torch.add, (shift, graph.call_method("float", (beta,))))
            columns["order"].append(len(columns["inputs"]))
            for name, value in (("inputs", x), ("weights", weight), ("offsets", offset), ("masks", mask),
                                ("scales", scale), ("shifts", shift)):
                columns[name].append(value)
            columns["geometry"].extend(deform.args[5:11])
        joined = graph.call_function(torch.ops.serve_app.deform_bn_relu_concat.default,
                                     tuple(columns[name] for name in columns))
    joined.meta.update(cat.meta)
    cat.replace_all_uses_with(joined)
    graph.erase_node(cat)
    for upsampling in upsamplings:
        graph.erase_node(upsampling)
    for branch in branches:
        if branch is not None:
            for node in branch:  # relu, then its batch norm, then its convolution: each read only by the next
                graph.erase_node(node)


class FeaturesChannelsLast(_Rewrite):
    """The pre-grad pass that makes `.permute(0, 3, 1, 2).contiguous()` of a freshly computed contiguous 4-D tensor
    (tokens viewed as an image, nothing else reading them) `.contiguous(memory_format=torch.channels_last)`, where
    nothing reads the result, directly or through concatenations, upsamplings, sums and products, but those,
    convolutions and shape queries. The rewrites stand only if the whole graph still traces (fake tensors) to
    outputs laid out alike: what lies past the convolutions, which keep their input's layout, is checked so."""

    applied: ClassVar[int] = 0  # copies kept in the tokens' order in this process, by every instance

    def __call__(self, graph: Graph) -> None:
        copies = [node for node in graph.nodes
                  if _channels_first_copy_of_tokens(node) and _read_only_by_layout_free_ops(node)]
        if not copies:
            return
        for node in copies:
            node.kwargs = {"memory_format": torch.channels_last}
        if not _traces_to_outputs_laid_out_alike(graph):
            for node in copies:
                node.kwargs = {}
            logger.info("features_channels_last: %d feature maps left channels-first, as written: with them "
                        "channels-last the graph does not trace to outputs of the same layout", len(copies))
            return
        FeaturesChannelsLast.applied += len(copies)


def _channels_first_copy_of_tokens(node: Node) -> bool:
    """Whether `node` is `.contiguous()` of `.permute(0, 3, 1, 2)` of a contiguous 4-D tensor that only this chain
    reads: the result of an op (through views and reshapes), each step read by the next alone. The channels-last
    copy of such a tensor is the tensor itself, so nothing else may see or change that memory."""
    if not (node.op == "call_method" and node.target == "contiguous" and len(node.args) == 1
            and node.kwargs.get("memory_format", torch.contiguous_format) is torch.contiguous_format):
        return False
    permute = node.args[0]
    if not (isinstance(permute, Node) and permute.op == "call_method" and permute.target == "permute"
            and not permute.kwargs and len(permute.users) == 1 and isinstance(permute.args[0], Node)):
        return False
    dims = permute.args[1:]
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    tokens = permute.args[0].meta.get("example_value")
    if not (tuple(dims) == (0, 3, 1, 2) and isinstance(tokens, torch.Tensor) and tokens.dim() == 4
            and tokens.is_contiguous()):
        return False
    source = permute.args[0]
    while source.op == "call_method" and source.target in ("view", "reshape") and isinstance(source.args[0], Node):
        if len(source.users) != 1:
            return False
        source = source.args[0]
    return (source.op in ("call_function", "call_module") and source.target not in _VIEWS
            and len(source.users) == 1)


# Functions whose result may be a view of another tensor's memory, which something else could read or change.
_VIEWS = (operator.getitem, torch.reshape, torch.flatten, torch.squeeze, torch.unsqueeze, torch.transpose,
          torch.permute, torch.narrow, torch.select, torch.chunk, torch.split, torch.unbind)


# What may read a feature map whose strides change: ops whose result does not depend on their inputs' memory
# layout. The others' results are followed further; a convolution's are checked by tracing the whole graph.
_LAYOUT_FREE_FOLLOWED = (F.interpolate, *_CONCATENATIONS, operator.add, torch.add, operator.mul, torch.mul)
_LAYOUT_FREE_ENDS = (*_CONVOLUTIONS,)
_LAYOUT_FREE_METHODS = ("size", "dim")


def _read_only_by_layout_free_ops(node: Node, limit: int = 64) -> bool:
    """Whether every node that reads `node`, and every node reading those that are followed, is layout-free (and
    there are at most `limit` of them): never a view, a reshape, a graph output, an in-place op or anything else
    that could see the strides."""
    pending, seen = list(node.users), set()
    while pending:
        user = pending.pop()
        if user in seen:
            continue
        seen.add(user)
        if len(seen) > limit:
            return False
        if user.op == "call_method" and user.target in _LAYOUT_FREE_METHODS:
            continue
        if user.op != "call_function":
            return False
        if user.target in _LAYOUT_FREE_ENDS:
            continue
        if user.target not in _LAYOUT_FREE_FOLLOWED:
            return False
        pending.extend(user.users)
    return True


def _traces_to_outputs_laid_out_alike(graph: Graph) -> bool:
    """Whether `graph` runs on fake tensors of its example inputs (a view that the new strides cannot express would
    raise) to outputs laid out as Dynamo recorded them. Run on a copy, so that the graph's metadata stays
    as Dynamo wrote it."""
    from torch._subclasses.fake_tensor import FakeTensor
    from torch.fx.passes.fake_tensor_prop import FakeTensorProp
    from torch.utils._pytree import tree_leaves

    inputs = [node.meta.get("example_value") for node in graph.nodes if node.op == "placeholder"]
    output = next(node for node in reversed(graph.nodes) if node.op == "output")
    expected = [value.meta.get("example_value") if isinstance(value, Node) else value
                for value in tree_leaves(output.args[0])]
    mode = next((value.fake_mode for value in inputs if isinstance(value, FakeTensor)), None)
    if mode is None or graph.owning_module is None:
        return False
    copy = Graph()
    copy.output(copy.graph_copy(graph, {}))
    try:
        got = tree_leaves(FakeTensorProp(torch.fx.GraphModule(graph.owning_module, copy), mode)
                          .propagate_dont_convert_inputs(*inputs))
    except Exception:  # noqa: BLE001 - any failure to trace means the rewrite does not hold
        return False
    return len(got) == len(expected) and all(
        not isinstance(want, torch.Tensor) or (isinstance(have, torch.Tensor) and _same_layout(have, want))
        for have, want in zip(got, expected, strict=True))


def _same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors of one shape lie alike in memory: the same stride wherever a dimension has more than one
    element (a one-channel map is channels-first and channels-last at once)."""
    return a.shape == b.shape and all(size < 2 or x == y for size, x, y in zip(a.shape, a.stride(), b.stride(),
                                                                                strict=True))



REWRITES: dict[str, type] = {"conv_before_upsample": ConvBeforeUpsample,
                             "offset_mask_conv": OffsetMaskConv,
                             "deform_bn_relu_concat": DeformBnReluConcat,
                             "deform_conv_channels_last": DeformChannelsLast,
                             "gelu_in_matmul": GeluInMatmul,
                             "features_channels_last": FeaturesChannelsLast}


class GraphRewrites(CustomGraphPass):  # type: ignore[misc]
    """Several of the passes above, in `REWRITES`' order, as inductor's one pre-grad pass."""

    def __init__(self, names: Sequence[str]):
        unknown = set(names) - set(REWRITES)
        if unknown:
            raise ValueError(f"unknown graph rewrites {sorted(unknown)}: choose from {sorted(REWRITES)}")
        self.names = [name for name in REWRITES if name in names]
        self._passes = [REWRITES[name]() for name in self.names]

    def __call__(self, graph: Graph) -> None:
        for rewrite in self._passes:
            rewrite(graph)

    def uuid(self) -> bytes:
        return hashlib.sha256(_code_digest() + ",".join(self.names).encode()).digest()


def _code_digest() -> bytes:
    """This module's code, which every pass here is keyed by in inductor's cache."""
    return hashlib.sha256(inspect.getsource(inspect.getmodule(_code_digest)).encode()).digest()  # type: ignore[arg-type]
