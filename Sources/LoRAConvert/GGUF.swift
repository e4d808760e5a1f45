// GGUF: the llama.cpp model file (version 3): writer, bounds-checked reader, and the Q8_0 block codec.
// Layout as in ggml's docs/gguf.md and gguf-py (gguf_writer.py / gguf_reader.py); Q8_0 as quantize_row_q8_0_ref.

import Foundation
import LoRAFormats
import LoRAKernels

/// Errors reading or writing a GGUF file: each names the file and what is wrong, in one line.
public enum GGUFError: Error, CustomStringConvertible {
    case truncated(path: String, what: String, offset: Int, fileSize: Int)
    case badMagic(path: String)
    case unsupportedVersion(path: String, version: UInt32)
    case tooMany(path: String, what: String, count: UInt64, limit: Int)
    case badValueType(path: String, key: String, type: UInt32)
    case badString(path: String, what: String, length: UInt64)
    case badTensor(path: String, name: String, reason: String)
    case duplicate(path: String, name: String)
    case unsupportedType(path: String, name: String, type: UInt32)

    public var description: String {
        switch self {
        case let .truncated(path, what, offset, size):
            return "\(path): GGUF file is truncated: \(what) at byte \(offset) runs past the end (\(size) bytes); re-export or re-download the file"
        case let .badMagic(path):
            return "\(path): not a GGUF file (the first 4 bytes are not 'GGUF'); pass a .gguf file written by llama.cpp or lora-export"
        case let .unsupportedVersion(path, v):
            return "\(path): GGUF version \(v) is not supported (only 2 and 3); convert it with a current llama.cpp"
        case let .tooMany(path, what, count, limit):
            return "\(path): GGUF header claims \(count) \(what) (limit \(limit)); the file is corrupt"
        case let .badValueType(path, key, type):
            return "\(path): metadata '\(key)' has unknown value type \(type); the file is corrupt or from a newer GGUF version"
        case let .badString(path, what, length):
            return "\(path): \(what) has an invalid string (length \(length) or not UTF-8); the file is corrupt"
        case let .badTensor(path, name, reason):
            return "\(path): tensor '\(name)': \(reason); the file is corrupt"
        case let .unsupportedType(path, name, type):
            return "\(path): tensor '\(name)' has ggml type \(type), which this reader does not decode (only F32, F16, BF16 and Q8_0, what lora-export writes); requantize it with llama-quantize to one of those"
        case let .duplicate(path, name):
            return "\(path): '\(name)' appears twice; the file is corrupt"
        }
    }
}

extension GGUFError: ToolError {}

/// The ggml tensor types this project writes and reads (the numbering is ggml's `enum ggml_type`).
public enum GGMLType: UInt32, Sendable, CaseIterable {
    case f32 = 0, f16 = 1, q8_0 = 8, bf16 = 30

    public var name: String {
        switch self { case .f32: "F32"; case .f16: "F16"; case .q8_0: "Q8_0"; case .bf16: "BF16" }
    }
    /// Elements per block and bytes per block.
    public var blockSize: Int { self == .q8_0 ? 32 : 1 }
    public var blockBytes: Int {
        switch self { case .f32: 4; case .f16, .bf16: 2; case .q8_0: 34 }
    }
    /// Bytes for a row of `n` elements (n must be a multiple of `blockSize`).
    public func rowBytes(_ n: Int) -> Int { n / blockSize * blockBytes }
}

/// A metadata value (gguf_type).
public indirect enum GGUFValue: Equatable, Sendable {
    case u8(UInt8), i8(Int8), u16(UInt16), i16(Int16), u32(UInt32), i32(Int32), f32(Float), bool(Bool)
    case string(String), array([GGUFValue]), u64(UInt64), i64(Int64), f64(Double)

    var typeCode: UInt32 {
        switch self {
        case .u8: 0; case .i8: 1; case .u16: 2; case .i16: 3; case .u32: 4; case .i32: 5; case .f32: 6
        case .bool: 7; case .string: 8; case .array: 9; case .u64: 10; case .i64: 11; case .f64: 12
        }
    }

    /// The value as an integer, whatever its integer width.
    public var int: Int? {
        switch self {
        case let .u8(v): Int(v); case let .i8(v): Int(v); case let .u16(v): Int(v); case let .i16(v): Int(v)
        case let .u32(v): Int(v); case let .i32(v): Int(v); case let .u64(v): Int(exactly: v); case let .i64(v): Int(v)
        default: nil
        }
    }
    public var float: Double? {
        switch self { case let .f32(v): Double(v); case let .f64(v): v; default: int.map(Double.init) }
    }
    public var string: String? { if case let .string(s) = self { s } else { nil } }
    public var array: [GGUFValue]? { if case let .array(a) = self { a } else { nil } }
}

/// One tensor to write: name, numpy-order shape (outermost first), type and its encoded bytes.
public struct GGUFTensor {
    public var name: String
    public var shape: [Int]
    public var type: GGMLType
    public var data: [UInt8]
    public init(name: String, shape: [Int], type: GGMLType, data: [UInt8]) {
        self.name = name; self.shape = shape; self.type = type; self.data = data
    }

    /// Encodes fp32 values (row-major, numpy order) as `type`.
    public init(name: String, shape: [Int], type: GGMLType, floats: [Float]) {
        self.init(name: name, shape: shape, type: type, data: GGUFCodec.encode(floats, as: type))
    }
}

/// A tensor's place in a file before its bytes exist: name, numpy-order shape and type.
public struct GGUFTensorPlan: Sendable {
    public var name: String
    public var shape: [Int]
    public var type: GGMLType
    public init(name: String, shape: [Int], type: GGMLType) { self.name = name; self.shape = shape; self.type = type }
    public var count: Int { shape.reduce(1, *) }
    public var byteCount: Int { count / type.blockSize * type.blockBytes }
}

/// Encoding and decoding of tensor data.
public enum GGUFCodec {
    /// fp32 values as `type`'s bytes (little-endian). Q8_0 needs a count that is a multiple of 32.
    public static func encode(_ x: [Float], as type: GGMLType) -> [UInt8] {
        var out = [UInt8]()
        switch type {
        case .f32:
            out.reserveCapacity(x.count * 4)
            for v in x { appendLE(&out, v.bitPattern) }
        case .f16:
            out.reserveCapacity(x.count * 2)
            for v in x { appendLE(&out, floatToF16(v)) }
        case .bf16:
            out.reserveCapacity(x.count * 2)
            for v in x { appendLE(&out, floatToBF16(v)) }
        case .q8_0:
            precondition(x.count % 32 == 0, "Q8_0 needs whole blocks of 32")
            out = [UInt8](repeating: 0, count: x.count / 32 * 34)
            x.withUnsafeBufferPointer { src in
                out.withUnsafeMutableBufferPointer { dst in
                    for b in 0..<(x.count / 32) { quantizeBlockQ8_0(src.baseAddress! + b * 32, dst.baseAddress! + b * 34) }
                }
            }
        }
        return out
    }

    /// One Q8_0 block as ggml's quantize_row_q8_0_ref: d = amax/127 (stored fp16), qs = roundf(x/d) with the
    /// fp32 reciprocal of the fp32 d (round half away from zero), 0 for an all-zero block.
    @inline(__always)
    static func quantizeBlockQ8_0(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<UInt8>) {
        var amax: Float = 0
        for j in 0..<32 { amax = max(amax, abs(x[j])) }
        let d = amax / 127
        let id: Float = d != 0 ? 1 / d : 0
        let h = floatToF16(d)
        y[0] = UInt8(h & 0xFF); y[1] = UInt8(h >> 8)
        for j in 0..<32 {
            let q = (x[j] * id).rounded(.toNearestOrAwayFromZero)
            y[2 + j] = UInt8(bitPattern: Int8(max(-128, min(127, q))))
        }
    }

    /// `count` values of `type` from raw bytes, as fp32.
    public static func decode(_ bytes: UnsafeRawBufferPointer, type: GGMLType, count: Int) -> [Float] {
        var out = [Float](repeating: 0, count: count)
        switch type {
        case .f32:
            for i in 0..<count { out[i] = Float(bitPattern: bytes.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self).littleEndian) }
        case .f16:
            for i in 0..<count { out[i] = f16ToFloat(bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian) }
        case .bf16:
            for i in 0..<count { out[i] = bf16ToFloat(bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian) }
        case .q8_0:
            for b in 0..<(count / 32) {
                let d = f16ToFloat(bytes.loadUnaligned(fromByteOffset: b * 34, as: UInt16.self).littleEndian)
                for j in 0..<32 { out[b * 32 + j] = d * Float(Int8(bitPattern: bytes[b * 34 + 2 + j])) }
            }
        }
        return out
    }

    @inline(__always)
    static func appendLE<T: FixedWidthInteger>(_ out: inout [UInt8], _ v: T) {
        withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) }
    }
}

/// Writes a GGUF v3 file: header, metadata in the given order, tensor infos, then the data aligned to 32 bytes.
public enum GGUFWriter {
    public static let alignment = 32

    /// The whole file as bytes to a sink; returns the number of bytes written.
    @discardableResult
    public static func write(metadata: [(String, GGUFValue)], tensors: [GGUFTensor], to sink: ByteSink) throws -> Int {
        try write(metadata: metadata, plan: tensors.map { GGUFTensorPlan(name: $0.name, shape: $0.shape, type: $0.type) },
                  to: sink) { tensors[$0].data }
    }

    /// The whole file with each tensor's bytes made when the writer reaches it (`data(i)` for `plan[i]`), so one
    /// tensor at a time is in memory. The bytes must be the plan's size (shape and type); returns the bytes written.
    @discardableResult
    public static func write(metadata: [(String, GGUFValue)], plan tensors: [GGUFTensorPlan], to sink: ByteSink,
                             data: (Int) throws -> [UInt8]) throws -> Int {
        var h = [UInt8]()
        h += Array("GGUF".utf8)
        GGUFCodec.appendLE(&h, UInt32(3))
        GGUFCodec.appendLE(&h, UInt64(tensors.count))
        GGUFCodec.appendLE(&h, UInt64(metadata.count))
        for (k, v) in metadata {
            appendString(&h, k)
            GGUFCodec.appendLE(&h, v.typeCode)
            appendValue(&h, v)
        }
        var offset = 0
        var offsets = [Int]()
        for t in tensors {
            offsets.append(offset)
            offset += pad(t.byteCount)
        }
        for (t, off) in zip(tensors, offsets) {
            appendString(&h, t.name)
            GGUFCodec.appendLE(&h, UInt32(t.shape.count))
            for d in t.shape.reversed() { GGUFCodec.appendLE(&h, UInt64(d)) }  // ne[0] is the innermost dimension
            GGUFCodec.appendLE(&h, t.type.rawValue)
            GGUFCodec.appendLE(&h, UInt64(off))
        }
        h += [UInt8](repeating: 0, count: pad(h.count) - h.count)
        try sink.write(h)
        var total = h.count
        for (i, t) in tensors.enumerated() {
            let bytes = try data(i)
            precondition(bytes.count == t.byteCount, "GGUF tensor '\(t.name)': \(bytes.count) bytes, its plan says \(t.byteCount)")
            try sink.write(bytes)
            let p = pad(bytes.count) - bytes.count
            if p > 0 { try sink.write([UInt8](repeating: 0, count: p)) }
            total += bytes.count + p
        }
        return total
    }

    static func pad(_ n: Int) -> Int { (n + alignment - 1) / alignment * alignment }

    static func appendString(_ out: inout [UInt8], _ s: String) {
        let u = Array(s.utf8)
        GGUFCodec.appendLE(&out, UInt64(u.count))
        out += u
    }

    static func appendValue(_ out: inout [UInt8], _ v: GGUFValue) {
        switch v {
        case let .u8(x): out.append(x)
        case let .i8(x): out.append(UInt8(bitPattern: x))
        case let .u16(x): GGUFCodec.appendLE(&out, x)
        case let .i16(x): GGUFCodec.appendLE(&out, x)
        case let .u32(x): GGUFCodec.appendLE(&out, x)
        case let .i32(x): GGUFCodec.appendLE(&out, x)
        case let .f32(x): GGUFCodec.appendLE(&out, x.bitPattern)
        case let .bool(x): out.append(x ? 1 : 0)
        case let .string(s): appendString(&out, s)
        case let .u64(x): GGUFCodec.appendLE(&out, x)
        case let .i64(x): GGUFCodec.appendLE(&out, x)
        case let .f64(x): GGUFCodec.appendLE(&out, x.bitPattern)
        case let .array(a):
            // An empty array is written as an array of u8 (gguf-py writes the first element's type).
            GGUFCodec.appendLE(&out, a.first?.typeCode ?? 0)
            GGUFCodec.appendLE(&out, UInt64(a.count))
            for e in a { appendValue(&out, e) }
        }
    }
}

/// A GGUF file read and validated: metadata in file order and tensor infos whose data lies inside the file.
public struct GGUFFile {
    public struct TensorInfo: Sendable {
        public var name: String
        /// numpy-order shape (outermost first), the reverse of ggml's ne[].
        public var shape: [Int]
        public var type: GGMLType
        /// Absolute byte offset of the data in the file, and its length.
        public var offset: Int
        public var byteCount: Int
        public var count: Int { shape.reduce(1, *) }
    }

    public let path: String
    public let version: UInt32
    public let metadata: [(key: String, value: GGUFValue)]
    public let tensors: [TensorInfo]
    public let dataOffset: Int
    public let file: MappedFile

    /// Limits against hostile headers: counts past these are corruption, not models.
    public static let maxTensors = 1 << 20
    public static let maxKVs = 1 << 20
    public static let maxArray = 1 << 26
    public static let maxString = 1 << 28
    public static let maxDims = 4

    public init(path: String) throws { try self.init(file: MappedFile(path: path)) }

    /// Whether the file at `path` starts with the GGUF magic (false when unreadable).
    public static func hasMagic(_ path: String) -> Bool {
        guard let h = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? h.close() }
        return (try? h.read(upToCount: 4)) == Data("GGUF".utf8)
    }

    public init(file: MappedFile) throws {
        self.file = file
        path = file.path
        var r = Cursor(bytes: file.bytes, path: file.path)
        guard file.bytes.count >= 4, Array(file.bytes[0..<4]) == Array("GGUF".utf8) else { throw GGUFError.badMagic(path: path) }
        r.pos = 4
        version = try r.u32("version")
        guard version == 2 || version == 3 else { throw GGUFError.unsupportedVersion(path: path, version: version) }
        let nt = try r.u64("tensor count"), nkv = try r.u64("metadata count")
        guard nt <= UInt64(Self.maxTensors) else { throw GGUFError.tooMany(path: path, what: "tensors", count: nt, limit: Self.maxTensors) }
        guard nkv <= UInt64(Self.maxKVs) else { throw GGUFError.tooMany(path: path, what: "metadata entries", count: nkv, limit: Self.maxKVs) }
        var md = [(key: String, value: GGUFValue)]()
        var seen = Set<String>()
        for _ in 0..<Int(nkv) {
            let key = try r.string("metadata key")
            guard seen.insert(key).inserted else { throw GGUFError.duplicate(path: path, name: key) }
            let type = try r.u32("type of '\(key)'")
            md.append((key, try r.value(type: type, key: key, depth: 0)))
        }
        metadata = md
        var alignment = 32
        if let a = md.first(where: { $0.key == "general.alignment" })?.value.int {
            guard a > 0, a <= 1 << 16, a & (a - 1) == 0 else {
                throw GGUFError.badTensor(path: path, name: "general.alignment", reason: "alignment \(a) is not a power of two")
            }
            alignment = a
        }
        var infos = [(String, [Int], GGMLType, UInt64)]()
        seen.removeAll()
        for _ in 0..<Int(nt) {
            let name = try r.string("tensor name")
            guard seen.insert(name).inserted else { throw GGUFError.duplicate(path: path, name: name) }
            let nd = try r.u32("dimension count of '\(name)'")
            guard nd >= 1, nd <= UInt32(Self.maxDims) else {
                throw GGUFError.badTensor(path: path, name: name, reason: "\(nd) dimensions (1 to \(Self.maxDims) allowed)")
            }
            var ne = [Int]()
            var total = 1
            for _ in 0..<nd {
                let d = try r.u64("dimensions of '\(name)'")
                guard d >= 1, d <= UInt64(1 << 40) else { throw GGUFError.badTensor(path: path, name: name, reason: "dimension \(d)") }
                let (m, o) = total.multipliedReportingOverflow(by: Int(d))
                guard !o, m <= 1 << 48 else { throw GGUFError.badTensor(path: path, name: name, reason: "too many elements") }
                total = m
                ne.append(Int(d))
            }
            let traw = try r.u32("type of '\(name)'")
            guard let type = GGMLType(rawValue: traw) else {
                throw GGUFError.unsupportedType(path: path, name: name, type: traw)
            }
            guard ne[0] % type.blockSize == 0 else {
                throw GGUFError.badTensor(path: path, name: name, reason: "row of \(ne[0]) is not a multiple of \(type.name)'s block \(type.blockSize)")
            }
            infos.append((name, ne.reversed(), type, try r.u64("offset of '\(name)'")))
        }
        dataOffset = (r.pos + alignment - 1) / alignment * alignment
        var ts = [TensorInfo]()
        for (name, shape, type, rel) in infos {
            let count = shape.reduce(1, *)
            let bytes = count / type.blockSize * type.blockBytes
            guard rel % UInt64(alignment) == 0 else {
                throw GGUFError.badTensor(path: path, name: name, reason: "data offset \(rel) is not aligned to \(alignment)")
            }
            guard rel <= UInt64(file.bytes.count), dataOffset + Int(rel) <= file.bytes.count - bytes else {
                throw GGUFError.truncated(path: path, what: "data of tensor '\(name)'", offset: dataOffset &+ Int(clamping: rel), fileSize: file.bytes.count)
            }
            ts.append(TensorInfo(name: name, shape: shape, type: type, offset: dataOffset + Int(rel), byteCount: bytes))
        }
        tensors = ts
    }

    /// The value of a metadata key, if present.
    public subscript(key: String) -> GGUFValue? { metadata.first { $0.key == key }?.value }

    public func tensor(_ name: String) -> TensorInfo? { tensors.first { $0.name == name } }

    /// A tensor's raw bytes (inside the file: checked when read).
    public func bytes(_ t: TensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: file.bytes[t.offset..<(t.offset + t.byteCount)])
    }

    /// A tensor's values as fp32 (dequantized).
    public func floats(_ t: TensorInfo) -> [Float] { GGUFCodec.decode(bytes(t), type: t.type, count: t.count) }

    /// A bounds-checked little-endian reader over the mapped bytes.
    struct Cursor {
        let bytes: UnsafeRawBufferPointer
        let path: String
        var pos = 0

        mutating func take(_ n: Int, _ what: String) throws -> Int {
            guard n >= 0, pos <= bytes.count, n <= bytes.count - pos else {
                throw GGUFError.truncated(path: path, what: what, offset: pos, fileSize: bytes.count)
            }
            defer { pos += n }
            return pos
        }
        mutating func int<T: FixedWidthInteger>(_ what: String, _: T.Type) throws -> T {
            let p = try take(MemoryLayout<T>.size, what)
            return T(littleEndian: bytes.loadUnaligned(fromByteOffset: p, as: T.self))
        }
        mutating func u32(_ what: String) throws -> UInt32 { try int(what, UInt32.self) }
        mutating func u64(_ what: String) throws -> UInt64 { try int(what, UInt64.self) }
        mutating func string(_ what: String) throws -> String {
            let n = try u64(what)
            guard n <= UInt64(GGUFFile.maxString) else { throw GGUFError.badString(path: path, what: what, length: n) }
            let p = try take(Int(n), what)
            guard let s = String(validating: bytes[p..<(p + Int(n))], as: UTF8.self) else {
                throw GGUFError.badString(path: path, what: what, length: n)
            }
            return s
        }
        mutating func value(type: UInt32, key: String, depth: Int) throws -> GGUFValue {
            switch type {
            case 0: return .u8(try int(key, UInt8.self))
            case 1: return .i8(try int(key, Int8.self))
            case 2: return .u16(try int(key, UInt16.self))
            case 3: return .i16(try int(key, Int16.self))
            case 4: return .u32(try int(key, UInt32.self))
            case 5: return .i32(try int(key, Int32.self))
            case 6: return .f32(Float(bitPattern: try u32(key)))
            case 7: return .bool(try int(key, UInt8.self) != 0)
            case 8: return .string(try string("value of '\(key)'"))
            case 9:
                let et = try u32("array type of '\(key)'")
                let n = try u64("array length of '\(key)'")
                guard depth == 0, et != 9 || n == 0 else { throw GGUFError.badValueType(path: path, key: key, type: 9) }
                guard n <= UInt64(GGUFFile.maxArray), n <= UInt64(bytes.count - pos) else {
                    throw GGUFError.tooMany(path: path, what: "elements in '\(key)'", count: n, limit: min(GGUFFile.maxArray, bytes.count - pos))
                }
                var a = [GGUFValue]()
                a.reserveCapacity(Int(n))
                for _ in 0..<Int(n) { a.append(try value(type: et, key: key, depth: depth + 1)) }
                return .array(a)
            case 10: return .u64(try u64(key))
            case 11: return .i64(try int(key, Int64.self))
            case 12: return .f64(Double(bitPattern: try u64(key)))
            default: throw GGUFError.badValueType(path: path, key: key, type: type)
            }
        }
    }
}
