// BnbLayout: a bitsandbytes 4-bit Linear weight inside a transformers safetensors checkpoint (docs/formats.md §2):
// `.weight` packed U8 [(n+1)/2, 1], `.weight.absmax`, `.weight.quant_map`, nested stats, and the
// `.weight.quant_state.bitsandbytes__<type>` UTF-8 JSON (Python json.dumps layout, keys in bitsandbytes' order).

public enum QuantError: Error, CustomStringConvertible {
    case inconsistent(tensor: String, reason: String)
    case badQuantState(tensor: String, reason: String)
    case unsupported(tensor: String, reason: String)

    public var description: String {
        switch self {
        case .inconsistent(let t, let r): return "\(t): inconsistent 4-bit quantization state: \(r); the checkpoint is corrupt or was edited"
        case .badQuantState(let t, let r): return "\(t): invalid quant_state JSON: \(r)"
        case .unsupported(let t, let r): return "\(t): \(r)"
        }
    }
}

/// The JSON part of a bnb 4-bit quant state.
public struct BnbQuantState: Equatable, Sendable {
    public var quantType: QuantType
    public var blocksize: Int
    public var dtype: String           // original weight dtype: "bfloat16", "float16", "float32"
    public var shape: [Int]
    public var nestedBlocksize: Int?
    public var nestedDtype: String?
    public var nestedOffset: Double?

    public var isNested: Bool { nestedOffset != nil }
    public var numel: Int { checkedNumel(shape) ?? 0 }

    /// The exact text bitsandbytes packs: `json.dumps` of the dict in QuantState.as_dict order.
    public var json: String {
        var o = JSONObject()
        o["quant_type"] = .string(quantType.rawValue)
        o["blocksize"] = .int(Int64(blocksize))
        o["dtype"] = .string(dtype)
        o["shape"] = .array(shape.map { .int(Int64($0)) })
        if let nb = nestedBlocksize, let nd = nestedDtype, let off = nestedOffset {
            o["nested_blocksize"] = .int(Int64(nb))
            o["nested_dtype"] = .string(nd)
            o["nested_offset"] = .double(off)
        }
        return JSONValue.object(o).serialized(.python)
    }

    public init(quantType: QuantType, blocksize: Int, dtype: String, shape: [Int],
                nestedBlocksize: Int? = nil, nestedDtype: String? = nil, nestedOffset: Double? = nil) {
        self.quantType = quantType
        self.blocksize = blocksize
        self.dtype = dtype
        self.shape = shape
        self.nestedBlocksize = nestedBlocksize
        self.nestedDtype = nestedDtype
        self.nestedOffset = nestedOffset
    }

    /// Parses the packed JSON generically (any key order, unknown keys ignored).
    public init(jsonText: String, tensor: String) throws {
        let v: JSONValue
        do { v = try JSONParser().parse(jsonText) } catch {
            throw QuantError.badQuantState(tensor: tensor, reason: "\(error)")
        }
        guard let qt = v["quant_type"]?.stringValue else { throw QuantError.badQuantState(tensor: tensor, reason: "no quant_type") }
        guard let t = QuantType(rawValue: qt) else {
            throw QuantError.unsupported(tensor: tensor, reason: "quant_type '\(qt)' is not supported (nf4, fp4)")
        }
        guard let bs = v["blocksize"]?.intValue, FourBit.allowedBlockSizes.contains(Int(bs)) else {
            throw QuantError.badQuantState(tensor: tensor, reason: "blocksize must be one of \(FourBit.allowedBlockSizes)")
        }
        guard let sh = v["shape"]?.arrayValue, !sh.isEmpty else { throw QuantError.badQuantState(tensor: tensor, reason: "no shape") }
        var shape: [Int] = []
        for d in sh {
            guard let i = d.intValue, i > 0, i < Int64(Int32.max) else {
                throw QuantError.badQuantState(tensor: tensor, reason: "shape has a non-positive dimension")
            }
            shape.append(Int(i))
        }
        guard checkedNumel(shape) != nil else { throw QuantError.badQuantState(tensor: tensor, reason: "shape overflows") }
        quantType = t
        blocksize = Int(bs)
        dtype = v["dtype"]?.stringValue ?? "float32"
        self.shape = shape
        nestedOffset = v["nested_offset"]?.doubleValue
        nestedBlocksize = v["nested_blocksize"]?.intValue.map { Int($0) }
        nestedDtype = v["nested_dtype"]?.stringValue
        if nestedOffset != nil {
            guard nestedBlocksize != nil else {
                throw QuantError.badQuantState(tensor: tensor, reason: "nested_offset without nested_blocksize")
            }
        }
    }
}

/// A whole 4-bit weight in memory, ready to be written in the bnb layout.
public struct QuantizedWeight: Sendable {
    public var state: BnbQuantState
    public var packed: [UInt8]
    public var absmax: [Float]?            // when not nested
    public var nested: FourBit.Nested?     // when nested

    /// Quantizes fp32 values of a weight of `shape` whose stored dtype was `dtype`.
    public static func quantize(_ values: UnsafePointer<Float>, shape: [Int], dtype: DType, type: QuantType,
                                blocksize: Int, doubleQuant: Bool) -> QuantizedWeight {
        let n = checkedNumel(shape)!
        let q = FourBit.quantize(values, count: n, blocksize: blocksize, type: type)
        var state = BnbQuantState(quantType: type, blocksize: blocksize, dtype: dtype.torchName ?? "float32", shape: shape)
        if doubleQuant {
            let nested = FourBit.doubleQuantize(q.absmax)
            state.nestedBlocksize = FourBit.nestedBlockSize
            state.nestedDtype = "float32"
            state.nestedOffset = Double(nested.offset)
            return QuantizedWeight(state: state, packed: q.packed, absmax: nil, nested: nested)
        }
        return QuantizedWeight(state: state, packed: q.packed, absmax: q.absmax, nested: nil)
    }

    @inline(__always)
    public func scale(_ block: Int) -> Float {
        if let n = nested { return n.absmax(block) }
        return absmax![block]
    }

    /// The reconstruction in fp32.
    public func dequantized() -> [Float] {
        let n = state.numel
        var out = [Float](repeating: 0, count: n)
        packed.withUnsafeBufferPointer { p in
            out.withUnsafeMutableBufferPointer { o in
                FourBit.dequantize(packed: p.baseAddress!, blocksize: state.blocksize, type: state.quantType,
                                   scale: scale, start: 0, count: n, into: o.baseAddress!)
            }
        }
        return out
    }

    /// The safetensors records of this weight under `name` (e.g. `model.layers.0.mlp.up_proj.weight`).
    public func records(name: String) -> [TensorRecord] {
        var r: [TensorRecord] = [
            TensorRecord(name: name, dtype: .U8, shape: [packed.count, 1], bytes: packed),
            TensorRecord(name: name + ".quant_map", floats: state.quantType.code, shape: [16]),
        ]
        let stateBytes = Array(state.json.utf8)
        r.append(TensorRecord(name: name + ".quant_state.bitsandbytes__" + state.quantType.rawValue,
                              dtype: .U8, shape: [stateBytes.count], bytes: stateBytes))
        if let n = nested {
            r.append(TensorRecord(name: name + ".absmax", dtype: .U8, shape: [n.absmax.count], bytes: n.absmax))
            r.append(TensorRecord(name: name + ".nested_absmax", floats: n.nestedAbsmax, shape: [n.nestedAbsmax.count]))
            r.append(TensorRecord(name: name + ".nested_quant_map", floats: n.quantMap, shape: [256]))
        } else {
            r.append(TensorRecord(name: name + ".absmax", floats: absmax!, shape: [absmax!.count]))
        }
        return r
    }

    /// Data bytes the records will take, computable before quantizing (for shard planning).
    public static func storedBytes(numel n: Int, blocksize: Int, doubleQuant: Bool, stateJSONLength: Int) -> Int {
        let blocks = FourBit.blockCount(n, blocksize)
        var b = (n + 1) / 2 + 16 * 4 + stateJSONLength
        b += doubleQuant ? blocks + FourBit.blockCount(blocks, FourBit.nestedBlockSize) * 4 + 256 * 4 : blocks * 4
        return b
    }
}

/// A 4-bit weight read from a checkpoint, validated, with views into the mapped file.
public struct BnbWeight: @unchecked Sendable {
    public let name: String
    public let state: BnbQuantState
    public let packed: TensorView
    public let quantMap: [Float]
    /// The block scales as stored: fp32 (or another float type) per block, or with double quant one byte per block
    /// indexing the nested code book, scaled per group of nestedBlock blocks, plus the offset. They are
    /// reconstructed a range at a time where a weight is expanded (`scales`), never as one fp32 array: a 7B
    /// model's 102 M blocks would be 0.4 GB of memory.
    private let storedScales: TensorView
    private let nested: (absmax: [Float], code: [Float], offset: Float, block: Int)?

    /// Suffix of the JSON state tensor, if `name` (a `.weight`) is stored in the bnb 4-bit layout.
    public static func stateTensorName(_ name: String, in store: WeightStore) -> String? {
        for t in QuantType.allCases {
            let s = name + ".quant_state.bitsandbytes__" + t.rawValue
            if store.contains(s) { return s }
        }
        return nil
    }

    public init(name: String, store: WeightStore) throws {
        self.name = name
        guard let stateName = BnbWeight.stateTensorName(name, in: store) else {
            throw QuantError.inconsistent(tensor: name, reason: "no quant_state tensor")
        }
        let stTensor = try store.tensor(stateName)
        guard stTensor.dtype == .U8 else { throw QuantError.inconsistent(tensor: stateName, reason: "dtype \(stTensor.dtype.rawValue), expected U8") }
        guard let text = String(validating: stTensor.bytes(), as: UTF8.self) else {
            throw QuantError.badQuantState(tensor: stateName, reason: "not UTF-8")
        }
        let st = try BnbQuantState(jsonText: text, tensor: stateName)
        state = st
        let n = st.numel
        let blocks = FourBit.blockCount(n, st.blocksize)
        packed = try store.tensor(name)
        guard packed.dtype == .U8 || packed.dtype == .I8 else {
            throw QuantError.inconsistent(tensor: name, reason: "packed weight has dtype \(packed.dtype.rawValue), expected U8")
        }
        guard packed.byteCount == (n + 1) / 2 else {
            throw QuantError.inconsistent(tensor: name, reason: "packed weight has \(packed.byteCount) bytes but shape \(st.shape) needs \((n + 1) / 2)")
        }
        let qm = try store.tensor(name + ".quant_map")
        guard qm.dtype.isFloatingPoint, qm.numel == 16 else {
            throw QuantError.inconsistent(tensor: name + ".quant_map", reason: "expected 16 floats")
        }
        quantMap = qm.floats()
        let am = try store.tensor(name + ".absmax")
        guard am.numel == blocks else {
            throw QuantError.inconsistent(tensor: name + ".absmax", reason: "\(am.numel) block scales for \(n) values in blocks of \(st.blocksize) (expected \(blocks))")
        }
        if let off = st.nestedOffset {
            guard am.dtype == .U8 else {
                throw QuantError.inconsistent(tensor: name + ".absmax", reason: "nested absmax must be U8, found \(am.dtype.rawValue)")
            }
            let nbs = st.nestedBlocksize ?? FourBit.nestedBlockSize
            let na = try store.tensor(name + ".nested_absmax")
            let nq = try store.tensor(name + ".nested_quant_map")
            guard na.dtype.isFloatingPoint, na.numel == FourBit.blockCount(blocks, nbs) else {
                throw QuantError.inconsistent(tensor: name + ".nested_absmax", reason: "expected \(FourBit.blockCount(blocks, nbs)) floats, found \(na.numel)")
            }
            guard nq.dtype.isFloatingPoint, nq.numel == 256 else {
                throw QuantError.inconsistent(tensor: name + ".nested_quant_map", reason: "expected 256 floats")
            }
            nested = (na.floats(), nq.floats(), Float(off), nbs)
        } else {
            guard am.dtype.isFloatingPoint else {
                throw QuantError.inconsistent(tensor: name + ".absmax", reason: "absmax has dtype \(am.dtype.rawValue) but the state is not nested")
            }
            nested = nil
        }
        storedScales = am
    }

    /// The fp32 scales of `blocks` into dst[0..<blocks.count], as bitsandbytes reconstructs them: the stored value,
    /// or (double quant) nested_code[byte] × nested_absmax[block / nestedBlock] + offset in float32.
    public func scales(_ blocks: Range<Int>, into dst: UnsafeMutablePointer<Float>) {
        precondition(blocks.lowerBound >= 0 && blocks.upperBound <= storedScales.numel)
        guard !blocks.isEmpty else { return }
        if let n = nested {
            let idx = storedScales.data.bindMemory(to: UInt8.self).baseAddress!
            n.code.withUnsafeBufferPointer { code in
                n.absmax.withUnsafeBufferPointer { na in
                    for b in blocks { dst[b - blocks.lowerBound] = code[Int(idx[b])] * na[b / n.block] + n.offset }
                }
            }
        } else {
            let t = storedScales
            convertToFloat(t.dtype, t.data.baseAddress! + blocks.lowerBound * t.dtype.size, dst, count: blocks.count)
        }
    }

    /// Every block's scale in fp32 (tools and tests; the passes reconstruct them a range at a time).
    public var absmax: [Float] {
        [Float](unsafeUninitializedCapacity: storedScales.numel) { buf, n in
            scales(0..<storedScales.numel, into: buf.baseAddress!)
            n = storedScales.numel
        }
    }

    /// Runs body with the fp32 scales of the blocks holding flattened elements [start, start + count) and the
    /// first of those blocks: scale of element j = scales[j / blocksize − firstBlock].
    public func withScales<T>(elements start: Int, count: Int, _ body: (_ scales: UnsafePointer<Float>, _ firstBlock: Int) throws -> T) rethrows -> T {
        let bs = state.blocksize
        let first = start / bs, last = count > 0 ? (start + count - 1) / bs : first - 1
        let n = max(0, last - first + 1)
        return try withUnsafeTemporaryAllocation(of: Float.self, capacity: max(1, n)) { buf in
            scales(first..<(first + n), into: buf.baseAddress!)
            return try body(UnsafePointer(buf.baseAddress!), first)
        }
    }

    public var shape: [Int] { state.shape }

    /// Dequantizes elements [start, start+count) of the flattened weight into `dst`.
    public func dequantize(start: Int = 0, count: Int? = nil, into dst: UnsafeMutablePointer<Float>) {
        let c = count ?? (state.numel - start)
        precondition(start >= 0 && start + c <= state.numel)
        withScales(elements: start, count: c) { sp, first in
            quantMap.withUnsafeBufferPointer { cb in
                let cp = cb.baseAddress!
                let p = packed.data.bindMemory(to: UInt8.self).baseAddress!
                let bs = state.blocksize
                for j in start..<(start + c) {
                    let byte = p[j >> 1]
                    let nib = (j & 1) == 0 ? byte >> 4 : byte & 0x0F
                    dst[j - start] = cp[Int(nib)] * sp[j / bs - first]
                }
            }
        }
    }
}

extension QuantError: ToolError {}
