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

/// Converts `count` stored values of a floating dtype to fp32.
public func convertToFloat(_ dtype: DType, _ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, count: Int) {
    switch dtype {
    case .F32:
        dst.update(from: src.assumingMemoryBound(to: Float.self), count: count)
    case .BF16:
        let s = src.assumingMemoryBound(to: UInt16.self)
        for i in 0..<count { dst[i] = bf16ToFloat(s[i]) }
    case .F16:
        let s = src.assumingMemoryBound(to: UInt16.self)
        for i in 0..<count { dst[i] = f16ToFloat(s[i]) }
    case .F64:
        let s = src.assumingMemoryBound(to: Double.self)
        for i in 0..<count { dst[i] = Float(s[i]) }
    default:
        preconditionFailure("convertToFloat: \(dtype) is not a floating dtype")
    }
}

/// Converts fp32 values to a floating dtype's stored form.
public func convertFromFloat(_ dtype: DType, _ src: UnsafePointer<Float>, _ dst: UnsafeMutableRawPointer, count: Int) {
    switch dtype {
    case .F32:
        dst.assumingMemoryBound(to: Float.self).update(from: src, count: count)
    case .BF16:
        let d = dst.assumingMemoryBound(to: UInt16.self)
        for i in 0..<count { d[i] = floatToBF16(src[i]) }
    case .F16:
        let d = dst.assumingMemoryBound(to: UInt16.self)
        for i in 0..<count { d[i] = floatToF16(src[i]) }
    case .F64:
        let d = dst.assumingMemoryBound(to: Double.self)
        for i in 0..<count { d[i] = Double(src[i]) }
    default:
        preconditionFailure("convertFromFloat: \(dtype) is not a floating dtype")
    }
}
