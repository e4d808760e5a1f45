// SafetensorsWriter: writes a safetensors stream (docs/formats.md §4): compact JSON header with `__metadata__`
// first, space-padded so 8 + N is a multiple of 8, then tensor data back to back in header order.

public struct TensorRecord {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    /// Writes exactly `byteCount` bytes into the sink.
    public let writeData: (ByteSink) throws -> Void

    public var byteCount: Int { (checkedNumel(shape) ?? 0) * dtype.size }

    public init(name: String, dtype: DType, shape: [Int], writeData: @escaping (ByteSink) throws -> Void) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.writeData = writeData
    }

    /// A tensor whose bytes are already in memory.
    public init(name: String, dtype: DType, shape: [Int], bytes: [UInt8]) {
        precondition(bytes.count == (checkedNumel(shape) ?? -1) * dtype.size, "TensorRecord \(name): byte count does not match shape")
        self.init(name: name, dtype: dtype, shape: shape) { try $0.write(bytes) }
    }

    /// fp32 values written in `dtype`'s stored form, encoded a chunk at a time as the file is written (a
    /// checkpoint of a 7B model's 40 M LoRA parameters and their AdamW moments is never a second copy in memory).
    public init(name: String, floats: [Float], shape: [Int], dtype: DType = .F32) {
        precondition(floats.count == checkedNumel(shape), "TensorRecord \(name): value count does not match shape")
        self.init(name: name, dtype: dtype, shape: shape) { sink in
            let chunk = 1 << 16
            var buf = [UInt8](repeating: 0, count: min(floats.count, chunk) * dtype.size)
            try floats.withUnsafeBufferPointer { s in
                var i = 0
                while i < s.count {
                    let n = min(chunk, s.count - i)
                    try buf.withUnsafeMutableBytes { d in
                        convertFromFloat(dtype, s.baseAddress! + i, d.baseAddress!, count: n)
                        try sink.write(UnsafeRawBufferPointer(rebasing: d[0..<(n * dtype.size)]))
                    }
                    i += n
                }
            }
        }
    }

    /// A copy of a tensor from another file, bytes unchanged.
    public init(copying t: TensorView, as name: String? = nil) {
        self.init(name: name ?? t.name, dtype: t.dtype, shape: t.shape) { try $0.write(t.data) }
    }
}

/// fp32 values in a floating dtype's stored form (round to nearest even), as bytes.
public func encodeFloats(_ floats: [Float], as dtype: DType) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: floats.count * dtype.size)
    out.withUnsafeMutableBytes { d in
        floats.withUnsafeBufferPointer { s in
            if let sb = s.baseAddress, let db = d.baseAddress { convertFromFloat(dtype, sb, db, count: floats.count) }
        }
    }
    return out
}

/// Counts bytes written, to check each record writes what its shape promises.
private final class CountingSink: ByteSink {
    let inner: ByteSink
    var count = 0
    init(_ inner: ByteSink) { self.inner = inner }
    func write(_ bytes: UnsafeRawBufferPointer) throws {
        count += bytes.count
        try inner.write(bytes)
    }
}

public enum SafetensorsWriter {
    /// The header bytes (length prefix included) for records laid out in the given order.
    public static func header(_ records: [TensorRecord], metadata: [String: String]) -> [UInt8] {
        var obj = JSONObject()
        var meta = JSONObject()
        meta["format"] = .string("pt")
        for k in metadata.keys.sorted() where k != "format" { meta[k] = .string(metadata[k]!) }
        if let f = metadata["format"] { meta["format"] = .string(f) }
        obj["__metadata__"] = .object(meta)
        var offset = 0
        for r in records {
            var e = JSONObject()
            e["dtype"] = .string(r.dtype.rawValue)
            e["shape"] = .array(r.shape.map { .int(Int64($0)) })
            e["data_offsets"] = .array([.int(Int64(offset)), .int(Int64(offset + r.byteCount))])
            obj[r.name] = .object(e)
            offset += r.byteCount
        }
        var json = Array(JSONValue.object(obj).serialized(.compact).utf8)
        while (8 + json.count) % 8 != 0 { json.append(0x20) }
        var out = [UInt8]()
        out.reserveCapacity(8 + json.count)
        let n = UInt64(json.count)
        for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: n >> (8 * UInt64(i)))) }
        out += json
        return out
    }

    /// The Rust safetensors `Dtype` declaration order; the Python writer lays tensors out by this, descending.
    static let rustDtypeOrder: [DType] = [.BOOL, .U8, .I8, .F8_E5M2, .F8_E4M3, .I16, .U16, .F16, .BF16, .I32, .U32, .F32, .F64, .I64, .U64]

    /// Orders records as the Python (Rust) writer does: dtype descending in its enum order, then by name.
    public static func canonicalOrder(_ records: [TensorRecord]) -> [TensorRecord] {
        let rank = Dictionary(uniqueKeysWithValues: rustDtypeOrder.enumerated().map { ($1, $0) })
        return records.sorted { a, b in
            let ra = rank[a.dtype]!, rb = rank[b.dtype]!
            return ra != rb ? ra > rb : a.name < b.name
        }
    }

    /// Writes the records; `canonical` orders them as the Python writer does, otherwise they keep the given
    /// order (callers that compute tensors lazily keep related records adjacent).
    public static func write(_ records: [TensorRecord], metadata: [String: String] = [:], to sink: ByteSink,
                             canonical: Bool = true) throws {
        var seen = Set<String>()
        for r in records { precondition(seen.insert(r.name).inserted, "duplicate tensor name \(r.name)") }
        let ordered = canonical ? canonicalOrder(records) : records
        try sink.write(header(ordered, metadata: metadata))
        for r in ordered {
            let c = CountingSink(sink)
            try r.writeData(c)
            precondition(c.count == r.byteCount, "tensor \(r.name) wrote \(c.count) bytes, expected \(r.byteCount)")
        }
    }

    /// Writes a safetensors file atomically (temporary name, then rename).
    public static func write(_ records: [TensorRecord], metadata: [String: String] = [:], toFile path: String,
                             canonical: Bool = true) throws {
        let f = try AtomicFile(path: path)
        try write(records, metadata: metadata, to: f, canonical: canonical)
        try f.commit()
    }

    /// Total data bytes of the records.
    public static func dataSize(_ records: [TensorRecord]) -> Int { records.reduce(0) { $0 + $1.byteCount } }
}
