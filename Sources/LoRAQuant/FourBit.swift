// FourBit: bitsandbytes' blockwise 4-bit codec (NF4 and FP4) with double quantization, bit-exact with
// bitsandbytes 0.50 on CPU (docs/formats.md §1; bitsandbytes/backends/default/ops.py quantize_4bit and
// csrc/common.cpp quantize_block for the nested 8-bit step).
import Dispatch

public enum QuantType: String, Sendable, CaseIterable {
    case nf4, fp4

    /// The 16-entry code table in nibble order.
    public var code: [Float] { self == .nf4 ? FourBit.nf4Code : FourBit.fp4Code }
}

public enum FourBit {
    public static let allowedBlockSizes = [32, 64, 128, 256, 512, 1024, 2048, 4096]
    public static let nestedBlockSize = 256

    public static let nf4Code: [Float] = [
        0xbf80_0000, 0xbf32_39b1, 0xbf06_6b30, 0xbeca_32a0, 0xbe91_a24d, 0xbe3d_353f, 0xbdba_7871, 0x0000_0000,
        0x3da2_faff, 0x3e24_cae3, 0x3e7c_04dd, 0x3ead_033a, 0x3ee1_a4b8, 0x3f10_07ab, 0x3f39_13b3, 0x3f80_0000,
    ].map { Float(bitPattern: $0) }

    /// bitsandbytes' FP4 table; entry 8 is +0.0 (the Python source writes an integer -0).
    public static let fp4Code: [Float] = [0, 0.0625, 8, 12, 4, 6, 2, 3, 0, -0.0625, -8, -12, -4, -6, -2, -3].map { Float($0) / 12 }

    /// Sorted code values' nibbles (a stable argsort, as torch's CPU sort) and the float32 midpoints between them.
    static func bounds(_ t: QuantType) -> (order: [UInt8], mids: [Float]) {
        let code = t.code
        let order = (0..<16).sorted { a, b in code[a] < code[b] || (code[a] == code[b] && a < b) }
        let mids = (0..<15).map { (code[order[$0]] + code[order[$0 + 1]]) / 2 }
        return (order.map { UInt8($0) }, mids)
    }

    static let nf4Bounds = bounds(.nf4)
    static let fp4Bounds = bounds(.fp4)

    /// The result of `quantize_4bit`: packed nibbles and one float32 absmax per block.
    public struct Blockwise: Sendable {
        public var packed: [UInt8]
        public var absmax: [Float]
    }

    /// The double-quantized statistics (`compress_statistics=True`).
    public struct Nested: Sendable, Equatable {
        public var absmax: [UInt8]          // 8-bit indices into `quantMap`, one per 4-bit block
        public var nestedAbsmax: [Float]    // one per 256 blocks
        public var quantMap: [Float]        // the 256-entry dynamic map
        public var offset: Float            // mean of the original absmax

        /// Reconstructs the float32 absmax of block `i`, as bitsandbytes' dequantize_blockwise + offset does.
        @inline(__always)
        public func absmax(_ i: Int) -> Float {
            quantMap[Int(absmax[i])] * nestedAbsmax[i / FourBit.nestedBlockSize] + offset
        }
    }

    public static func blockCount(_ n: Int, _ blocksize: Int) -> Int { (n + blocksize - 1) / blocksize }

    /// The per-block scales `quantize` stores (full blocks: max |x|; the trailing partial block: max |x|
    /// clamped to 1e-38), without quantizing: enough to know the double-quant offset before writing.
    public static func blockAbsmax(_ x: UnsafePointer<Float>, count n: Int, blocksize: Int) -> [Float] {
        let blocks = blockCount(n, blocksize)
        return (0..<blocks).map { b in
            let start = b * blocksize, len = min(blocksize, n - start)
            var m: Float = 0
            for i in 0..<len { m = max(m, abs(x[start + i])) }
            return len == blocksize ? m : max(m, 1e-38)
        }
    }

    /// Quantizes `n` float32 values (the flattened row-major tensor) in blocks of `blocksize`.
    public static func quantize(_ x: UnsafePointer<Float>, count n: Int, blocksize: Int, type: QuantType) -> Blockwise {
        precondition(allowedBlockSizes.contains(blocksize))
        let blocks = blockCount(n, blocksize)
        var packed = [UInt8](repeating: 0, count: (n + 1) / 2)
        var absmax = [Float](repeating: 0, count: blocks)
        let (order, mids) = type == .nf4 ? nf4Bounds : fp4Bounds
        let full = n / blocksize
        packed.withUnsafeMutableBufferPointer { pk in
            absmax.withUnsafeMutableBufferPointer { am in
                order.withUnsafeBufferPointer { ord in
                    mids.withUnsafeBufferPointer { md in
                        let pkp = pk.baseAddress!, amp = am.baseAddress!, ordp = ord.baseAddress!, mdp = md.baseAddress!
                        // Blocks are independent (blocksize is even, so no byte straddles two blocks).
                        let chunks = max(1, min(blocks, 64))
                        DispatchQueue.concurrentPerform(iterations: chunks) { c in
                            let b0 = c * blocks / chunks, b1 = (c + 1) * blocks / chunks
                            for b in b0..<b1 {
                                let start = b * blocksize
                                let len = min(blocksize, n - start)
                                var m: Float = 0
                                for i in 0..<len { m = max(m, abs(x[start + i])) }
                                let isFull = b < full
                                // Full blocks multiply by the reciprocal of the clamped absmax and store the
                                // unclamped absmax; the trailing partial block divides and stores the clamped one.
                                let clamped = max(m, 1e-38 as Float)
                                let recip: Float = 1 / clamped
                                amp[b] = isFull ? m : clamped
                                var i = 0
                                while i < len {
                                    let v0 = x[start + i]
                                    let s0 = isFull ? v0 * recip : v0 / clamped
                                    let q0 = code(min(max(s0, -1), 1), mdp, ordp)
                                    var q1: UInt8
                                    if i + 1 < len {
                                        let v1 = x[start + i + 1]
                                        let s1 = isFull ? v1 * recip : v1 / clamped
                                        q1 = code(min(max(s1, -1), 1), mdp, ordp)
                                    } else {
                                        q1 = code(0, mdp, ordp)  // odd length: one zero-valued pad
                                    }
                                    pkp[(start + i) >> 1] = q0 << 4 | q1
                                    i += 2
                                }
                            }
                        }
                    }
                }
            }
        }
        return Blockwise(packed: packed, absmax: absmax)
    }

    /// torch.bucketize(v, mids, right=False): the number of midpoints strictly below v, mapped to its nibble.
    @inline(__always)
    static func code(_ v: Float, _ mids: UnsafePointer<Float>, _ order: UnsafePointer<UInt8>) -> UInt8 {
        var lo = 0, hi = 15
        while lo < hi {
            let mid = (lo + hi) >> 1
            if mids[mid] < v { lo = mid + 1 } else { hi = mid }
        }
        return order[lo]
    }

    /// Double quantization of the block scales: offset = mean(absmax) (torch float32 mean), then
    /// quantize_blockwise(absmax − offset, blocksize 256) on CPU: per 256-block absmax2 = max |·| (float32),
    /// s = x · (1/absmax2), index through the kernel's 65536-entry lookup table (DynamicMap.cpuIndex).
    public static func doubleQuantize(_ absmax: [Float]) -> Nested {
        let offset = TorchSum.mean(absmax)
        let centered = absmax.map { $0 - offset }
        let n = centered.count
        let nb = blockCount(n, nestedBlockSize)
        var idx = [UInt8](repeating: 0, count: n)
        var nested = [Float](repeating: 0, count: nb)
        for b in 0..<nb {
            let s = b * nestedBlockSize, e = min(n, s + nestedBlockSize)
            var m: Float = 0
            for i in s..<e where abs(centered[i]) > m { m = abs(centered[i]) }  // NaN elements are skipped
            nested[b] = m
            if m == 0 { continue }  // the kernel writes index 0 for a block whose max is 0
            let inv: Float = 1 / m
            for i in s..<e { idx[i] = DynamicMap.cpuIndex(centered[i] * inv) }
        }
        return Nested(absmax: idx, nestedAbsmax: nested, quantMap: DynamicMap.signed, offset: offset)
    }

    /// Dequantizes elements [start, start + count) into `dst` (fp32), using per-block scales from `scale`.
    /// The range may start and end anywhere; the training engine streams layers through this.
    public static func dequantize(packed: UnsafePointer<UInt8>, blocksize: Int, type: QuantType,
                                  scale: (Int) -> Float, start: Int, count: Int, into dst: UnsafeMutablePointer<Float>) {
        let code = type.code
        code.withUnsafeBufferPointer { cb in
            let c = cb.baseAddress!
            var i = 0
            while i < count {
                let e = start + i
                let b = e / blocksize
                let s = scale(b)
                let blockEnd = min((b + 1) * blocksize, start + count)
                var j = e
                while j < blockEnd {
                    let byte = packed[j >> 1]
                    let nib = (j & 1) == 0 ? byte >> 4 : byte & 0x0F
                    dst[j - start] = c[Int(nib)] * s
                    j += 1
                }
                i = blockEnd - start
            }
        }
    }
}
