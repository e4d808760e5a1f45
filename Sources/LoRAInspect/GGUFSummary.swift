// GGUFSummary: lora-inspect on a llama.cpp GGUF file: version, architecture and kind, every scalar metadata
// value (arrays as their length and element type), and the tensor list (name, type, shape, bytes).
import Foundation
import LoRAFormats
import LoRAConvert

extension Inspector {
    static func hasGGUFMagic(_ path: String) -> Bool { GGUFFile.hasMagic(path) }

    static func describeGGUF(_ path: String) throws -> JSONValue {
        let f = try GGUFFile(path: path)
        var o = JSONObject()
        o["kind"] = .string("gguf")
        o["path"] = .string(path)
        o["file_bytes"] = .int(Int64(f.file.bytes.count))
        o["version"] = .int(Int64(f.version))
        o["architecture"] = f["general.architecture"]?.string.map(JSONValue.string) ?? .null
        o["type"] = .string(f["general.type"]?.string ?? "model")
        var md = JSONObject()
        for (k, v) in f.metadata { md[k] = json(v) }
        o["metadata"] = .object(md)
        var counts = JSONObject()
        for t in f.tensors { counts[t.type.name] = .int((counts[t.type.name]?.intValue ?? 0) + 1) }
        o["tensor_types"] = .object(counts)
        o["tensors"] = .array(f.tensors.map { t in
            .object(JSONObject([("name", .string(t.name)), ("type", .string(t.type.name)),
                                ("shape", .array(t.shape.map { .int(Int64($0)) })), ("bytes", .int(Int64(t.byteCount)))]))
        })
        return .object(o)
    }

    /// A metadata value as JSON; an array longer than 8 is summarized as {"array": type, "length": n}.
    static func json(_ v: GGUFValue) -> JSONValue {
        switch v {
        case .bool(let b): return .bool(b)
        case .string(let s): return .string(s)
        case .f32, .f64: return v.float.map { $0.isFinite ? .double($0) : .null } ?? .null
        case .u64(let x): return Int64(exactly: x).map(JSONValue.int) ?? .double(Double(x))
        case .array(let a):
            if a.count <= 8 { return .array(a.map(json)) }
            let kind: String
            switch a[0] { case .string: kind = "string"; case .f32, .f64: kind = "float"; case .bool: kind = "bool"; default: kind = "int" }
            return .object(JSONObject([("array", .string(kind)), ("length", .int(Int64(a.count)))]))
        default: return v.int.map { .int(Int64($0)) } ?? .null
        }
    }
}
