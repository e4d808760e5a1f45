// DType: the safetensors element types (docs/formats.md §4) with their byte sizes.

public enum DType: String, Sendable, CaseIterable {
    case BOOL, U8, I8, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64
    case F8_E4M3, F8_E5M2

    public var size: Int {
        switch self {
        case .BOOL, .U8, .I8, .F8_E4M3, .F8_E5M2: return 1
        case .I16, .U16, .F16, .BF16: return 2
        case .I32, .U32, .F32: return 4
        case .F64, .I64, .U64: return 8
        }
    }

    public var isFloatingPoint: Bool { self == .F16 || self == .BF16 || self == .F32 || self == .F64 }

    /// The name torch and transformers use in config.json (`torch_dtype`, quant_state `dtype`).
    public var torchName: String? {
        switch self {
        case .F32: return "float32"
        case .F16: return "float16"
        case .BF16: return "bfloat16"
        case .F64: return "float64"
        default: return nil
        }
    }

    public init?(torchName: String) {
        switch torchName.replacingPrefix("torch.") {
        case "float32", "float": self = .F32
        case "float16", "half": self = .F16
        case "bfloat16": self = .BF16
        case "float64", "double": self = .F64
        default: return nil
        }
    }
}

extension String {
    func replacingPrefix(_ p: String) -> String { hasPrefix(p) ? String(dropFirst(p.count)) : self }
}

/// Number of elements of a shape, nil on overflow.
public func checkedNumel(_ shape: [Int]) -> Int? {
    var n = 1
    for d in shape {
        guard d >= 0 else { return nil }
        let (r, o) = n.multipliedReportingOverflow(by: d)
        if o { return nil }
        n = r
    }
    return n
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
