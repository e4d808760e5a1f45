// LinearWeight: one frozen Linear weight [out, in] in its stored form (F32/F16/BF16 mmapped, or bitsandbytes
// 4-bit), expanded to fp32 into a caller's scratch buffer right before its GEMMs (docs/architecture.md: weights stay
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
    /// A window of the stored [out, in] tensor (`window(rows:cols:)`): its first stored row and column and the
    /// stored row length. 0, 0 and inFeatures for a whole weight.
    public private(set) var rowBase = 0, colBase = 0, storedIn: Int

    public var numel: Int { outFeatures * inFeatures }
    /// Whether this is a window of a larger stored weight (rows or columns cut).
    public var isWindow: Bool { rowBase != 0 || colBase != 0 || storedIn != inFeatures }
    /// Index into the stored tensor's elements of (row, col) of this weight.
    @inline(__always) public func storedIndex(_ row: Int, _ col: Int = 0) -> Int { (rowBase + row) * storedIn + colBase + col }

    /// Rows `rows` and columns `cols` of this weight as a weight of their own (same name, the bias sliced to the
    /// rows, or dropped with `keepBias` false): the blocks of an MLP split along its intermediate dimension.
    /// Column cuts start on an even column, so a 4-bit row window starts on a whole byte.
    public func window(rows: Range<Int>, cols: Range<Int>, keepBias: Bool = true) -> LinearWeight {
        precondition(rows.lowerBound >= 0 && rows.upperBound <= outFeatures && cols.lowerBound >= 0 && cols.upperBound <= inFeatures
                     && cols.lowerBound % 2 == 0)
        return LinearWeight(name: name, out: rows.count, in: cols.count, storage: storage,
                            bias: keepBias ? bias.map { Array($0[rows]) } : nil,
                            rowBase: rowBase + rows.lowerBound, colBase: colBase + cols.lowerBound, storedIn: storedIn)
    }

    private init(name: String, out: Int, in inF: Int, storage: Storage, bias: [Float]?, rowBase: Int, colBase: Int, storedIn: Int) {
        self.name = name
        outFeatures = out
        inFeatures = inF
        self.storage = storage
        self.bias = bias
        self.rowBase = rowBase
        self.colBase = colBase
        self.storedIn = storedIn
    }

    public init(name: String, store: WeightStore, out: Int, in inF: Int, hasBias: Bool) throws {
        self.name = name
        outFeatures = out
        inFeatures = inF
        storedIn = inF
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

    /// Whether the stored values are bf16 already (no rounding needed for bf16 compute).
    public var isStoredBF16: Bool {
        if case .dense(let t) = storage { return t.dtype == .BF16 }
        return false
    }

    /// Writes the weight as fp32 [out, in] row-major into `dst` (rows split across cores); with `roundToBF16`,
    /// each value rounded to bf16 (round to nearest even) as the bf16 compute dtype takes it.
    public func expand(into dst: UnsafeMutablePointer<Float>, roundToBF16: Bool = false) {
        let round = roundToBF16 && !isStoredBF16
        if isWindow {
            expandRows(0..<outFeatures, into: dst, roundToBF16: roundToBF16)
            return
        }
        switch storage {
        case .dense(let t):
            let n = numel
            Parallel.forRanges(n, grain: 1 << 16) { r in
                convertToFloat(t.dtype, t.data.baseAddress! + r.lowerBound * t.dtype.size, dst + r.lowerBound, count: r.count)
                if round { Kernels.roundToBF16InPlace(dst + r.lowerBound, count: r.count) }
            }
        case .fourBit(let q):
            let bs = q.state.blocksize
            let blocks = FourBit.blockCount(numel, bs)
            let n = numel
            q.quantMap.withUnsafeBufferPointer { cm in
                let code = cm.baseAddress!
                let packed = q.packed.data.bindMemory(to: UInt8.self).baseAddress!
                Parallel.forRanges(blocks, grain: 256) { r in
                    let e0 = r.lowerBound * bs
                    q.withScales(elements: e0, count: min(n, r.upperBound * bs) - e0) { amp, first in
                        for b in r {
                            let s = amp[b - first]
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
                            if round { Kernels.roundToBF16InPlace(dst + start, count: end - start) }
                        }
                    }
                }
            }
        }
    }
}

extension LinearWeight {
    /// Rows at or below this count multiply straight from the stored form (no fp32 copy of the weight):
    /// token-by-token decoding, where expanding the whole weight would cost more than the product itself.
    public static let directRows = 4

    /// The two values of every packed byte (high nibble first) for a 4-bit weight's code book.
    package func nibblePairs() -> [SIMD2<Float>] {
        guard case .fourBit(let q) = storage else { return [] }
        return (0..<256).map { SIMD2(q.quantMap[$0 >> 4], q.quantMap[$0 & 0x0F]) }
    }

    /// Writes stored row `row` of the weight as fp32 into `dst` (inFeatures values). `pairs` is nibblePairs()
    /// for a 4-bit weight.
    @inline(__always)
    package func expandRow(_ row: Int, into dst: UnsafeMutablePointer<Float>, pairs: UnsafePointer<SIMD2<Float>>?) {
        let inF = inFeatures
        switch storage {
        case .dense(let t):
            convertToFloat(t.dtype, t.data.baseAddress! + storedIndex(row) * t.dtype.size, dst, count: inF)
        case .fourBit(let q):
            let bs = q.state.blocksize
            let packed = q.packed.data.bindMemory(to: UInt8.self).baseAddress!
            let start = storedIndex(row), end = start + inF
            q.withScales(elements: start, count: inF) { am, first in
                var j = start
                while j < end {
                    let b = j / bs
                    let s = am[b - first]
                    let segEnd = min(end, (b + 1) * bs)
                    // Pairs of values from whole bytes (blocks start on even elements), then a lone nibble.
                    if let pr = pairs, j & 1 == 0 {
                        let out = UnsafeMutableRawPointer(dst + (j - start))
                        var k = 0
                        let bytes = (segEnd - j) >> 1
                        let src = packed + (j >> 1)
                        while k < bytes {
                            out.storeBytes(of: pr[Int(src[k])] * s, toByteOffset: 8 * k, as: SIMD2<Float>.self)
                            k += 1
                        }
                        j += 2 * bytes
                    }
                    while j < segEnd {
                        let byte = packed[j >> 1]
                        dst[j - start] = q.quantMap[Int((j & 1) == 0 ? byte >> 4 : byte & 0x0F)] * s
                        j += 1
                    }
                }
            }
        }
    }

    /// Writes stored rows `rows` of the weight as fp32 [rows.count, in] into `dst` (rows split across cores),
    /// each value rounded to bf16 with `roundToBF16`: a block of a weight too large to expand whole (the head).
    public func expandRows(_ rows: Range<Int>, into dst: UnsafeMutablePointer<Float>, roundToBF16: Bool = false) {
        let inF = inFeatures
        let round = roundToBF16 && !isStoredBF16
        let pairs = nibblePairs()
        pairs.withUnsafeBufferPointer { pb in
            let pp = pb.isEmpty ? nil : pb.baseAddress
            Parallel.forRanges(rows.count, grain: max(1, (1 << 15) / max(1, inF))) { r in
                for i in r {
                    expandRow(rows.lowerBound + i, into: dst + i * inF, pairs: pp)
                    if round { Kernels.roundToBF16InPlace(dst + i * inF, count: inF) }
                }
            }
        }
    }

    /// Writes stored rows `rows` of the weight as bf16 [rows.count, in] into `dst` (rows split across cores): each
    /// value decoded to fp32 (NF4: code × absmax, as bitsandbytes) and rounded to nearest even, one row at a time
    /// through a per-thread row buffer, so the fp32 values never leave the cache.
    public func expandRowsBF16(_ rows: Range<Int>, into dst: UnsafeMutablePointer<UInt16>) {
        let inF = inFeatures
        if case .dense(let t) = storage, t.dtype == .BF16 {
            let src = t.data.baseAddress!.assumingMemoryBound(to: UInt16.self)
            Parallel.forRanges(rows.count, grain: max(1, (1 << 16) / max(1, inF))) { r in
                if isWindow {
                    for i in r { (dst + i * inF).update(from: src + storedIndex(rows.lowerBound + i), count: inF) }
                } else {
                    (dst + r.lowerBound * inF).update(from: src + (rows.lowerBound + r.lowerBound) * inF, count: r.count * inF)
                }
            }
            return
        }
        if case .fourBit(let q) = storage, q.quantMap.count == 16 {
            let packed = q.packed.data.bindMemory(to: UInt8.self).baseAddress!, bs = q.state.blocksize
            q.quantMap.withUnsafeBufferPointer { cm in
                let code = cm.baseAddress!
                Parallel.forRanges(rows.count, grain: max(1, (1 << 15) / max(1, inF))) { r in
                    for i in r {
                        let start = storedIndex(rows.lowerBound + i)
                        // The row's blocks from the first that holds it: packed and start shifted by whole blocks
                        // (block sizes are even, so by whole bytes).
                        q.withScales(elements: start, count: inF) { amp, first in
                            let e0 = first * bs
                            OneDNN.decode4Bit(packed: packed + e0 / 2, absmax: amp, blocksize: bs, code: code,
                                              start: start - e0, count: inF, into: dst + i * inF)
                        }
                    }
                }
            }
            return
        }
        let pairs = nibblePairs()
        pairs.withUnsafeBufferPointer { pb in
            let pp = pb.isEmpty ? nil : pb.baseAddress
            Parallel.forRanges(rows.count, grain: max(1, (1 << 15) / max(1, inF))) { r in
                let row = UnsafeMutablePointer<Float>.allocate(capacity: inF)
                defer { row.deallocate() }
                for i in r {
                    expandRow(rows.lowerBound + i, into: row, pairs: pp)
                    OneDNN.convertSerial(row, into: dst + i * inF, count: inF)
                }
            }
        }
    }

    /// y[i, :] (+)= x[i, :]·Wᵀ for a few rows i < rows (≤ directRows), converting one weight row at a time
    /// (rounded to bf16 with `bf16`); output rows are split across cores.
    package func multiplyDirect(x: UnsafePointer<Float>, ldx: Int, rows: Int, y: UnsafeMutablePointer<Float>, ldy: Int, accumulate: Bool,
                        bf16: Bool = false) {
        let inF = inFeatures
        let round = bf16 && !isStoredBF16
        if case .dense(let t) = storage, t.dtype == .BF16 || (t.dtype == .F32 && !round) {
            // Straight from the mapped weights: no row copy.
            let base = t.data.baseAddress!
            let bf16 = t.dtype == .BF16
            Parallel.forRanges(outFeatures, grain: 32) { r in
                for o in r {
                    for i in 0..<rows {
                        let d = bf16
                            ? Kernels.dotBF16(base.assumingMemoryBound(to: UInt16.self) + storedIndex(o), x + i * ldx, count: inF)
                            : Kernels.dot(base.assumingMemoryBound(to: Float.self) + storedIndex(o), x + i * ldx, count: inF)
                        if accumulate { y[i * ldy + o] += d } else { y[i * ldy + o] = d }
                    }
                }
            }
            return
        }
        let pairs = nibblePairs()
        pairs.withUnsafeBufferPointer { pb in
        let pp = pb.isEmpty ? nil : pb.baseAddress
        Parallel.forRanges(outFeatures, grain: 32) { r in
            let buf = UnsafeMutablePointer<Float>.allocate(capacity: inF)
            defer { buf.deallocate() }
            for o in r {
                expandRow(o, into: buf, pairs: pp)
                if round { Kernels.roundToBF16InPlace(buf, count: inF) }
                for i in 0..<rows {
                    let d = Kernels.dot(buf, x + i * ldx, count: inF)
                    if accumulate { y[i * ldy + o] += d } else { y[i * ldy + o] = d }
                }
            }
        }
        }
    }
}
