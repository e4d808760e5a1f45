// Half: IEEE fp16 and bfloat16 ⇄ fp32 conversions, rounding to nearest even exactly as torch's
// `.to(torch.bfloat16)` / `.to(torch.float16)` do (NaN becomes the canonical quiet NaN).

@inline(__always)
public func bf16ToFloat(_ bits: UInt16) -> Float {
    Float(bitPattern: UInt32(bits) << 16)
}

@inline(__always)
public func floatToBF16(_ f: Float) -> UInt16 {
    let u = f.bitPattern
    if f.isNaN { return UInt16(truncatingIfNeeded: (u >> 16) | 0x0040) }  // keep sign and payload, force quiet
    // c10::round_to_nearest_even: add 0x7FFF plus the lowest kept bit, then truncate.
    let bias = ((u >> 16) & 1) &+ 0x7FFF
    return UInt16(truncatingIfNeeded: (u &+ bias) >> 16)
}

@inline(__always)
public func f16ToFloat(_ bits: UInt16) -> Float {
    Float(Float16(bitPattern: bits))
}

@inline(__always)
public func floatToF16(_ f: Float) -> UInt16 {
    Float16(f).bitPattern
}
