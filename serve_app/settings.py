"""Every setting of the service, typed and documented in one place.

The Serve config file (`configs/*.yaml`) feeds `AppArgs` (the application's `args:`) and `BatchSettings`
(the model deployment's `user_config:`). Unknown keys are rejected so that a typo fails at start-up with the
field's name instead of being silently ignored.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_MODEL_ID = "ZhengPeng7/BiRefNet"
MiB = 1024 * 1024

# The only environment variables the service reads; everything else comes from the config file.
RESULT_DIR_ENV = "SERVE_APP_RESULT_DIR"
COMPILE_CACHE_ENV = "SERVE_APP_COMPILE_CACHE"
Execution = Literal["eager", "cuda_graphs", "compiled", "compiled_graphs"]
EXECUTIONS: tuple[str, ...] = get_args(Execution)
# The executions that torch.compile the model (compile_cache_dir, compile_options and the prebuild apply to them).
COMPILED_EXECUTIONS = ("compiled", "compiled_graphs")
API_KEYS_ENV = "SERVE_APP_API_KEYS"  # comma-separated; secrets stay out of config files


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def default_compile_cache_dir() -> Path:
    from_env = os.environ.get(COMPILE_CACHE_ENV)
    return Path(from_env) if from_env else Path.home() / ".cache" / "serve_app" / "compiled"


class BatchSettings(StrictModel):
    """Request batching on the GPU deployment; changed live through `user_config` and `reconfigure()`."""

    # A sanity ceiling, not a memory limit: the start-up probe and the out-of-memory split keep the live limit at what
    # fits. 1024 leaves room for several times what fits on a 141 GB GPU at 1024x1024 in fp16.
    max_batch_size: int = Field(8, ge=1, le=1024, description="Most images in one forward pass.")
    batch_wait_timeout_s: float = Field(
        0.0, ge=0.0, le=5.0, description="How long the first call of a pass waits for batch-mates on an idle "
        "device. 0: none. While the device is busy, a pass waits until the device is about to free up whatever "
        "this says, so batches fill under load (serve_app/deployments/batching.py)."
    )


# A model's name as requests give it (`model=`): letters, digits, dot, dash, underscore.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class ModelSettings(StrictModel):
    """What the GPU deployment loads and how it runs it."""

    name: str | None = Field(
        None, pattern=MODEL_NAME_PATTERN,
        description="The name requests choose this model by (`model=` on the native API and the page). Default: "
        "the last part of model_id, lower-cased (ZhengPeng7/BiRefNet_lite: birefnet_lite).",
    )
    model_id: str = Field(
        DEFAULT_MODEL_ID,
        description="Hugging Face Hub repo id (e.g. ZhengPeng7/BiRefNet, briaai/RMBG-2.0), a local model "
        "directory in the Hub layout, or 'import:package.module:factory' for a Python callable returning a "
        "torch.nn.Module (used by the benchmarks).",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) to pin.")
    input_size: tuple[int, int] = Field(
        (1024, 1024), description="Model input as (width, height); every image is resized to it on the device."
    )
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="auto = fp16 on CUDA, fp32 on CPU."
    )
    device: Literal["auto", "cuda", "cpu"] = Field("auto", description="auto = CUDA when available.")
    execution: Execution = Field(
        "eager",
        description="cuda_graphs: capture one CUDA graph per graph_batch_sizes bucket at start-up and replay it "
        "(batches are padded up to a bucket); falls back to eager on CPU. compiled: torch.compile with static "
        "shapes, one graph per bucket, compiled before /readyz on the first start (minutes per bucket for "
        "BiRefNet) and saved in compile_cache_dir; a later start serves the eager forward while the saved buckets "
        "load; falls back to eager if compiling fails. "
        "compiled_graphs: compiled, then each bucket captured whole in one CUDA graph (a pass is one copy and one "
        "launch, without Dynamo's guards: a lone image's pass starts ~2 ms sooner than with compile_options "
        "{triton.cudagraphs: true}, which it excludes); compiled without CUDA graphs on CPU.",
    )
    graph_batch_sizes: tuple[int, ...] = Field(
        (1, 2, 4, 8), description="Batch-size buckets captured (cuda_graphs) or compiled (compiled)."
    )
    compile_cache_dir: Path | None = Field(
        None, description="Inductor's on-disk caches (compiled graphs and kernels, keyed by graph, torch version "
        "and GPU), the saved buckets, and Triton's cache (triton/: the project kernels' binaries and tile timings, "
        f"unless TRITON_CACHE_DIR is set); default ${COMPILE_CACHE_ENV} or ~/.cache/serve_app/compiled. Keep it "
        "between restarts (and share it between machines with the same GPU and torch) so that compiling and "
        "tuning happen once.",
    )
    compile_options: dict[str, bool | int | float | str] = Field(
        default_factory=dict,
        description="Inductor settings (names from torch._inductor.config) for the compiled execution, e.g. "
        "{coordinate_descent_tuning: true}; an unknown name or a value of the wrong type is named by `make "
        "serve`'s check (and the prebuild's), and would fail the compile, which falls back to eager with the reason "
        "logged. {triton.cudagraphs: true} replays each bucket as a CUDA graph (the compiled graphs "
        "then run on one thread of their own, and torchvision's deform_conv2d is replaced as for cuda_graphs).",
    )
    conv_before_upsample: bool = Field(
        True, description="In the compiled executions, compute a 1x1 convolution of a concatenation that holds an "
        "upsampling before the upsampling, on the fewer pixels, and upsample its output instead (BiRefNet's "
        "decoder ends so: 1 channel is upsampled to the input's size instead of 96 or more); the same result up to "
        "rounding (serve_app/model/graph_rewrites.py).",
    )
    offset_mask_conv: bool = Field(
        True, description="In the compiled executions, compute each modulated deformable convolution's offsets and "
        "mask (two convolutions of the same input, as BiRefNet writes them) in one convolution, its output channels "
        "padded with zero filters to a multiple of 8, read as two slices; the same values up to rounding "
        "(serve_app/model/graph_rewrites.py).",
    )
    deform_bn_relu_concat: bool = Field(
        True, description="In the compiled executions, have the deformable convolutions that a concatenation reads "
        "through a batch norm and a ReLU (BiRefNet's ASPP blocks) apply both to their float32 sums and write "
        "straight into their channels of the concatenation, which is then not written a second time "
        "(serve_app/model/graph_rewrites.py).",
    )
    deform_conv_channels_last: bool = Field(
        False, description="In the compiled executions, have the deformable convolutions write their output "
        "channels-last, the layout the compiler gives the other convolutions, so that BiRefNet's ASPP blocks read "
        "their five branches along one grain; the same values (serve_app/model/graph_rewrites.py).",
    )
    gelu_in_matmul: bool = Field(
        True, description="In the compiled executions, compute a linear layer's GELU in its matrix product's "
        "epilogue where the GELU alone reads the product (the Swin backbone's MLPs), instead of writing the "
        "product and reading it back; on CUDA cuBLASLt computes GELU's tanh form, within 4.7e-4 of the exact one "
        "(serve_app/model/graph_rewrites.py).",
    )
    features_channels_last: bool = Field(
        True, description="In the compiled executions, keep a transformer backbone's feature maps (tokens viewed as "
        "an image and permuted channels-first, BiRefNet's Swin stages) in the tokens' memory order, channels-last, "
        "instead of copying them channels-first, wherever only convolutions, upsamplings, concatenations, sums and "
        "products read them and the outputs keep their layout; the same values (serve_app/model/graph_rewrites.py).",
    )
    capturable_deform_conv: Literal["triton", "grid_sample"] = Field(
        "triton", description="What runs torchvision's deform_conv2d (BiRefNet's decoder) on CUDA where a CUDA "
        "graph replays it (cuda_graphs, compiled_graphs, compiled with triton.cudagraphs), whose own kernel does not "
        "recompute there: 'triton', one fused kernel that gathers the samples straight into the product "
        "(serve_app/model/deform_triton.py; without Triton installed, 'grid_sample'), or 'grid_sample', grid_sample "
        "and a matmul (serve_app/model/deform_conv.py). Eager execution keeps torchvision's kernel. One process-wide "
        "choice: every model of an application takes the same.",
    )
    channels_last: bool = Field(False, description="Run convolutions in channels-last memory format.")
    attention_precision: Literal["model", "fp32"] = Field(
        "model", description="Where a model's scaled_dot_product_attention runs on PyTorch's math kernel (BiRefNet's "
        "Swin window attention with its bias mask does), fp16/bf16 inputs are upcast to fp32 unless this is "
        "'model': then the attention computes in the model's precision, on tensor cores.",
    )
    contiguous_attention_masks: bool = Field(
        True, description="Copy an attention mask whose last dimension is not contiguous before "
        "scaled_dot_product_attention, so that the fused kernels (memory-efficient, cuDNN) can take it instead of "
        "the math kernel; BiRefNet's Swin backbone needs it (serve_app/model/attention.py).",
    )
    fused_window_attention: bool = Field(
        True, description="Give each Swin-style window attention layer of the model (BiRefNet's backbone; the Hub's "
        "code writes it out as matmul and softmax) a forward that computes the same attention, relative-position "
        "bias and shifted-window mask included, in one kernel (window_attention_kernel); the downloaded code and "
        "weights stay as they are (serve_app/model/attention.py).",
    )
    window_attention_kernel: Literal["triton", "sdpa"] = Field(
        "triton", description="What computes the fused window attention on CUDA: 'triton', one kernel that reads the "
        "relative-position bias and the shifted-window mask by index and the projections where the qkv layer wrote "
        "them (serve_app/model/window_attention_triton.py), or 'sdpa', one scaled_dot_product_attention call with the "
        "bias and mask built as one mask tensor. Off CUDA, and for windows of more than 512 tokens or heads whose "
        "width is not a power of two from 16 to 256, 'sdpa'.",
    )
    probe_batch_limit: bool = Field(
        True, description="At start-up on a GPU, find the largest batch whose pass fits in free memory with "
        "headroom, and cap max_batch_size there (the configured max_batch_size still applies below it).",
    )
    memory_headroom_fraction: float = Field(
        0.1, ge=0.0, le=0.9, description="Share of the device's memory the probe leaves free for everything else.",
    )
    warmup_batch_size: int = Field(
        1, ge=0, le=256, description="Batch size of the warm-up forward run before /readyz turns ready (0 = none)."
    )
    resident: bool = Field(
        True, description="Loaded when a model replica starts, before /readyz, and never unloaded. false: loaded on "
        "its first request, which waits for it up to args.load_wait_s (then 503 + Retry-After), while the other "
        "models keep serving; unloaded when args.max_loaded_models needs its room and it is the one idle longest.",
    )
    batching: BatchSettings | None = Field(
        None, description="This model's own max_batch_size and batch_wait_timeout_s. Default: the "
        "BackgroundRemover's user_config, which `serve deploy` changes live.",
    )

    @property
    def served_name(self) -> str:
        return self.name or self.model_id.rstrip("/").rsplit("/", 1)[-1].split(":")[-1].lower() or "model"

    @field_validator("model_id")
    @classmethod
    def _home_expanded(cls, value: str) -> str:
        # from_pretrained takes "~/models/x" as a Hub id; the shell would have expanded it
        return os.path.expanduser(value) if value.startswith("~") else value

    @field_validator("compile_cache_dir")
    @classmethod
    def _cache_home_expanded(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser()

    @field_validator("graph_batch_sizes")
    @classmethod
    def _positive_buckets(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or min(value) < 1:
            raise ValueError("give at least one batch size, each >= 1")
        return tuple(sorted(set(value)))

    @model_validator(mode="after")
    def _bf16_where_it_runs(self) -> ModelSettings:
        if self.precision == "bf16" and self.device == "cpu":
            raise ValueError("precision bf16 does not run on the CPU (torchvision's deformable convolution has no "
                             "bf16 kernel there): use fp32 or auto")
        return self

    @model_validator(mode="after")
    def _one_kind_of_cuda_graphs(self) -> ModelSettings:
        if self.execution == "compiled_graphs" and self.compile_options.get("triton.cudagraphs"):
            raise ValueError("execution compiled_graphs captures the compiled buckets in CUDA graphs of its own: "
                             "remove triton.cudagraphs from compile_options (or use execution compiled)")
        return self

    @field_validator("input_size", mode="before")
    @classmethod
    def _square_from_int(cls, value: object) -> object:
        return (value, value) if isinstance(value, int) else value

    @field_validator("input_size")
    @classmethod
    def _positive_size(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 8 or max(value) > 4096:
            raise ValueError("each side must be between 8 and 4096 pixels")
        return value


class IngressSettings(StrictModel):
    """Limits and behaviour of the CPU ingress (HTTP, decoding, fetching, encoding)."""

    max_upload_bytes: int = Field(50 * MiB, ge=1, description="Largest accepted request body or fetched image.")
    upload_read_timeout_s: float = Field(
        30.0, gt=0, description="Longest silence while reading a request's body; 408 when it is longer (a client "
                                "that stops sending would otherwise hold one of the replica's request slots).")
    max_image_pixels: int = Field(
        50_000_000, ge=1, description="Largest width*height, checked from the header before decoding."
    )
    fetch_connect_timeout_s: float = Field(5.0, gt=0, description="URL fetch: TCP/TLS connect timeout.")
    fetch_read_timeout_s: float = Field(10.0, gt=0, description="URL fetch: longest silence while reading.")
    fetch_total_timeout_s: float = Field(30.0, gt=0, description="URL fetch: whole download, redirects included.")
    max_redirects: int = Field(3, ge=0, le=10, description="URL fetch: redirects followed, each re-checked.")
    url_allow_networks: tuple[str, ...] = Field(
        (),
        description="CIDR ranges that URL fetching may reach although they are not public (loopback, private, "
        "link-local...). Empty = public addresses only.",
    )
    max_batch_urls: int = Field(100, ge=1, le=10_000, description="Most URLs in one /batch request.")
    batch_url_concurrency: int = Field(
        16, ge=1, le=1024,
        description="URLs in flight at once on one ingress replica, over all its /batch requests: each holds its "
        "photo from fetch to encode, so this bounds their memory.",
    )
    result_dir: str | None = Field(
        None,
        description=f"Where /batch writes results: a folder, or any location fsspec understands (s3://bucket/prefix, "
        f"with the s3 extra). On a multi-node cluster, storage every node reaches. Default: ${RESULT_DIR_ENV}, "
        f"else <tmp>/serve_app_results-<uid>, readable by this user alone. Credentials for object storage come "
        "from its standard environment and "
        f"config files (AWS_PROFILE, AWS_ACCESS_KEY_ID...), never from here.",
    )
    result_ttl_s: float = Field(
        3600.0, gt=0, description="Batch results older than this are not served; a /batch request starts their "
        "deletion (at most once a minute per ingress replica; only names the service writes, at result_dir's top "
        "level). With no further batches they stay until then: on an object store, a lifecycle rule of yours on the "
        "prefix deletes them.")
    codec_threads: int = Field(4, ge=1, le=256, description="Threads per ingress replica for decode/encode.")
    png_threads: int = Field(
        8, ge=1, le=256,
        description="Threads per ingress replica that compress the row stripes of one PNG at once while the replica "
        "has only that image in hand, so a lone request is answered sooner; with more in hand each PNG is "
        "compressed on its codec thread alone, which costs the least CPU.",
    )
    device_jpeg_decode: Literal["never", "auto"] = Field(
        "auto",
        description="auto: a JPEG upload goes to the model replica as the file, which decodes its copy on its device "
        "(nvJPEG on a GPU) while the ingress decodes its own for the cut-out: a lone one while the device was idle at "
        "the last answer (the decode leaves the request's critical path), and at any load one at least twice the "
        "model's input in both directions (the device's decode replaces the reduced copy the ingress would decode "
        "for the model, its costliest CPU step after the PNG). nvJPEG upsamples chroma differently from "
        "libjpeg-turbo, so on a GPU the same photo's mask can differ slightly with the load. never: always decoded "
        "pixels, the same mask at any load.",
    )
    device_png_min_pixels: int = Field(
        0, ge=0,
        description="A JPEG upload of at least this many pixels (e.g. 8000000) that the model replica decodes "
        "(device_jpeg_decode) "
        "and that asks for the plain PNG cut-out (the photo as it is over transparency: the native API's and "
        "rembg's default answer) gets that PNG written on the model's GPU from the GPU's decode: at 12 MP the "
        "PNG's deflate is most of the ingress's CPU work (docs/performance.md). Its files are larger than the "
        "ingress's (the GPU codes runs of zeros but no other repeats), and its colours are nvJPEG's, which differ "
        "slightly from libjpeg-turbo's (chroma upsampling). The ingress checks the file's scan (model_cpu_scan in "
        "Server-Timing) and decodes it only when the replica writes no PNG (while the replica leaves it most of "
        "them, it decodes such files beside the call instead). The replica writes one only while no "
        "full pass waits for the device (the device's time goes to the masks first) and its PNG coder holds no more "
        "than the two its threads write and one more; else the ingress encodes it, so both write PNGs at once. 0 "
        "(the default): never; the ingress encodes every PNG.",
    )
    webp_quality: int = Field(90, ge=1, le=100, description="Quality of lossy WebP output.")
    jpeg_quality: int = Field(90, ge=1, le=100, description="Quality of JPEG output (format=jpg, remove.bg's "
                                                            "jpg and zip).")
    model_names: tuple[str, ...] = Field(
        (),
        description="Names the compatible APIs accept for the served model: rembg's own model names (its `model` "
        "takes no others), e.g. birefnet-general for a fine-tuned BiRefNet. Empty: rembg's name for the model's Hub "
        "id, if it has one; a request without a model name always gets the served model.",
    )
    retry_after_s: int = Field(
        1, ge=1, description="Retry-After header of the ingress's own 503 responses (overloaded, not ready, a model "
        "replica down); a model still loading or failed to load says ceil(load_wait_s / 2), and an image the GPU "
        "ran out of memory on even alone 2."
    )
    request_timeout_s: float = Field(
        60.0, gt=0, description="Deadline for decode + model + encode of one image; 504 when missed."
    )
    api_keys_file: Path | None = Field(
        None,
        description=f"File of API keys, one per line (# starts a comment line). With it, or with ${API_KEYS_ENV} "
        "set, every route but /healthz, /readyz and the page (/, /page/*) needs 'Authorization: Bearer <key>'; "
        "either one holding no key stops the start.",
    )
    cors_allow_origins: tuple[str, ...] = Field(
        (), description="Origins whose web pages may call the APIs from a browser (CORS), such as "
        "'https://app.example.com', or '*' for any, as rembg's server allows. Empty: none but the service's own "
        "(its page at / needs none).",
    )

    @field_validator("api_keys_file")
    @classmethod
    def _keys_home_expanded(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser()

    @field_validator("cors_allow_origins")
    @classmethod
    def _valid_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"an origin is '*' or scheme://host[:port] with no path, got {origin!r}")
        return value

    @field_validator("model_names")
    @classmethod
    def _rembg_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from serve_app.compat.rembg import MODEL_NAMES  # numpy and the compositing code: only when names are set

        unknown = [name for name in value if name not in MODEL_NAMES]
        if unknown:
            raise ValueError(f"{', '.join(map(repr, unknown))} not among rembg's model names, which its clients "
                             f"send and its API accepts: {', '.join(MODEL_NAMES)}")
        return value

    @field_validator("url_allow_networks")
    @classmethod
    def _valid_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for network in value:
            ipaddress.ip_network(network, strict=False)  # raises ValueError naming the bad entry
        return value

    def resolved_result_dir(self) -> str:
        if self.result_dir is not None:
            return self.result_dir
        return os.environ.get(RESULT_DIR_ENV) or default_result_dir()


def default_result_dir() -> str:
    """Per user: the temporary folder is everyone's, and another user's folder of this name could be read."""
    return str(Path(tempfile.gettempdir()) / f"serve_app_results-{os.getuid()}")


def load_api_keys(settings: IngressSettings, environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Keys from the key file and the environment; empty (neither set) means no authentication.

    ValueError, naming the file and line, for a key file or a variable that is set but holds no key (an emptied
    file would otherwise open every route without a word), and for a key with a space in it (`key # team`: comments
    go on lines of their own, and a key that can never match is a locked-out client)."""
    keys: list[str] = []
    variable = (os.environ if environ is None else environ).get(API_KEYS_ENV, "")
    if variable.strip():
        keys += [_one_key(key, f"${API_KEYS_ENV}") for key in variable.split(",") if key.strip()]
        if not keys:
            raise ValueError(f"${API_KEYS_ENV} is set but names no key; unset it to serve without keys")
    if settings.api_keys_file is not None:
        path = settings.api_keys_file
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # -sig: a BOM is not part of the first key
        from_file = [_one_key(line, f"{path}:{number}") for number, line in enumerate(lines, 1)
                     if line.strip() and not line.lstrip().startswith("#")]
        if not from_file:
            raise ValueError(f"{path} holds no key, only blank lines and comments; remove api_keys_file to serve "
                             "without keys")
        keys += from_file
    return tuple(keys)


def _one_key(text: str, where: str) -> str:
    key = text.strip()
    if any(character.isspace() for character in key):
        raise ValueError(f"{where}: a key is one word with no spaces (put comments on lines of their own)")
    return key


class AppArgs(StrictModel):
    """The application's `args:` in a Serve config file: one model (`model`), or several (`models`, with
    `default_model`), each on every model replica, and the ingress."""

    model: ModelSettings | None = Field(
        None, description="The model to serve; beside `models`, one more of them. Neither: ZhengPeng7/BiRefNet.")
    models: tuple[ModelSettings, ...] = Field(
        (), description="Several models on every model replica, each chosen per request by its name; batches "
        "never mix models. The first is the default unless default_model names another.")
    default_model: str | None = Field(None, description="The name of the model a request without `model=` gets.")
    max_loaded_models: int | None = Field(
        None, ge=1, description="Most models one model replica (one GPU) holds at once; a model loaded on first use "
        "beyond it unloads the non-resident one idle longest. null: all of them.")
    load_wait_s: float = Field(
        30.0, gt=0, description="How long a request waits for its model to load on first use; after that it gets "
        "503 with Retry-After, and the model keeps loading.")
    ingress: IngressSettings = IngressSettings()

    @property
    def served_models(self) -> tuple[ModelSettings, ...]:
        served = ((self.model,) if self.model is not None else ()) + self.models
        return served or (ModelSettings(),)

    @property
    def default(self) -> ModelSettings:
        """The model a request without a model name gets."""
        return self.named(self.default_model) if self.default_model else self.served_models[0]

    def named(self, name: str) -> ModelSettings:
        for settings in self.served_models:
            if settings.served_name == name:
                return settings
        raise ValueError(f"no model named {name!r}; served: {', '.join(self.model_names)}")

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(settings.served_name for settings in self.served_models)

    @model_validator(mode="after")
    def _consistent_models(self) -> AppArgs:
        names = self.model_names
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"models need distinct names (set `name`): {', '.join(repeated)} repeats")
        if self.default_model is not None and self.default_model not in names:
            raise ValueError(f"default_model {self.default_model!r} is not one of the models: {', '.join(names)}")
        residents = sum(settings.resident for settings in self.served_models)
        cold = len(names) - residents
        if self.max_loaded_models is not None and residents + min(cold, 1) > self.max_loaded_models:
            raise ValueError(f"max_loaded_models={self.max_loaded_models} leaves no room: {residents} resident "
                             f"models{' and at least one loaded on first use' if cold else ''}")
        if not self.default.resident:
            raise ValueError(f"the default model {self.default.served_name!r} must be resident")
        if len({settings.attention_precision for settings in self.served_models}) > 1:
            raise ValueError("attention_precision is one PyTorch setting per process: give every model the same")
        if len({settings.capturable_deform_conv for settings in self.served_models}) > 1:
            raise ValueError("capturable_deform_conv replaces torchvision's kernel for the whole process: give every "
                             "model the same")
        if cold and self.load_wait_s >= self.ingress.request_timeout_s:
            raise ValueError(f"load_wait_s ({self.load_wait_s:g}) must be shorter than ingress.request_timeout_s "
                             f"({self.ingress.request_timeout_s:g}), or a waiting request times out (504) instead "
                             "of being told to retry (503)")
        return self

    def replica_args(self) -> dict:
        """What the model deployment is built with: every model, the default first, and the residency limits."""
        default = self.default
        ordered = (default, *(settings for settings in self.served_models if settings is not default))
        return {"models": [settings.model_dump(mode="json") for settings in ordered],
                "max_loaded_models": self.max_loaded_models, "load_wait_s": self.load_wait_s}


def describe_validation_error(error: ValidationError, prefix: str) -> str:
    """One line per problem, each naming the full path of the bad field."""
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in (prefix, *problem["loc"]))
        lines.append(f"{where}: {problem['msg']}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def parse_app_args(raw: dict | None) -> AppArgs:
    try:
        return AppArgs.model_validate(raw or {})
    except ValidationError as error:
        raise ValueError(describe_validation_error(error, "args")) from None


def parse_batch_settings(raw: dict | None) -> BatchSettings:
    try:
        return BatchSettings.model_validate(raw or {})
    except ValidationError as error:
        raise ValueError(describe_validation_error(error, "user_config")) from None
