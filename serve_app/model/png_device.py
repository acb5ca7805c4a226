"""A cut-out's PNG stream written on the model's device, for the photos whose PNG the ingress's CPUs cannot deflate
as fast as the GPU segments them.

Why: a 12 MP cut-out is 48 MB of RGBA rows, and ISA-L's deflate of them on one core costs more than the photo's
decode and everything else the ingress does; at 12 MP the ingress's CPUs, not the GPU, set the throughput
(docs/performance.md). Three Triton kernels write the same rows' zlib stream in a fraction of a millisecond of
the device.

The stream holds the rows Up-filtered as the CPU encoder filters them (serve_app/png.py), in one deflate block with
a dynamic Huffman code of literals, except that each all-zero aligned CHUNK of the filtered bytes (the cleared
transparent areas, which stay zero after the filter) is a literal 0 and one 255-byte match at distance 1. No other
string matching: a symbol's bit count follows from its value alone, so every lane's place in the output is a prefix
sum, and nothing is serial. The price is the file: larger than ISA-L level 1's.

The steps, for one image on a CUDA stream of the calling thread's own:
1. compose and filter (Triton): RGB of any strides (nvJPEG's planes) and the alpha into the filtered RGBA rows,
   transparent pixels cleared, with a histogram of every HIST_ROW_STEP-th row (it only shapes the code: any code
   that gives every symbol a length is valid);
2. which aligned chunks are all zero; both counts to the host (the one wait in the middle);
3. on the host: code lengths (Huffman, at most 15 bits), canonical codes, the block's header;
4. each block's bit count and its Adler-32 sums (Triton); a prefix sum gives each block's first bit;
5. each lane's codes OR-ed into 64-bit words (Triton); the words come back through pinned memory, and the host
   appends the end-of-block code and the Adler-32.

Runs wherever Triton does: CUDA devices, and CPU tensors under Triton's interpreter (TRITON_INTERPRET=1), which
the tests use.
"""

from __future__ import annotations

import heapq
import struct
import threading
import zlib

import numpy as np
import torch
import triton
import triton.language as tl

MAX_BITS = 15
END_OF_BLOCK = 256
LITERAL_LENGTH_SYMBOLS = 286  # 0-255 literals, 256 end of block, 257-285 match lengths
CHUNK = 256  # an all-zero aligned chunk of the filtered rows is coded as a literal 0 + one 255-byte match
RUN_SYMBOL, RUN_EXTRA, RUN_EXTRA_BITS = 284, 255 - 227, 5  # RFC 1951 3.2.5: symbol 284 + 5 bits is 227-257
HIST_ROW_STEP = 8  # the code is shaped by every 8th row's bytes: a photo's statistics, an eighth of the work
ROW_BLOCK = 2048  # filtered bytes of a row per program of the compose kernel
LANES, PER_LANE = 256, 4  # the bit kernels' programs: 256 lanes of 4 symbols (at most 4 x 15 = 60 bits a lane)
_ZLIB_HEADER = b"\x78\x01"
_ADLER_BASE = 65521
_UP_FILTER = 2
_LENGTH_CODE_ORDER = (16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15)
_REVERSED = np.array([int(f"{value:015b}"[::-1], 2) for value in range(1 << MAX_BITS)], np.int64)


@triton.jit(do_not_specialize=["width", "rgb_row", "rgb_px", "rgb_ch", "alpha_row", "hist_step"])
def _compose_filter_kernel(rgb_ptr, alpha_ptr, out_ptr, hist_ptr, width, rgb_row, rgb_px, rgb_ch, alpha_row,
                           hist_step, BLOCK: tl.constexpr):
    """Row `program_id(0)`'s RGBA bytes [BLOCK * program_id(1), +BLOCK), composed (transparent pixels all zero)
    and Up-filtered into the PNG's rows, after each row's filter byte; sampled rows add to the histogram."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = cols < width * 4
    pixel = (cols // 4).to(tl.int64)
    channel = cols % 4
    colour = tl.minimum(channel, 2).to(tl.int64) * rgb_ch
    alpha = tl.load(alpha_ptr + row * alpha_row + pixel, mask=inside, other=0)
    value = tl.load(rgb_ptr + row * rgb_row + pixel * rgb_px + colour, mask=inside & (channel < 3), other=0)
    value = tl.where(alpha == 0, 0, tl.where(channel == 3, alpha, value)).to(tl.uint8)
    above_ok = inside & (row > 0)
    alpha_above = tl.load(alpha_ptr + (row - 1) * alpha_row + pixel, mask=above_ok, other=0)
    above = tl.load(rgb_ptr + (row - 1) * rgb_row + pixel * rgb_px + colour, mask=above_ok & (channel < 3), other=0)
    above = tl.where(alpha_above == 0, 0, tl.where(channel == 3, alpha_above, above)).to(tl.uint8)
    filtered = (value - above).to(tl.uint8)  # modulo 256, as the Up filter is
    tl.store(out_ptr + row * (width * 4 + 1) + 1 + cols, filtered, mask=inside)
    if row % hist_step == 0:
        counts = tl.histogram(tl.where(inside, filtered.to(tl.int32), 0), 256)
        tl.atomic_add(hist_ptr + tl.arange(0, 256), counts)


@triton.jit
def _lane_symbols(data_ptr, lengths_ptr, zero_ptr, index, total, chunked, run_bits):
    """Each byte's value and code length; in an all-zero chunk the first byte carries the chunk's literal 0 and
    match, the others nothing."""
    inside = index < total
    symbol = tl.load(data_ptr + index, mask=inside, other=0).to(tl.int32)
    length = tl.load(lengths_ptr + symbol, mask=inside, other=0)
    zero = tl.load(zero_ptr + index // 256, mask=index < chunked, other=0) != 0
    length = tl.where(zero, tl.where(index % 256 == 0, run_bits, 0), length)
    return symbol, length, zero


@triton.jit(do_not_specialize=["total", "chunked", "run_bits"])
def _bits_kernel(data_ptr, lengths_ptr, zero_ptr, block_bits_ptr, sums_ptr, total, chunked, run_bits,
                 LANES: tl.constexpr, PER_LANE: tl.constexpr):
    """This block's bit count, and its bytes' two Adler-32 partial sums: sum(s) and sum((total - i) * s)."""
    block = tl.program_id(0)
    index = (block.to(tl.int64) * LANES * PER_LANE + tl.arange(0, LANES)[:, None] * PER_LANE
             + tl.arange(0, PER_LANE)[None, :])
    symbol, length, zero = _lane_symbols(data_ptr, lengths_ptr, zero_ptr, index, total, chunked, run_bits)
    tl.store(block_bits_ptr + block, tl.sum(tl.sum(length.to(tl.int64), 1), 0))
    weighted = symbol.to(tl.int64)
    tl.store(sums_ptr + block * 2, tl.sum(tl.sum(weighted, 1), 0))
    tl.store(sums_ptr + block * 2 + 1, tl.sum(tl.sum((total - index) * weighted, 1), 0))


@triton.jit(do_not_specialize=["total", "chunked", "run_bits", "run_code"])
def _write_kernel(data_ptr, lengths_ptr, codes_ptr, zero_ptr, starts_ptr, out_ptr, total, chunked, run_bits,
                  run_code, LANES: tl.constexpr, PER_LANE: tl.constexpr):
    """This block's codes OR-ed into the output's 64-bit words from the block's first bit on."""
    block = tl.program_id(0)
    index = (block.to(tl.int64) * LANES * PER_LANE + tl.arange(0, LANES)[:, None] * PER_LANE
             + tl.arange(0, PER_LANE)[None, :])
    symbol, length, zero = _lane_symbols(data_ptr, lengths_ptr, zero_ptr, index, total, chunked, run_bits)
    length = length.to(tl.int64)
    code = tl.load(codes_ptr + symbol, mask=index < total, other=0).to(tl.int64)
    code = tl.where(zero, tl.where(index % 256 == 0, run_code, 0), code)
    offset = tl.cumsum(length, 1) - length  # each symbol's first bit within its lane (a lane holds <= 60 bits)
    value = tl.sum(code << offset, 1)  # the codes do not overlap: their sum is their OR
    lane_bits = tl.sum(length, 1)
    at = tl.load(starts_ptr + block) + tl.cumsum(lane_bits, 0) - lane_bits
    word = at >> 6
    shift = at & 63
    tl.atomic_or(out_ptr + word, value << shift, mask=lane_bits > 0)
    spill = (shift + lane_bits > 64) & (shift > 0)
    tl.atomic_or(out_ptr + word + 1, value >> tl.where(spill, 64 - shift, 0), mask=spill)


def huffman_lengths(weights: np.ndarray, max_bits: int = MAX_BITS) -> np.ndarray:
    """Huffman code lengths of `weights` (all > 0, at least two, at most 2**max_bits), each at most `max_bits`.

    A photo's weights span millions to one, so a plain Huffman code's longest codes are often longer: they are cut
    to `max_bits`, which leaves more codes than the lengths have room for, and then, one at a time, a longest code
    goes and the longest shorter code becomes two codes a bit longer (miniz's and zlib's way), until the code is
    complete again. The lengths are then dealt out again, the longest to the rarest symbols. One build of the code
    in all: dividing the weights until the code fits took a dozen builds, milliseconds of Python on the device
    PNG's thread."""
    weights = np.asarray(weights, np.int64)
    if len(weights) > 1 << max_bits:
        raise ValueError(f"{len(weights)} symbols do not fit codes of {max_bits} bits")
    lengths = _huffman(weights)
    if lengths.max() <= max_bits:
        return lengths
    counts = [int(count) for count in np.bincount(np.minimum(lengths, max_bits), minlength=max_bits + 1)]
    room = sum(counts[bits] << (max_bits - bits) for bits in range(1, max_bits + 1)) - (1 << max_bits)
    for _ in range(room):  # each round frees the room of one longest code
        counts[max_bits] -= 1
        bits = max(bits for bits in range(1, max_bits) if counts[bits])
        counts[bits] -= 1
        counts[bits + 1] += 2
    rarest_first = np.argsort(weights, kind="stable")
    limited = np.empty_like(lengths)
    limited[rarest_first] = np.repeat(np.arange(max_bits, 0, -1), counts[max_bits:0:-1])
    return limited


def _huffman(weights: np.ndarray) -> np.ndarray:
    """Plain Huffman code lengths of `weights` (at least two), of any length."""
    count = len(weights)
    heap = [(int(weight), symbol) for symbol, weight in enumerate(weights)]
    heapq.heapify(heap)
    parent = [0] * (2 * count - 1)
    node = count
    while len(heap) > 1:
        weight_a, a = heapq.heappop(heap)
        weight_b, b = heapq.heappop(heap)
        parent[a] = parent[b] = node
        heapq.heappush(heap, (weight_a + weight_b, node))
        node += 1
    depth = [0] * node  # the root is the last node made; every node's parent comes after it
    for inner in range(node - 2, -1, -1):
        depth[inner] = depth[parent[inner]] + 1
    return np.array(depth[:count], np.int64)


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Deflate's canonical codes for `lengths` (0: unused), bit-reversed as deflate writes them (first bit lowest)."""
    lengths = np.asarray(lengths, np.int64)
    counts = np.bincount(lengths, minlength=MAX_BITS + 1)
    counts[0] = 0
    first = np.zeros(MAX_BITS + 1, np.int64)
    code = 0
    for bits in range(1, MAX_BITS + 1):
        code = (code + int(counts[bits - 1])) << 1
        first[bits] = code
    order = np.lexsort((np.arange(len(lengths)), lengths))  # by length, then symbol
    order = order[lengths[order] > 0]
    sorted_lengths = lengths[order]
    starts = np.searchsorted(sorted_lengths, sorted_lengths)  # each length's first place in the order
    codes = np.zeros(len(lengths), np.int64)
    codes[order] = first[sorted_lengths] + np.arange(len(order)) - starts
    return np.where(lengths > 0, _REVERSED[codes] >> (MAX_BITS - lengths), 0)


class _Bits:
    """A little-endian bit string as deflate writes it."""

    def __init__(self) -> None:
        self.value, self.count = 0, 0

    def write(self, value: int, bits: int) -> None:
        self.value |= value << self.count
        self.count += bits


def block_header(lengths: np.ndarray) -> _Bits:
    """A final dynamic block's header for literal/length codes of `lengths` (286 of them) and two 1-bit distance
    codes (distance 1 is code 0); each code length written as its own code-length symbol."""
    header = _Bits()
    header.write(1, 1)  # BFINAL
    header.write(2, 2)  # dynamic Huffman codes
    header.write(len(lengths) - 257, 5)  # HLIT
    header.write(1, 5)  # HDIST: two distance codes
    header.write(len(_LENGTH_CODE_ORDER) - 4, 4)  # HCLEN: all 19
    all_lengths = np.concatenate([lengths, np.ones(2, np.int64)])
    used = np.bincount(all_lengths, minlength=19)
    length_weights = np.where(used > 0, used, 0)
    present = np.flatnonzero(length_weights)
    length_lengths = np.zeros(19, np.int64)
    if len(present) == 1:  # one length only: a complete 1-bit code needs a second symbol
        length_weights[0 if present[0] else 1] = 1
        present = np.flatnonzero(length_weights)
    length_lengths[present] = huffman_lengths(length_weights[present], 7)
    length_codes = canonical_codes(length_lengths)
    for symbol in _LENGTH_CODE_ORDER:
        header.write(int(length_lengths[symbol]), 3)
    for length in all_lengths:
        header.write(int(length_codes[length]), int(length_lengths[length]))
    return header


class _Workspace(threading.local):
    """The calling thread's CUDA stream and the pinned buffer its streams come back through, kept between calls."""

    stream: torch.cuda.Stream | None = None
    pinned: torch.Tensor | None = None


_WORKSPACE = _Workspace()


def encode_cutout_stream(rgb: torch.Tensor, alpha: torch.Tensor) -> np.ndarray:
    """The zlib stream of a cut-out's PNG rows (what its IDAT chunks hold; serve_app.png.wrap_zlib_stream makes
    the PNG), as a uint8 array (Ray carries an array's memory to another process without pickling a copy):
    (H, W, 3) uint8 `rgb` of any strides on the device and its (H, W) uint8 `alpha` (on the host or the device),
    composed into RGBA with every fully transparent pixel (0, 0, 0, 0), Up-filtered. Waits for the device.

    On CUDA the work runs on a high-priority stream of the calling thread's own, so that it slips between the
    kernels of the passes queued on the other streams instead of waiting behind them. That stream does not wait
    for the others: `rgb` must be complete already (a decode whose mask the caller has is)."""
    if rgb.dtype != torch.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
        raise ValueError(f"expected non-empty (H, W, 3) uint8 pixels, got {tuple(rgb.shape)} {rgb.dtype}")
    height, width = rgb.shape[:2]
    if alpha.dtype != torch.uint8 or tuple(alpha.shape) != (height, width):
        raise ValueError(f"expected a ({height}, {width}) uint8 alpha, got {tuple(alpha.shape)} {alpha.dtype}")
    if rgb.device.type != "cuda":
        return _encode(rgb, alpha.to(rgb.device).contiguous())
    if _WORKSPACE.stream is None:
        _WORKSPACE.stream = torch.cuda.Stream(rgb.device, priority=-1)
    with torch.cuda.stream(_WORKSPACE.stream):
        rgb.record_stream(_WORKSPACE.stream)  # made on another stream: its memory is not reused before this reads it
        return _encode(rgb, alpha.to(rgb.device, non_blocking=True).contiguous())


def check_cutout_stream(device: torch.device) -> None:
    """Write a small cut-out's stream on `device` (compiling the kernels, or loading them from Triton's cache) and
    raise ValueError unless it holds exactly that cut-out's filtered rows."""
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (16, 700, 3), dtype=torch.uint8, generator=generator)
    alpha = torch.randint(0, 256, (16, 700), dtype=torch.uint8, generator=generator)
    alpha[:, :300] = 0  # whole zero chunks
    stream = encode_cutout_stream(pixels.to(device), alpha)
    rows = torch.cat([pixels, alpha[..., None]], 2).masked_fill_((alpha == 0)[..., None], 0).view(16, -1)
    expected = torch.cat([rows[:1], rows[1:] - rows[:-1]])  # uint8: modulo 256
    written = torch.frombuffer(bytearray(zlib.decompress(stream.data)), dtype=torch.uint8).view(16, -1)
    if not (bool((written[:, 0] == _UP_FILTER).all()) and torch.equal(written[:, 1:], expected)):
        raise ValueError("the stream does not hold the cut-out's filtered rows")


def _encode(rgb: torch.Tensor, alpha: torch.Tensor) -> np.ndarray:
    height, width = rgb.shape[:2]
    device = rgb.device
    row_bytes = width * 4 + 1
    total = height * row_bytes
    rows = torch.empty((height, row_bytes), dtype=torch.uint8, device=device)
    rows[:, 0] = _UP_FILTER
    hist = torch.zeros(256, dtype=torch.int32, device=device)
    _compose_filter_kernel[(height, triton.cdiv(width * 4, ROW_BLOCK))](
        rgb, alpha, rows, hist, width, rgb.stride(0), rgb.stride(1), rgb.stride(2), alpha.stride(0), HIST_ROW_STEP,
        BLOCK=ROW_BLOCK)
    flat = rows.view(-1)
    chunked = total // CHUNK * CHUNK
    zero = (flat[:chunked].view(-1, CHUNK).amax(1) == 0).to(torch.uint8)
    counts = _to_host(torch.cat([hist.to(torch.int64), zero.sum(dtype=torch.int64).view(1)])).copy()  # waits
    sampled, zero_chunks = counts[:256], int(counts[256])
    sampled_rows = -(-height // HIST_ROW_STEP)
    weights = np.ones(LITERAL_LENGTH_SYMBOLS, np.int64)  # every symbol a code, so every byte has one
    weights[:256] += np.round(sampled * (height / sampled_rows)).astype(np.int64)
    weights[0] = max(1, int(weights[0]) - (CHUNK - 1) * zero_chunks)  # most of those zeros are in matches
    weights[RUN_SYMBOL] += zero_chunks
    weights[_UP_FILTER] += height
    lengths = huffman_lengths(weights)
    codes = canonical_codes(lengths)
    header = block_header(lengths)
    run_bits = int(lengths[0] + lengths[RUN_SYMBOL]) + RUN_EXTRA_BITS + 1  # then distance code 0: one 0 bit
    run_code = (int(codes[0]) | int(codes[RUN_SYMBOL]) << int(lengths[0])
                | RUN_EXTRA << int(lengths[0] + lengths[RUN_SYMBOL]))
    tables = torch.from_numpy(np.concatenate([lengths[:256], codes[:256]])).to(device, non_blocking=True)
    length_table, code_table = tables[:256].to(torch.int32), tables[256:]
    per_block = LANES * PER_LANE
    blocks = triton.cdiv(total, per_block)
    block_bits = torch.empty(blocks, dtype=torch.int64, device=device)
    sums = torch.empty((blocks, 2), dtype=torch.int64, device=device)
    _bits_kernel[(blocks,)](flat, length_table, zero, block_bits, sums, total, chunked, run_bits, LANES=LANES,
                            PER_LANE=PER_LANE)
    ends = torch.cumsum(block_bits, 0).add_(header.count)
    adler = torch.stack([sums[:, 0].sum(), (sums[:, 1] % _ADLER_BASE).sum()]) % _ADLER_BASE
    summary = _to_host(torch.cat([ends[-1:], adler]))  # waits
    body_end, low_sum, high_sum = (int(value) for value in summary)
    words = body_end // 64 + 1
    out = torch.zeros(words, dtype=torch.int64, device=device)
    head_words = header.count // 64 + 1
    head = np.frombuffer(header.value.to_bytes(head_words * 8, "little"), np.int64)
    out[:head_words] = torch.from_numpy(head.copy()).to(device, non_blocking=True)
    _write_kernel[(blocks,)](flat, length_table, code_table, zero, ends - block_bits, out, total, chunked, run_bits,
                             run_code, LANES=LANES, PER_LANE=PER_LANE)
    body = _to_host(out)
    tail = _Bits()  # the last word's bits, the end-of-block code, padded to a byte
    tail.write(int(body[-1]) & ((1 << 64) - 1), body_end - 64 * (words - 1))
    tail.write(int(codes[END_OF_BLOCK]), int(lengths[END_OF_BLOCK]))
    low = (1 + low_sum) % _ADLER_BASE
    high = (total + high_sum) % _ADLER_BASE
    # One copy, straight from the words on the host into the stream (numpy copies without holding the GIL).
    body_bytes = body[:-1].view(np.uint8)
    end = tail.value.to_bytes(-(-tail.count // 8), "little") + struct.pack(">I", high << 16 | low)
    stream = np.empty(len(_ZLIB_HEADER) + body_bytes.size + len(end), np.uint8)
    stream[: len(_ZLIB_HEADER)] = np.frombuffer(_ZLIB_HEADER, np.uint8)
    stream[len(_ZLIB_HEADER) : len(_ZLIB_HEADER) + body_bytes.size] = body_bytes
    stream[len(stream) - len(end) :] = np.frombuffer(end, np.uint8)
    return stream


def _to_host(out: torch.Tensor) -> np.ndarray:
    """`out`'s words on the host: on CUDA in the calling thread's pinned buffer (a copy engine's transfer, several
    times a pageable copy's speed), valid until the thread's next call."""
    if out.device.type != "cuda":
        return out.numpy()
    pinned = _WORKSPACE.pinned
    if pinned is None or pinned.numel() < out.numel():
        pinned = _WORKSPACE.pinned = torch.empty(max(out.numel(), 1 << 20), dtype=torch.int64, pin_memory=True)
    view = pinned[: out.numel()]
    view.copy_(out, non_blocking=True)
    _wait_for_stream()
    return view.numpy()


def _wait_for_stream() -> None:
    """Wait, asleep, until the calling thread's CUDA stream has done what it was given: `.cpu()` or a stream's
    synchronize would spin a CPU core meanwhile, which the ingress's encoders beside it could use."""
    done = torch.cuda.Event(blocking=True)
    done.record()
    done.synchronize()
