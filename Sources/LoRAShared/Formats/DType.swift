// DType: the safetensors element types (formats.md §4) with their byte sizes.

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
