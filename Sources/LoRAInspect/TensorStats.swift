// TensorStats: min / max / mean / std and NaN / Inf / zero counts of one tensor, streamed in chunks in Double.
// Float dtypes (F32, F16, BF16, F64) and integers are read as stored; a bitsandbytes 4-bit weight is dequantized
// block by block (the values the model multiplies with).
import Foundation
import LoRAFormats
import LoRAQuant
import LoRAModel
import LoRATrain

/// Running statistics over a stream of values (Welford's mean and variance over the finite values).
public struct ValueStats: Sendable, Equatable {
    public var count = 0
    public var finite = 0
    public var nan = 0
    public var inf = 0
    public var zeros = 0
    public var min = Double.infinity
    public var max = -Double.infinity
    public var mean = 0.0
    var m2 = 0.0

    public init() {}

    @inline(__always)
    public mutating func add(_ x: Double) {
        count += 1
        if x.isNaN { nan += 1; return }
        if x.isInfinite { inf += 1; return }
        if x == 0 { zeros += 1 }
        finite += 1
        if x < min { min = x }
        if x > max { max = x }
        let d = x - mean
        mean += d / Double(finite)
        m2 += d * (x - mean)
    }

    /// Population standard deviation (ddof 0) of the finite values.
    public var std: Double { finite > 0 ? (m2 / Double(finite)).squareRoot() : .nan }

    var json: JSONObject {
        var o = JSONObject()
        let any = finite > 0
        o["min"] = any ? .double(min) : .null
        o["max"] = any ? .double(max) : .null
        o["mean"] = any ? .double(mean) : .null
        o["std"] = any ? .double(std) : .null
        o["nan"] = .int(Int64(nan))
        o["inf"] = .int(Int64(inf))
        o["zeros"] = .int(Int64(zeros))
        o["finite"] = .int(Int64(finite))
        return o
    }
}

/// The numbers of one tensor, read in ranges as Doubles: stored values, dequantized 4-bit values, or floats in memory.
enum Values {
    case view(TensorView)
    case fourBit(BnbWeight)
    case floats([Float], shape: [Int])

    static func readable(_ d: DType) -> Bool { d != .F8_E4M3 && d != .F8_E5M2 }

    var count: Int {
        switch self {
        case .view(let t): return t.numel
        case .fourBit(let q): return q.state.numel
        case .floats(let f, _): return f.count
        }
    }

    var shape: [Int] {
        switch self {
        case .view(let t): return t.shape
        case .fourBit(let q): return q.shape
        case .floats(_, let sh): return sh
        }
    }

    /// Elements [start, start + c) into `dst`.
    func read(start: Int, count c: Int, into dst: UnsafeMutablePointer<Double>) {
        switch self {
        case .floats(let f, _):
            for i in 0..<c { dst[i] = Double(f[start + i]) }
        case .fourBit(let q):
            let tmp = UnsafeMutablePointer<Float>.allocate(capacity: c)
            defer { tmp.deallocate() }
            q.dequantize(start: start, count: c, into: tmp)
            for i in 0..<c { dst[i] = Double(tmp[i]) }
        case .view(let t):
            let p = t.data.baseAddress! + start * t.dtype.size
            switch t.dtype {
            case .F32, .F16, .BF16:
                let tmp = UnsafeMutablePointer<Float>.allocate(capacity: c)
                defer { tmp.deallocate() }
                convertToFloat(t.dtype, p, tmp, count: c)
                for i in 0..<c { dst[i] = Double(tmp[i]) }
            case .F64: for i in 0..<c { dst[i] = p.loadUnaligned(fromByteOffset: 8 * i, as: Double.self) }
            case .BOOL, .U8: for i in 0..<c { dst[i] = Double(p.load(fromByteOffset: i, as: UInt8.self)) }
            case .I8: for i in 0..<c { dst[i] = Double(p.load(fromByteOffset: i, as: Int8.self)) }
            case .I16: for i in 0..<c { dst[i] = Double(p.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self)) }
            case .U16: for i in 0..<c { dst[i] = Double(p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
            case .I32: for i in 0..<c { dst[i] = Double(p.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)) }
            case .U32: for i in 0..<c { dst[i] = Double(p.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)) }
            case .I64: for i in 0..<c { dst[i] = Double(p.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)) }
            case .U64: for i in 0..<c { dst[i] = Double(p.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)) }
            case .F8_E4M3, .F8_E5M2: for i in 0..<c { dst[i] = .nan }  // never reached: readable() is checked first
            }
        }
    }
}

/// Where a path's tensors live: a model's weight store, or safetensors files searched in order.
enum TensorSource {
    case store(WeightStore)
    case files([SafetensorsFile])

    static func open(_ path: String) throws -> TensorSource {
        let fm = FileManager.default
        func file(_ p: String) throws -> SafetensorsFile { try SafetensorsFile(path: p) }
        switch try Inspector.recognize(path) {
        case .model(let p): return .store(try ModelDir(path: p).weights)
        case .safetensors(let p): return .files([try file(p)])
        case .gguf(let p): throw InspectError.ggufUnsupported(path: p, action: "--tensor statistics")
        case .adapter(let p):
            if p == "-" {
                try StdinClaim.shared.claim("the adapter")
                return .files([try SafetensorsFile(file: try MappedFile(stdinNamed: "<stdin adapter>"))])
            }
            var isDir: ObjCBool = false
            _ = fm.fileExists(atPath: p, isDirectory: &isDir)
            return .files([try file(isDir.boolValue ? p + "/adapter_model.safetensors" : p)])
        case .checkpoint(let p):
            var fs = [try file(p + "/adapter_model.safetensors")]
            if fm.fileExists(atPath: p + "/optimizer.safetensors") { fs.append(try file(p + "/optimizer.safetensors")) }
            return .files(fs)
        case .run(let p):
            if fm.fileExists(atPath: p + "/adapter_model.safetensors") { return .files([try file(p + "/adapter_model.safetensors")]) }
            guard let c = Checkpoint.list(p).last else {
                throw InspectError.noTensor(path: p, tensor: "-", hint: "the run has neither a final adapter nor a checkpoint yet")
            }
            return try open(c.path)
        }
    }

    var names: [String] {
        switch self {
        case .store(let s): return s.names
        case .files(let fs): return fs.flatMap(\.names)
        }
    }

    /// The tensor called `name` (adapters also answer to the name without or with `base_model.model.`).
    func find(_ name: String) -> (TensorView, WeightStore?)? {
        switch self {
        case .store(let s):
            guard s.contains(name), let t = try? s.tensor(name) else { return nil }
            return (t, s)
        case .files(let fs):
            for cand in [name, Adapter.keyPrefix + name] {
                for f in fs where f.contains(cand) {
                    if let t = try? f.tensor(cand) { return (t, nil) }
                }
            }
            return nil
        }
    }
}

extension Inspector {
    static let chunk = 1 << 16

    /// Feeds every value of a tensor to `body` as Doubles in chunks of at most `chunk`.
    static func forEachChunk(_ t: Values, _ body: (UnsafeBufferPointer<Double>) -> Void) {
        let n = t.count
        var buf = [Double](repeating: 0, count: min(chunk, max(n, 1)))
        var start = 0
        while start < n {
            let c = min(chunk, n - start)
            buf.withUnsafeMutableBufferPointer { t.read(start: start, count: c, into: $0.baseAddress!) }
            buf.withUnsafeBufferPointer { body(UnsafeBufferPointer(rebasing: $0[0..<c])) }
            start += c
        }
    }

    /// `--tensor NAME`: statistics of one tensor of whatever `path` is.
    public static func tensorStats(_ path: String, tensor name: String) throws -> JSONValue {
        let src = try TensorSource.open(path)
        guard let (t, store) = src.find(name) else {
            let close = src.names.filter { $0.contains(name) || name.contains($0) }.prefix(5)
            let hint = close.isEmpty
                ? "lora-inspect \(path) --tensors lists the \(src.names.count) tensors"
                : "did you mean \(close.map { "'\($0)'" }.joined(separator: ", "))?"
            throw InspectError.noTensor(path: path == "-" ? "<stdin>" : path, tensor: name, hint: hint)
        }
        var o = JSONObject()
        o["kind"] = .string("tensor")
        o["path"] = .string(path == "-" ? "<stdin>" : path)
        o["file"] = .string(t.file.path)
        o["name"] = .string(t.name)
        o["dtype"] = .string(t.dtype.rawValue)
        o["shape"] = ints(t.shape)
        o["bytes"] = .int(Int64(t.byteCount))
        var stats = ValueStats()
        if let s = store, BnbWeight.stateTensorName(t.name, in: s) != nil {
            let q = try BnbWeight(name: t.name, store: s)
            o["packed_4bit"] = .bool(true)
            o["quant_type"] = .string(q.state.quantType.rawValue)
            o["blocksize"] = .int(Int64(q.state.blocksize))
            o["double_quant"] = .bool(q.state.isNested)
            o["dequantized_shape"] = ints(q.shape)
            o["numel"] = .int(Int64(q.state.numel))
            o["stats_of"] = .string("dequantized values")
            forEachChunk(.fourBit(q)) { for x in $0 { stats.add(x) } }
        } else {
            o["packed_4bit"] = .bool(false)
            o["numel"] = .int(Int64(t.numel))
            o["stats_of"] = .string("stored values")
            guard Values.readable(t.dtype) else {
                throw InspectError.unsupportedDType(path: t.file.path, tensor: t.name, dtype: t.dtype.rawValue)
            }
            forEachChunk(.view(t)) { for x in $0 { stats.add(x) } }
        }
        for (k, v) in stats.json.entries { o[k] = v }
        return .object(o)
    }
}
