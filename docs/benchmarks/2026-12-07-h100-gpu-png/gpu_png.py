"""Feasibility: a 12 MP RGBA cut-out's PNG written on the GPU (Up filter, one dynamic Huffman block of literals, no
string matches), timed on the device and checked by zlib and Pillow. Prototype outside the service.

    python gpu_png.py [--device cuda] [--size 4000x3000] [--photo PATH.jpg] [--repeat 10]
"""
from __future__ import annotations

import argparse
import heapq
import io
import json
import os
import struct
import time
import zlib

import numpy as np
import torch
import triton
import triton.language as tl

MAX_BITS = 15
LENGTH_CODE_ORDER = (16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15)
END_OF_BLOCK = 256
HIST_BLOCK = 4096
_PINNED = None  # the host buffer the stream is copied into, kept from call to call as a service would


@triton.jit
def _filter_hist_kernel(rows_ptr, filt_ptr, hist_ptr, R, BLOCK: tl.constexpr):
    """Row `program_id(0)`'s columns [BLOCK * program_id(1), +BLOCK): Up-filtered into the PNG's rows (after each
    row's filter byte), and their histogram into this program's own 256 counts (padding lanes count as zeros)."""
    row = tl.program_id(0).to(tl.int64)
    part = tl.program_id(1)
    cols = part * BLOCK + tl.arange(0, BLOCK)
    m = cols < R
    cur = tl.load(rows_ptr + row * R + cols, mask=m, other=0)
    above = tl.load(rows_ptr + (row - 1) * R + cols, mask=m & (row > 0), other=0)
    f = cur - above
    tl.store(filt_ptr + row * (R + 1) + 1 + cols, f, mask=m)
    h = tl.histogram(tl.where(m, f.to(tl.int32), 0), 256)
    program = row * tl.num_programs(1) + part
    tl.store(hist_ptr + program * 256 + tl.arange(0, 256), h)


@triton.jit
def _bits_kernel(f_ptr, len_ptr, block_bits_ptr, adler_ptr, N, BLOCK: tl.constexpr, K: tl.constexpr):
    pid = tl.program_id(0)
    idx = pid.to(tl.int64) * BLOCK * K + tl.arange(0, BLOCK)[:, None] * K + tl.arange(0, K)[None, :]
    m = idx < N
    s = tl.load(f_ptr + idx, mask=m, other=0).to(tl.int32)
    length = tl.load(len_ptr + s, mask=m, other=0)
    tl.store(block_bits_ptr + pid, tl.sum(tl.sum(length.to(tl.int64), 1), 0))
    s64 = s.to(tl.int64)
    tl.atomic_add(adler_ptr, tl.sum(tl.sum(s64, 1), 0))
    tl.atomic_add(adler_ptr + 1, tl.sum(tl.sum((N - idx) * s64, 1), 0))


@triton.jit
def _write_kernel(f_ptr, len_ptr, code_ptr, start_ptr, out_ptr, N, BLOCK: tl.constexpr, K: tl.constexpr):
    pid = tl.program_id(0)
    idx = pid.to(tl.int64) * BLOCK * K + tl.arange(0, BLOCK)[:, None] * K + tl.arange(0, K)[None, :]
    m = idx < N
    s = tl.load(f_ptr + idx, mask=m, other=0).to(tl.int32)
    length = tl.load(len_ptr + s, mask=m, other=0).to(tl.int64)
    code = tl.load(code_ptr + s, mask=m, other=0).to(tl.int64)
    inside = tl.cumsum(length, 1) - length  # each symbol's offset within its lane's K symbols (<= 60 bits)
    value = tl.sum(code << inside, 1)  # the lane's bits; they do not overlap, so the sum is their OR
    lane_bits = tl.sum(length, 1)
    lane_start = tl.cumsum(lane_bits, 0) - lane_bits
    at = tl.load(start_ptr + pid) + lane_start
    word = at >> 6
    shift = at & 63
    tl.atomic_or(out_ptr + word, value << shift, mask=lane_bits > 0)
    spill = (shift + lane_bits > 64) & (shift > 0)
    tl.atomic_or(out_ptr + word + 1, value >> tl.where(spill, 64 - shift, 0), mask=spill)


def huffman_lengths(weights: np.ndarray) -> np.ndarray:
    used = [int(s) for s in np.flatnonzero(weights)]
    lengths = np.zeros(len(weights), np.int64)
    if len(used) < 2:
        for s in (used + [o for o in (0, 1) if o not in used])[:2]:
            lengths[s] = 1
        return lengths
    heap = [(int(weights[s]), s, (s,)) for s in used]
    heapq.heapify(heap)
    order = len(weights)
    while len(heap) > 1:
        wa, _, sa = heapq.heappop(heap)
        wb, _, sb = heapq.heappop(heap)
        for s in sa + sb:
            lengths[s] += 1
        heapq.heappush(heap, (wa + wb, order, sa + sb))
        order += 1
    return lengths


def code_lengths(weights: np.ndarray, max_bits: int, keep_zero: bool = False) -> np.ndarray:
    weights = np.asarray(weights, np.int64)
    floor = max(1, int(weights.sum()) >> 14)
    weights = np.where(weights > 0, np.maximum(weights, floor), 0) if keep_zero else np.maximum(weights, floor)
    while True:
        lengths = huffman_lengths(weights)
        if lengths.max() <= max_bits:
            return lengths
        weights = np.where(weights > 0, (weights + 1) // 2, 0) if keep_zero else (weights + 1) // 2


def reversed_codes(lengths: np.ndarray) -> np.ndarray:
    counts = np.bincount(lengths, minlength=MAX_BITS + 1)
    counts[0] = 0
    next_code = np.zeros(MAX_BITS + 2, np.int64)
    code = 0
    for bits in range(1, MAX_BITS + 1):
        code = (code + int(counts[bits - 1])) << 1
        next_code[bits] = code
    codes = np.zeros(len(lengths), np.int64)
    for symbol, bits in enumerate(int(x) for x in lengths):
        if bits:
            codes[symbol] = int(format(int(next_code[bits]), f"0{bits}b")[::-1], 2)
            next_code[bits] += 1
    return codes


def block_header(lengths: np.ndarray) -> tuple[int, int]:
    """BFINAL=1, dynamic block: 257 literal/length codes, 2 distance codes of 1 bit; as (value, bit count)."""
    value, count = 0, 0

    def write(v: int, n: int) -> None:
        nonlocal value, count
        value |= v << count
        count += n
    write(1, 1)
    write(2, 2)
    write(0, 5)  # HLIT: 257
    write(1, 5)  # HDIST: 2
    all_lengths = np.concatenate([lengths, np.ones(2, np.int64)])
    length_code_lengths = code_lengths(np.bincount(all_lengths, minlength=19), 7, keep_zero=True)
    length_codes = reversed_codes(length_code_lengths)
    write(15, 4)  # HCLEN: 19
    for symbol in LENGTH_CODE_ORDER:
        write(int(length_code_lengths[symbol]), 3)
    for length in all_lengths:
        write(int(length_codes[length]), int(length_code_lengths[length]))
    return value, count


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def encode_png_gpu(rgba: torch.Tensor, BLOCK: int = 256, K: int = 4) -> tuple[bytes, dict]:
    """PNG of (H, W, 4) uint8 pixels on the device."""
    height, width, _ = rgba.shape
    row_bytes = width * 4
    rows = rgba.view(height, row_bytes)
    filt = torch.empty((height, row_bytes + 1), dtype=torch.uint8, device=rgba.device)
    filt[:, 0] = 2
    flat = filt.view(-1)
    n = flat.numel()
    parts = -(-row_bytes // HIST_BLOCK)
    per_program = torch.empty((height * parts, 256), dtype=torch.int32, device=rgba.device)
    _filter_hist_kernel[(height, parts)](rows, filt, per_program, row_bytes, BLOCK=HIST_BLOCK)
    hist = per_program.sum(0, dtype=torch.int64).cpu().numpy()  # sync 1
    hist[0] -= height * (parts * HIST_BLOCK - row_bytes)  # the padding lanes
    hist[2] += height  # each row's filter byte
    weights = np.ones(257, np.int64)
    weights[:256] += hist
    lengths = code_lengths(weights, MAX_BITS)
    codes = reversed_codes(lengths)
    header_value, header_bits = block_header(lengths)
    dev = rgba.device
    len_t = torch.from_numpy(lengths[:256].astype(np.int32)).to(dev, non_blocking=True)
    code_t = torch.from_numpy(codes[:256]).to(dev, non_blocking=True)
    per_block = BLOCK * K
    blocks = -(-n // per_block)
    block_bits = torch.empty(blocks, dtype=torch.int64, device=dev)
    adler = torch.zeros(2, dtype=torch.int64, device=dev)
    _bits_kernel[(blocks,)](flat, len_t, block_bits, adler, n, BLOCK=BLOCK, K=K)
    starts = torch.cumsum(block_bits, 0) - block_bits + header_bits
    max_words = (header_bits + 15 * n) // 64 + 2
    out = torch.zeros(max_words, dtype=torch.int64, device=dev)
    head_words = header_bits // 64 + 1
    head = np.frombuffer(header_value.to_bytes(head_words * 8, "little"), np.int64).copy()
    out[:head_words] = torch.from_numpy(head).to(dev)
    _write_kernel[(blocks,)](flat, len_t, code_t, starts, out, n, BLOCK=BLOCK, K=K)
    total_bits = int((starts[-1] + block_bits[-1]).item())  # sync 2
    used_words = total_bits // 64 + 1
    global _PINNED
    if _PINNED is None or _PINNED.numel() < used_words:
        _PINNED = torch.empty(max_words, dtype=torch.int64, pin_memory=rgba.device.type == "cuda")
    _PINNED[:used_words].copy_(out[:used_words], non_blocking=True)
    torch.cuda.synchronize() if rgba.device.type == "cuda" else None
    body = _PINNED[:used_words].numpy()
    s1, s2 = (int(v) for v in adler.cpu().numpy())
    # end of block, then the bits padded to a byte
    tail_value = int(body[-1]) & ((1 << 64) - 1)
    tail_bits = total_bits - 64 * (used_words - 1)
    tail_value |= int(codes[END_OF_BLOCK]) << tail_bits
    tail_bits += int(lengths[END_OF_BLOCK])
    data = body[:-1].tobytes() + tail_value.to_bytes(16, "little")[: -(-tail_bits // 8)]
    low = (1 + s1) % 65521
    high = (n + s2) % 65521
    idat = b"\x78\x01" + data + struct.pack(">I", high << 16 | low)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
           + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return png, {"header_bits": header_bits, "body_bits": total_bits - header_bits, "symbols": n}


def stages(rgba: torch.Tensor) -> dict:
    """Device time of each step alone (median of 5), the host's work between them excluded."""
    height, width, _ = rgba.shape
    rows = rgba.view(height, width * 4)
    filt = torch.empty((height, width * 4 + 1), dtype=torch.uint8, device=rgba.device)
    flat = filt.view(-1)
    n = flat.numel()
    lengths = torch.full((256,), 8, dtype=torch.int32, device=rgba.device)
    codes = torch.arange(256, dtype=torch.int64, device=rgba.device)
    blocks = -(-n // 1024)
    block_bits = torch.empty(blocks, dtype=torch.int64, device=rgba.device)
    adler = torch.zeros(2, dtype=torch.int64, device=rgba.device)
    out = torch.zeros(n // 8 + 2, dtype=torch.int64, device=rgba.device)

    def up():
        filt[:, 0] = 2
        filt[0, 1:] = rows[0]
        torch.sub(rows[1:], rows[:-1], out=filt[1:, 1:])
    parts = -(-width * 4 // HIST_BLOCK)
    per_program = torch.empty((height * parts, 256), dtype=torch.int32, device=rgba.device)
    pinned = torch.empty(n // 8, dtype=torch.int64, pin_memory=True)
    steps = {
        "up_filter_torch": up,
        "bincount_torch": lambda: torch.bincount(flat, minlength=256),
        "filter_hist_kernel_and_sum": lambda: (
            _filter_hist_kernel[(height, parts)](rows, filt, per_program, width * 4, BLOCK=HIST_BLOCK),
            per_program.sum(0, dtype=torch.int64)),
        "bits_kernel": lambda: _bits_kernel[(blocks,)](flat, lengths, block_bits, adler, n, BLOCK=256, K=4),
        "zero_out": lambda: out.zero_(),
        "write_kernel": lambda: _write_kernel[(blocks,)](flat, lengths, codes, torch.cumsum(block_bits, 0), out, n,
                                                          BLOCK=256, K=4),
        "copy_out_pageable_48MB": lambda: out[: n // 8].cpu(),
        "copy_out_pinned_48MB": lambda: pinned.copy_(out[: n // 8], non_blocking=True),
    }
    result = {}
    for name, step in steps.items():
        step()
        times = []
        for _ in range(5):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            step()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
        result[name] = round(sorted(times)[2], 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", default="4000x3000")
    parser.add_argument("--photo", default=None)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from PIL import Image
    width, height = (int(v) for v in args.size.split("x"))
    if args.photo == "bench":  # the service benchmark's own 12 MP photo, as the ingress decodes it
        from harness.photos import sample_photo_jpegs
        jpeg = sample_photo_jpegs(1, size_range=((width, height), (width, height)))[0]
        rgb = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    elif args.photo:
        rgb = np.asarray(Image.open(args.photo).convert("RGB").resize((width, height), Image.BILINEAR))
    else:
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[0:height, 0:width]
        rgb = np.stack([(xx * 255 // width), (yy * 255 // height), ((xx + yy) % 256)], -1).astype(np.int16)
        rgb = np.clip(rgb + rng.integers(-6, 7, rgb.shape), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    alpha = np.clip(((min(width, height) * 0.45 - np.hypot(yy - height / 2, xx - width / 2)) * 4), 0, 255)
    rgba = np.dstack([rgb, alpha.astype(np.uint8)])
    rgba[rgba[..., 3] == 0] = 0  # the service's cleared transparent pixels
    rgba = np.ascontiguousarray(rgba)
    tensor = torch.from_numpy(rgba).to(args.device)
    png, info = encode_png_gpu(tensor)  # compile + check
    decoded = np.asarray(Image.open(io.BytesIO(png)))
    assert decoded.shape == rgba.shape and np.array_equal(decoded, rgba), "pixels differ"
    cuda = args.device.startswith("cuda")
    sweep = {}
    for block, k in ((128, 4), (256, 4), (512, 4), (1024, 4), (256, 2)) if cuda else ():
        encode_png_gpu(tensor, block, k)
        torch.cuda.synchronize()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(5):
            encode_png_gpu(tensor, block, k)
        b.record()
        torch.cuda.synchronize()
        sweep[f"{block}x{k}"] = round(a.elapsed_time(b) / 5, 3)
    times, walls = [], []
    for _ in range(args.repeat):
        if cuda:
            torch.cuda.synchronize()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
        t0 = time.perf_counter()
        png, info = encode_png_gpu(tensor)
        walls.append((time.perf_counter() - t0) * 1000)
        if cuda:
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
    from isal import isal_zlib  # the service's CPU encoder's deflate, for the size
    rows = rgba.reshape(height, -1)
    filt = np.empty((height, rows.shape[1] + 1), np.uint8)
    filt[:, 0] = 2
    filt[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filt[1:, 1:])
    t0 = time.process_time()
    isal_size = len(isal_zlib.compress(filt, 1))
    isal_ms = (time.process_time() - t0) * 1000
    result = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
              "triton": triton.__version__, "size": args.size, "photo": args.photo, "png_bytes": len(png),
              "isal_level1_deflate_bytes": isal_size, "isal_level1_cpu_ms": round(isal_ms, 1),
              "gpu_ms_median": sorted(times)[len(times) // 2] if times else None,
              "gpu_ms_min": min(times) if times else None, "wall_ms_median": sorted(walls)[len(walls) // 2],
              "pixels_equal": True, "block_sweep_ms": sweep, "stages_ms": stages(tensor) if cuda else None, **info}
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
