// Safetensors: a validating reader over a memory-mapped file (docs/formats.md §4): 8-byte little-endian header
// length, a JSON header of name → {dtype, shape, data_offsets}, then a byte buffer the tensors tile exactly.

public enum SafetensorsError: Error, CustomStringConvertible {
    case tooSmall(path: String, size: Int)
    case headerTooLarge(path: String, length: UInt64, fileSize: Int)
    case badHeader(path: String, reason: String)
    case badEntry(path: String, tensor: String, reason: String)
    case outOfBounds(path: String, tensor: String, end: Int, bufferSize: Int)
    case layout(path: String, reason: String)
    case missingTensor(path: String, tensor: String)
    case wrongDType(path: String, tensor: String, dtype: DType, expected: String)

    public var description: String {
        switch self {
        case .tooSmall(let p, let s):
            return "\(p): not a safetensors file (\(s) bytes, shorter than the 8-byte header length); the file is truncated or of another format"
        case .headerTooLarge(let p, let n, let f):
            return "\(p): header length \(n) runs past the end of the \(f)-byte file (or over the 100 MB cap); the file is truncated or corrupt"
        case .badHeader(let p, let r):
            return "\(p): invalid safetensors header: \(r)"
        case .badEntry(let p, let t, let r):
            return "\(p): tensor '\(t)': \(r)"
        case .outOfBounds(let p, let t, let e, let b):
            return "\(p): tensor '\(t)' ends at byte \(e) of a \(b)-byte data buffer; the file is truncated or corrupt"
        case .layout(let p, let r):
            return "\(p): \(r)"
        case .missingTensor(let p, let t):
            return "\(p): no tensor named '\(t)'"
        case .wrongDType(let p, let t, let d, let e):
            return "\(p): tensor '\(t)' has dtype \(d.rawValue), expected \(e)"
        }
    }
}

/// A tensor inside a mapped file: dtype, shape and its bytes. Holds the file alive.
public struct TensorView: @unchecked Sendable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    public let data: UnsafeRawBufferPointer
    public let file: MappedFile

    public var numel: Int { data.count / dtype.size }
    public var byteCount: Int { data.count }

    /// The values as fp32 (F32/F16/BF16/F64 only).
    public func floats() -> [Float] {
        precondition(dtype.isFloatingPoint)
        let n = numel
        return [Float](unsafeUninitializedCapacity: n) { buf, count in
            if n > 0 { convertToFloat(dtype, data.baseAddress!, buf.baseAddress!, count: n) }
            count = n
        }
    }

    /// Converts elements [start, start+count) to fp32 into `dst`.
    public func floats(into dst: UnsafeMutablePointer<Float>, start: Int = 0, count: Int? = nil) {
        precondition(dtype.isFloatingPoint)
        let c = count ?? (numel - start)
        precondition(start >= 0 && start + c <= numel)
        if c > 0 { convertToFloat(dtype, data.baseAddress! + start * dtype.size, dst, count: c) }
    }

    public func bytes() -> [UInt8] { Array(data.bindMemory(to: UInt8.self)) }
}

public final class SafetensorsFile: @unchecked Sendable {
    public static let maxHeaderLength: UInt64 = 100_000_000

    public let path: String
    public let file: MappedFile
    public let metadata: [String: String]
    /// Tensor names in the order of their data offsets.
    public let names: [String]
    private let entries: [String: (dtype: DType, shape: [Int], begin: Int, end: Int)]
    private let bufferStart: Int

    public convenience init(path: String) throws {
        try self.init(file: try MappedFile(path: path))
    }

    public init(file: MappedFile) throws {
        self.file = file
        let path = file.path
        self.path = path
        let bytes = file.bytes
        guard bytes.count >= 8 else { throw SafetensorsError.tooSmall(path: path, size: bytes.count) }
        var n: UInt64 = 0
        for i in 0..<8 { n |= UInt64(bytes[i]) << (8 * UInt64(i)) }
        guard n <= SafetensorsFile.maxHeaderLength, n <= UInt64(bytes.count - 8) else {
            throw SafetensorsError.headerTooLarge(path: path, length: n, fileSize: bytes.count)
        }
        let headerBytes = UnsafeRawBufferPointer(rebasing: bytes[8..<(8 + Int(n))])
        let header: JSONValue
        do {
            header = try JSONParser(rejectDuplicateKeys: true).parse(headerBytes)
        } catch let e as JSONParseError {
            throw SafetensorsError.badHeader(path: path, reason: "\(e.message) at header byte \(e.offset)")
        }
        guard case .object(let obj) = header else {
            throw SafetensorsError.badHeader(path: path, reason: "the header is a JSON \(header.typeName), not an object")
        }
        bufferStart = 8 + Int(n)
        let bufferSize = bytes.count - bufferStart

        var meta: [String: String] = [:]
        var ents: [String: (dtype: DType, shape: [Int], begin: Int, end: Int)] = [:]
        for (name, v) in obj.entries {
            if name == "__metadata__" {
                guard case .object(let m) = v else {
                    throw SafetensorsError.badHeader(path: path, reason: "__metadata__ is not an object")
                }
                for (k, mv) in m.entries {
                    guard let s = mv.stringValue else {
                        throw SafetensorsError.badHeader(path: path, reason: "__metadata__ value of '\(k)' is not a string")
                    }
                    meta[k] = s
                }
                continue
            }
            guard case .object(let e) = v else {
                throw SafetensorsError.badEntry(path: path, tensor: name, reason: "entry is not an object")
            }
            guard let ds = e["dtype"]?.stringValue else {
                throw SafetensorsError.badEntry(path: path, tensor: name, reason: "missing or non-string dtype")
            }
            guard let dtype = DType(rawValue: ds) else {
                throw SafetensorsError.badEntry(path: path, tensor: name, reason: "unsupported dtype '\(ds)'")
            }
            guard let sa = e["shape"]?.arrayValue else {
                throw SafetensorsError.badEntry(path: path, tensor: name, reason: "missing or non-array shape")
            }
            var shape: [Int] = []
            for d in sa {
                guard case .int(let i) = d, i >= 0, i <= Int64(Int.max) else {
                    throw SafetensorsError.badEntry(path: path, tensor: name, reason: "shape \(sa.map { $0.serialized() }) has a non-integer or negative dimension")
                }
                shape.append(Int(i))
            }
            guard let off = e["data_offsets"]?.arrayValue, off.count == 2,
                  case .int(let b64) = off[0], case .int(let e64) = off[1], b64 >= 0, e64 >= b64
            else {
                throw SafetensorsError.badEntry(path: path, tensor: name, reason: "data_offsets must be [begin, end] with 0 ≤ begin ≤ end")
            }
            guard e64 <= Int64(bufferSize) else {
                throw SafetensorsError.outOfBounds(path: path, tensor: name, end: Int(clamping: e64), bufferSize: bufferSize)
            }
            guard let numel = checkedNumel(shape) else {
                throw SafetensorsError.badEntry(path: path, tensor: name, reason: "shape \(shape) overflows")
            }
            let (nbytes, ovf) = numel.multipliedReportingOverflow(by: dtype.size)
            guard !ovf, nbytes == Int(e64 - b64) else {
                throw SafetensorsError.badEntry(path: path, tensor: name,
                    reason: "holds \(e64 - b64) bytes but shape \(shape) of \(dtype.rawValue) needs \(ovf ? "too many" : String(nbytes))")
            }
            ents[name] = (dtype, shape, Int(b64), Int(e64))
        }
        // The tensors must tile the buffer: sorted by offset, no gap, no overlap, ending at the file's end.
        let sorted = ents.sorted { ($0.value.begin, $0.value.end, $0.key) < ($1.value.begin, $1.value.end, $1.key) }
        var cursor = 0
        for (name, e) in sorted {
            if e.begin > cursor {
                throw SafetensorsError.layout(path: path, reason: "a hole of \(e.begin - cursor) bytes in the data buffer before tensor '\(name)'; the file is corrupt")
            }
            if e.begin < cursor {
                throw SafetensorsError.layout(path: path, reason: "tensor '\(name)' overlaps the tensor before it in the data buffer; the file is corrupt")
            }
            cursor = e.end
        }
        if cursor != bufferSize {
            throw SafetensorsError.layout(path: path, reason: "the tensors cover \(cursor) bytes but the data buffer has \(bufferSize); the file has trailing bytes or is corrupt")
        }
        metadata = meta
        entries = ents
        names = sorted.map(\.key)
    }

    public func contains(_ name: String) -> Bool { entries[name] != nil }

    public func tensor(_ name: String) throws -> TensorView {
        guard let e = entries[name] else { throw SafetensorsError.missingTensor(path: path, tensor: name) }
        let base = file.bytes.baseAddress.map { $0 + bufferStart + e.begin }
        return TensorView(name: name, dtype: e.dtype, shape: e.shape,
                          data: UnsafeRawBufferPointer(start: base, count: e.end - e.begin), file: file)
    }

    /// Dtype and shape without touching the data.
    public func info(_ name: String) -> (dtype: DType, shape: [Int])? {
        entries[name].map { ($0.dtype, $0.shape) }
    }
}
