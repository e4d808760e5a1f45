// LinearWeight: one frozen Linear weight [out, in] in its stored form (F32/F16/BF16 mmapped, or bitsandbytes
// 4-bit), expanded to fp32 into a caller's scratch buffer right before its GEMMs (architecture.md: weights stay
// in their stored form; dequantization is O(weights) per step, amortized over batch × sequence).

public struct LinearWeight: @unchecked Sendable {
    public enum Storage {
        case dense(TensorView)
        case fourBit(BnbWeight)
    }
    public let name: String
    public let outFeatures: Int
    public let inFeatures: Int
    public let storage: Storage
    public let bias: [Float]?

    public var numel: Int { outFeatures * inFeatures }

    public init(name: String, store: WeightStore, out: Int, in inF: Int, hasBias: Bool) throws {
        self.name = name
        outFeatures = out
        inFeatures = inF
        let w = name + ".weight"
        if BnbWeight.stateTensorName(w, in: store) != nil {
            let q = try BnbWeight(name: w, store: store)
            guard q.shape == [out, inF] else { throw ModelError.shapeMismatch(dir: store.directory, tensor: w, found: q.shape, expected: [out, inF]) }
            storage = .fourBit(q)
        } else {
            let t = try store.tensor(w)
            guard t.shape == [out, inF] else { throw ModelError.shapeMismatch(dir: store.directory, tensor: w, found: t.shape, expected: [out, inF]) }
            guard t.dtype.isFloatingPoint else {
                throw QuantError.unsupported(tensor: w, reason: "dtype \(t.dtype.rawValue) is not a float type or a bitsandbytes 4-bit layout")
            }
            storage = .dense(t)
        }
        if hasBias {
            let b = try store.tensor(name + ".bias")
            guard b.shape == [out], b.dtype.isFloatingPoint else {
                throw ModelError.shapeMismatch(dir: store.directory, tensor: name + ".bias", found: b.shape, expected: [out])
            }
            bias = b.floats()
        } else {
            bias = nil
        }
    }

    /// Writes the weight as fp32 [out, in] row-major into `dst` (rows split across cores).
    public func expand(into dst: UnsafeMutablePointer<Float>) {
        switch storage {
        case .dense(let t):
            let n = numel
            Parallel.forRanges(n, grain: 1 << 16) { r in
                convertToFloat(t.dtype, t.data.baseAddress! + r.lowerBound * t.dtype.size, dst + r.lowerBound, count: r.count)
            }
        case .fourBit(let q):
            let bs = q.state.blocksize
            let blocks = FourBit.blockCount(numel, bs)
            let n = numel
            q.absmax.withUnsafeBufferPointer { am in
                q.quantMap.withUnsafeBufferPointer { cm in
                    let amp = am.baseAddress!, code = cm.baseAddress!
                    let packed = q.packed.data.bindMemory(to: UInt8.self).baseAddress!
                    Parallel.forRanges(blocks, grain: 256) { r in
                        for b in r {
                            let s = amp[b]
                            let start = b * bs, end = min(n, start + bs)
                            var j = start
                            // Blocks start on even elements, so each byte holds two values of the same block.
                            while j + 1 < end {
                                let byte = packed[j >> 1]
                                dst[j] = code[Int(byte >> 4)] * s
                                dst[j + 1] = code[Int(byte & 0x0F)] * s
                                j += 2
                            }
                            if j < end { dst[j] = code[Int(packed[j >> 1] >> 4)] * s }
                        }
                    }
                }
            }
        }
    }
}
