// DynamicMap and TorchSum: the two pieces of bitsandbytes' double quantization that must match torch bit for bit:
// the signed 8-bit dynamic map (create_dynamic_map(signed=True), as torch computes it in float32) and
// torch's float32 `mean` on CPU (the cascade sum of aten/src/ATen/native/cpu/SumKernel.cpp, then ÷ n).
#if canImport(Glibc)
import Glibc
#endif
import Foundation

public enum DynamicMap {
    /// `bitsandbytes.functional.create_dynamic_map(signed=True)` (7 exponent bits), sorted, as float32 bits.
    /// Taken from bitsandbytes 0.50.2 / torch 2.15 rather than recomputed: torch's float32 `linspace` rounding
    /// is the definition, and Tests check this table against the fixtures' stored `nested_quant_map`.
    public static let signedBits: [UInt32] = [
        0xbf7e3333, 0xbf7a999a, 0xbf770000, 0xbf736666, 0xbf6fcccd, 0xbf6c3333, 0xbf68999a, 0xbf650000,
        0xbf616666, 0xbf5dcccd, 0xbf5a3333, 0xbf56999a, 0xbf530000, 0xbf4f6666, 0xbf4bcccd, 0xbf483333,
        0xbf44999a, 0xbf410000, 0xbf3d6666, 0xbf39cccd, 0xbf363334, 0xbf32999a, 0xbf2f0000, 0xbf2b6666,
        0xbf27cccd, 0xbf243334, 0xbf20999a, 0xbf1d0000, 0xbf196666, 0xbf15cccd, 0xbf123334, 0xbf0e999a,
        0xbf0b0000, 0xbf076666, 0xbf03cccc, 0xbf003333, 0xbef93332, 0xbef20000, 0xbeeacccc, 0xbee3999a,
        0xbedc6666, 0xbed53333, 0xbece0000, 0xbec6cccc, 0xbebf999a, 0xbeb86666, 0xbeb13333, 0xbeaa0000,
        0xbea2cccc, 0xbe9b999a, 0xbe946666, 0xbe8d3334, 0xbe860000, 0xbe7d9999, 0xbe6f3333, 0xbe60cccd,
        0xbe526666, 0xbe440000, 0xbe35999a, 0xbe273333, 0xbe18cccd, 0xbe0a6666, 0xbdf80000, 0xbddb3334,
        0xbdc9eb85, 0xbdc428f7, 0xbdbe6667, 0xbdb8a3d7, 0xbdb2e148, 0xbdad1eb8, 0xbda75c2a, 0xbda1999a,
        0xbd9bd70a, 0xbd96147b, 0xbd9051eb, 0xbd8a8f5d, 0xbd84cccd, 0xbd7e147b, 0xbd728f5d, 0xbd670a3d,
        0xbd5b851f, 0xbd500000, 0xbd447ae1, 0xbd38f5c3, 0xbd2d70a3, 0xbd21eb85, 0xbd166667, 0xbd0ae148,
        0xbcfeb852, 0xbce7ae15, 0xbcd0a3d7, 0xbcb9999a, 0xbca28f5d, 0xbc8b851f, 0xbc68f5c3, 0xbc3ae148,
        0xbc1f3b64, 0xbc160418, 0xbc0ccccd, 0xbc039581, 0xbbf4bc6a, 0xbbe24dd3, 0xbbcfdf3b, 0xbbbd70a4,
        0xbbab020d, 0xbb989374, 0xbb8624dd, 0xbb676c8a, 0xbb428f5c, 0xbb1db22d, 0xbaf1a9fc, 0xbaa7ef9d,
        0xba7765ff, 0xba59e83e, 0xba3c6a80, 0xba1eecc1, 0xba016f01, 0xb9c7e283, 0xb98ce705, 0xb923d70b,
        0xb8ba1f4b, 0xb88aefb3, 0xb8378034, 0xb7b24206, 0xb70205ff, 0xb65a1a94, 0xb513a3b7, 0x00000000,
        0x3513a3b7, 0x365a1a94, 0x370205ff, 0x37b24206, 0x38378034, 0x388aefb3, 0x38ba1f4b, 0x3923d70b,
        0x398ce705, 0x39c7e283, 0x3a016f01, 0x3a1eecc1, 0x3a3c6a80, 0x3a59e83e, 0x3a7765ff, 0x3aa7ef9d,
        0x3af1a9fc, 0x3b1db22d, 0x3b428f5c, 0x3b676c8a, 0x3b8624dd, 0x3b989374, 0x3bab020d, 0x3bbd70a4,
        0x3bcfdf3b, 0x3be24dd3, 0x3bf4bc6a, 0x3c039581, 0x3c0ccccd, 0x3c160418, 0x3c1f3b64, 0x3c3ae148,
        0x3c68f5c3, 0x3c8b851f, 0x3ca28f5d, 0x3cb9999a, 0x3cd0a3d7, 0x3ce7ae15, 0x3cfeb852, 0x3d0ae148,
        0x3d166667, 0x3d21eb85, 0x3d2d70a3, 0x3d38f5c3, 0x3d447ae1, 0x3d500000, 0x3d5b851f, 0x3d670a3d,
        0x3d728f5d, 0x3d7e147b, 0x3d84cccd, 0x3d8a8f5d, 0x3d9051eb, 0x3d96147b, 0x3d9bd70a, 0x3da1999a,
        0x3da75c2a, 0x3dad1eb8, 0x3db2e148, 0x3db8a3d7, 0x3dbe6667, 0x3dc428f7, 0x3dc9eb85, 0x3ddb3334,
        0x3df80000, 0x3e0a6666, 0x3e18cccd, 0x3e273333, 0x3e35999a, 0x3e440000, 0x3e526666, 0x3e60cccd,
        0x3e6f3333, 0x3e7d9999, 0x3e860000, 0x3e8d3334, 0x3e946666, 0x3e9b999a, 0x3ea2cccc, 0x3eaa0000,
        0x3eb13333, 0x3eb86666, 0x3ebf999a, 0x3ec6cccc, 0x3ece0000, 0x3ed53333, 0x3edc6666, 0x3ee3999a,
        0x3eeacccc, 0x3ef20000, 0x3ef93332, 0x3f003333, 0x3f03cccc, 0x3f076666, 0x3f0b0000, 0x3f0e999a,
        0x3f123334, 0x3f15cccd, 0x3f196666, 0x3f1d0000, 0x3f20999a, 0x3f243334, 0x3f27cccd, 0x3f2b6666,
        0x3f2f0000, 0x3f32999a, 0x3f363334, 0x3f39cccd, 0x3f3d6666, 0x3f410000, 0x3f44999a, 0x3f483333,
        0x3f4bcccd, 0x3f4f6666, 0x3f530000, 0x3f56999a, 0x3f5a3333, 0x3f5dcccd, 0x3f616666, 0x3f650000,
        0x3f68999a, 0x3f6c3333, 0x3f6fcccd, 0x3f736666, 0x3f770000, 0x3f7a999a, 0x3f7e3333, 0x3f800000,    ]

    public static let signed: [Float] = signedBits.map { Float(bitPattern: $0) }

    /// The lookup table of bitsandbytes 0.50.2's native CPU `quantize_blockwise` (quantize_cpu_impl<float>,
    /// read from the shipped libbitsandbytes_cpu.so; see scripts/BNB_NOTES.md §2c): grid point i of 65536 on
    /// [-1, 1] maps to the first code whose float32 midpoint with its successor is not below it. An input s is
    /// looked up at grid index trunc(fma((s + 1) * 0.5, 65535, 0.5)), so the code is the one nearest the grid
    /// point, not always the one nearest s.
    static let cpuLUT: [UInt8] = {
        let code = signed
        let mids = (0..<255).map { 0.5 * (code[$0] + code[$0 + 1]) }
        var lut = [UInt8](repeating: 0, count: 65536)
        var c = 0
        for i in 0..<65536 {
            let val: Float = -1.0 + Float(2 * i) / 65535
            while c < 255 && mids[c] < val { c += 1 }
            lut[i] = UInt8(c)
        }
        return lut
    }()

    /// The 8-bit index the kernel assigns to a normalized value s (already divided by the block's absmax).
    @inline(__always)
    static func cpuIndex(_ s: Float) -> UInt8 {
        let c = min(max(s, -1), 1)
        let h: Float = (c + 1) * 0.5
        let t = Float(0.5).addingProduct(h, 65535).rounded(.towardZero)  // fma(h, 65535, 0.5), one rounding
        // cvttss2si: NaN or out-of-range gives INT_MIN, whose low 16 bits index entry 0.
        let i: Int32 = t.isFinite && t >= -2_147_483_648 && t < 2_147_483_648 ? Int32(t) : Int32.min
        return cpuLUT[Int(UInt16(truncatingIfNeeded: i))]
    }
}

/// torch's float32 sum over a contiguous 1-D tensor on CPU, reproduced operation for operation.
public enum TorchSum {
    /// Lanes of the float accumulator torch's sum kernel uses: 8 on every CPU capability (default, AVX2 and
    /// AVX512 were measured; see scripts/BNB_NOTES.md §2a). `LORA_TORCH_VEC_WIDTH` overrides it.
    public static let vectorWidth: Int = {
        if let s = ProcessInfo.processInfo.environment["LORA_TORCH_VEC_WIDTH"], let w = Int(s), w == 8 || w == 16 { return w }
        return 8
    }()

    /// Threads torch would use (at::get_num_threads(): the physical cores). `LORA_TORCH_THREADS` overrides.
    public static let threads: Int = {
        if let s = ProcessInfo.processInfo.environment["LORA_TORCH_THREADS"], let t = Int(s), t > 0 { return t }
        return max(1, ProcessInfo.processInfo.activeProcessorCount)
    }()

    static let grainSize = 32768

    @inline(__always)
    static func ceilLog2(_ x: Int) -> Int {
        if x <= 2 { return 1 }
        return (Int.bitWidth - (x - 1).leadingZeroBitCount - 1) + 1
    }

    /// multi_row_sum: `nrows` interleaved rows, element (i, k) at `load(i, k)`, summed with 4 cascade levels.
    /// Each "value" is a vector of `lanes` floats, added lane by lane.
    static func multiRowSum(_ size: Int, nrows: Int, lanes: Int, load: (Int, Int, Int) -> Float) -> [[Float]] {
        let numLevels = 4
        let levelPower = max(4, ceilLog2(size) / numLevels)
        let levelStep = 1 << levelPower
        let levelMask = levelStep - 1
        var acc = [[[Float]]](repeating: [[Float]](repeating: [Float](repeating: 0, count: lanes), count: nrows), count: numLevels)
        var i = 0
        while i + levelStep <= size {
            for _ in 0..<levelStep {
                for k in 0..<nrows { for l in 0..<lanes { acc[0][k][l] += load(i, k, l) } }
                i += 1
            }
            for j in 1..<numLevels {
                for k in 0..<nrows {
                    for l in 0..<lanes {
                        acc[j][k][l] += acc[j - 1][k][l]
                        acc[j - 1][k][l] = 0
                    }
                }
                let mask = levelMask << (j * levelPower)
                if (i & mask) != 0 { break }
            }
        }
        while i < size {
            for k in 0..<nrows { for l in 0..<lanes { acc[0][k][l] += load(i, k, l) } }
            i += 1
        }
        for j in 1..<numLevels {
            for k in 0..<nrows { for l in 0..<lanes { acc[0][k][l] += acc[j][k][l] } }
        }
        return acc[0]
    }

    /// row_sum with ilp_factor 4 over `size` items (each a vector of `lanes`), item t at `load(t, lane)`.
    static func rowSum(_ size: Int, lanes: Int, load: (Int, Int) -> Float) -> [Float] {
        let ilp = 4
        let sizeIlp = size / ilp
        var partial = multiRowSum(sizeIlp, nrows: ilp, lanes: lanes) { i, k, l in load(i * ilp + k, l) }
        for t in (sizeIlp * ilp)..<max(sizeIlp * ilp, size) {
            for l in 0..<lanes { partial[0][l] += load(t, l) }
        }
        for k in 1..<ilp { for l in 0..<lanes { partial[0][l] += partial[k][l] } }
        return partial[0]
    }

    /// The inner-sum loop torch runs over one contiguous range (vectorized when it has at least one vector).
    static func innerSum(_ x: UnsafeBufferPointer<Float>) -> Float {
        let n = x.count
        let w = vectorWidth
        if n < w {
            // scalar_inner_sum: row_sum on scalars.
            return rowSum(n, lanes: 1) { t, _ in x[t] }[0]
        }
        let vecSize = n / w
        let vacc = rowSum(vecSize, lanes: w) { t, l in x[t * w + l] }
        var final: Float = 0
        for k in (vecSize * w)..<n { final += x[k] }
        for l in 0..<w { final += vacc[l] }
        return final
    }

    /// torch.sum(x) for a contiguous float32 tensor on CPU.
    public static func sum(_ x: [Float]) -> Float {
        x.withUnsafeBufferPointer { buf in
            let n = buf.count
            let threads = min(self.threads, max(1, (n + grainSize - 1) / grainSize))
            if n < grainSize || self.threads == 1 {
                return Float(0) + innerSum(buf)
            }
            // two_pass_reduction: at::parallel_for splits [0, n) into `threads` equal chunks, each summed
            // into its own slot; the slots (one per at::get_num_threads()) are then summed the same way.
            let chunk = (n + threads - 1) / threads
            var slots = [Float](repeating: 0, count: self.threads)
            for t in 0..<threads {
                let b = t * chunk
                if b >= n { break }
                let e = min(n, b + chunk)
                slots[t] += innerSum(UnsafeBufferPointer(rebasing: buf[b..<e]))
            }
            return slots.withUnsafeBufferPointer { Float(0) + innerSum($0) }
        }
    }

    /// torch.mean(x) for float32 on CPU: sum, then divide by the element count in float32.
    public static func mean(_ x: [Float]) -> Float {
        sum(x) / Float(x.count)
    }
}
