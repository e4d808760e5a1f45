// ComputeBackend: which arithmetic the frozen-weight GEMMs use (`--compute-dtype auto|bf16|f32`) and how bf16
// is carried out. bf16 runs on oneDNN's matmul (bf16 operands, fp32 accumulation and results) on CPUs with
// AVX512-BF16 or AMX-BF16; `emulated` computes the same products with OpenBLAS sgemm on operands rounded to
// bf16 (exact: a product of two bf16 values fits fp32) — the same numbers up to summation order, at fp32
// speed — so the bf16 path is tested on every machine. Environment:
//   LORA_COMPUTE_FALLBACK=1  treat the CPU as lacking bf16: `auto` picks f32 and `bf16` is refused (tests the
//                            fallback on bf16 hardware);
//   LORA_BF16_EMULATE=1      allow `--compute-dtype bf16` without bf16 hardware, through the emulation.
import CBF16
import Foundation

public enum BF16Backend: String, Sendable {
    case onednn
    case emulated
}

/// The value of `--compute-dtype`.
public enum ComputeDTypeRequest: String, Sendable, CaseIterable {
    case auto, bf16, f32
}

public enum ComputeDType: String, Sendable, CaseIterable, Codable {
    case f32
    case bf16
}

public enum ComputeError: Error, CustomStringConvertible {
    case noBF16(cpu: String)
    case backendFailed(reason: String)

    public var description: String {
        switch self {
        case .noBF16(let cpu):
            return "--compute-dtype bf16 needs a CPU with AVX512-BF16 or AMX-BF16 (\(cpu)); use --compute-dtype f32, or auto, which picks f32 on this CPU"
        case .backendFailed(let r):
            return "--compute-dtype bf16: oneDNN cannot run a bf16 matmul here (\(r)); use --compute-dtype f32"
        }
    }
}

public enum CPUFeatures {
    public static let avx512BF16 = lp_cpu_has_avx512_bf16() != 0
    public static let amxBF16 = lp_cpu_has_amx_bf16() != 0

    /// Whether bf16 GEMMs run in hardware here (false under LORA_COMPUTE_FALLBACK=1).
    public static func hasBF16(_ env: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        if env["LORA_COMPUTE_FALLBACK"].map({ $0 != "" && $0 != "0" }) ?? false { return false }
        return avx512BF16 || amxBF16
    }

    /// "this CPU has neither avx512_bf16 nor amx_bf16", or why bf16 is off.
    static func bf16Summary(_ env: [String: String]) -> String {
        if (avx512BF16 || amxBF16) && !hasBF16(env) { return "LORA_COMPUTE_FALLBACK is set, so bf16 hardware is not used" }
        return "this CPU has neither avx512_bf16 nor amx_bf16"
    }
}

/// A resolved compute dtype: what `--compute-dtype` chose, and for bf16 the backend.
public struct ComputeChoice: Sendable, Equatable {
    public var dtype: ComputeDType
    public var backend: BF16Backend?

    public init(dtype: ComputeDType, backend: BF16Backend?) {
        self.dtype = dtype
        self.backend = backend
    }

    public static let f32 = ComputeChoice(dtype: .f32, backend: nil)

    /// auto → bf16 (oneDNN) where the CPU has AVX512-BF16 / AMX-BF16 and oneDNN runs a bf16 matmul, else f32;
    /// bf16 → that, or the emulation under LORA_BF16_EMULATE=1, or an error naming the missing feature.
    public static func resolve(_ request: ComputeDTypeRequest,
                               environment env: [String: String] = ProcessInfo.processInfo.environment) throws -> ComputeChoice {
        let emulate = env["LORA_BF16_EMULATE"].map { $0 != "" && $0 != "0" } ?? false
        switch request {
        case .f32:
            return .f32
        case .auto:
            guard CPUFeatures.hasBF16(env), OneDNN.probe() == nil else { return .f32 }
            return ComputeChoice(dtype: .bf16, backend: .onednn)
        case .bf16:
            if CPUFeatures.hasBF16(env) {
                if let why = OneDNN.probe() {
                    if emulate { return ComputeChoice(dtype: .bf16, backend: .emulated) }
                    throw ComputeError.backendFailed(reason: why)
                }
                return ComputeChoice(dtype: .bf16, backend: .onednn)
            }
            if emulate { return ComputeChoice(dtype: .bf16, backend: .emulated) }
            throw ComputeError.noBF16(cpu: CPUFeatures.bf16Summary(env))
        }
    }

    /// "f32", "bf16" (oneDNN) or "bf16-emulated", as the JSON outputs record it.
    public var label: String {
        switch (dtype, backend) {
        case (.bf16, .emulated?): return "bf16-emulated"
        default: return dtype.rawValue
        }
    }
}

/// oneDNN's bf16 matmul (Sources/CBF16), row-major, C fp32.
public enum OneDNN {
    nonisolated(unsafe) private static var probed: String?? = nil

    /// nil when a small bf16 matmul runs and is exact, else why not (cached).
    public static func probe() -> String? {
        if let p = probed { return p }
        var a: [UInt16] = [floatToBF16(1.5), floatToBF16(-2)], b: [UInt16] = [floatToBF16(4), floatToBF16(0.25)]
        var c: [Float] = [0]
        let st = lp_bf16_gemm(1, 1, 1, 2, 1, &a, 2, &b, 2, 0, &c, 1)
        let r: String? = st != 0 ? String(cString: lp_bf16_last_error()) : (c[0] == 5.5 ? nil : "wrong result \(c[0])")
        probed = .some(r)
        return r
    }

    /// C = A·op(B) (+ C with `accumulate`); A m×k (row stride lda), B n×k (`transB`, row stride ldb) or k×n.
    /// Returns false when oneDNN failed (the caller computes the same product another way).
    @discardableResult
    public static func gemm(transB: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<UInt16>, lda: Int,
                            b: UnsafePointer<UInt16>, ldb: Int, accumulate: Bool, c: UnsafeMutablePointer<Float>, ldc: Int) -> Bool {
        lp_bf16_gemm(transB ? 1 : 0, Int64(m), Int64(n), Int64(k), 1, a, Int64(lda), b, Int64(ldb), accumulate ? 1 : 0,
                     c, Int64(ldc)) == 0
    }

    /// The implementation oneDNN picked for its latest primitive (e.g. "brg:avx512_core_bf16").
    public static var lastImplementation: String { String(cString: lp_bf16_last_impl()) }

    public static func setThreads(_ n: Int) { lp_bf16_set_threads(Int32(n)) }

    nonisolated(unsafe) private static var warned = false

    /// Once per process: a oneDNN call failed and the product was computed by the emulation instead.
    package static func warnFallback() {
        if warned { return }
        warned = true
        FileHandle.standardError.write(Data("warning: oneDNN bf16 matmul failed (\(String(cString: lp_bf16_last_error()))); computing bf16 products by emulation\n".utf8))
    }

    /// dst[0..<count] = bf16(src[0..<count]), round to nearest even, on the calling thread.
    @inline(__always)
    public static func convertSerial(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<UInt16>, count: Int) {
        lp_f32_to_bf16_2d(src, count, dst, count, 1, count)
    }

    /// dst[i] = bf16(code[nibble(start + i)] · absmax[(start + i) / blocksize]) for i < count (bitsandbytes' 4-bit
    /// dequantization, rounded to nearest even), on the calling thread; AVX-512 where the CPU has it.
    @inline(__always)
    public static func decode4Bit(packed: UnsafePointer<UInt8>, absmax: UnsafePointer<Float>, blocksize: Int, code: UnsafePointer<Float>,
                                  start: Int, count: Int, into dst: UnsafeMutablePointer<UInt16>) {
        lp_4bit_to_bf16(packed, absmax, Int64(blocksize), code, Int64(start), Int64(count), dst)
    }

    /// buf's rows × cols floats (row stride ld) as bf16 values at the same address, row stride ld halves (round to
    /// nearest even): a logit chunk's gradient becomes its own bf16 operand without a second buffer. One thread
    /// (each row's values land on bytes of rows already converted).
    public static func convertInPlace(_ buf: UnsafeMutablePointer<Float>, ld: Int, rows: Int, cols: Int) -> UnsafePointer<UInt16> {
        lp_f32_to_bf16_rows_inplace(buf, ld, rows, cols)
        return UnsafePointer(UnsafeMutableRawPointer(buf).assumingMemoryBound(to: UInt16.self))
    }

    /// The inverse of convertInPlace: the bf16 values widened back to floats (exactly) where they were.
    public static func widenInPlace(_ buf: UnsafeMutablePointer<Float>, ld: Int, rows: Int, cols: Int) {
        lp_bf16_to_f32_rows_inplace(buf, ld, rows, cols)
    }

    /// dst = bf16(src), round to nearest even, rows × cols with row strides.
    public static func convert(_ src: UnsafePointer<Float>, ld: Int, rows: Int, cols: Int, into dst: UnsafeMutablePointer<UInt16>, ldd: Int) {
        Parallel.forRanges(rows, grain: max(1, 16384 / max(1, cols))) { r in
            lp_f32_to_bf16_2d(src + r.lowerBound * ld, ld, dst + r.lowerBound * ldd, ldd, r.count, cols)
        }
    }
}
