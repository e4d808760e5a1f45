// TokenizerError: what can be wrong with a tokenizer.json / tokenizer_config.json, each message naming
// the file, the key path and the fix; plus the typed JSON accessors the tokenizer parsers share (docs/formats.md §5).
import Foundation

public enum TokenizerError: Error, CustomStringConvertible {
    case missing(path: String)
    case cannotRead(path: String, reason: String)
    case invalidJSON(path: String, reason: String)
    case missingKey(path: String, key: String)
    case badValue(path: String, key: String, reason: String)
    case unsupportedModel(path: String, type: String)
    case unsupported(path: String, key: String, type: String, supported: [String])
    case unknownMergeToken(path: String, index: Int, token: String)
    case badRegex(path: String, key: String, pattern: String, reason: String)
    /// A regex of the file ran past SplitPattern's limits on a piece of text.
    case regexLimit(path: String, key: String, pattern: String, reason: String)

    public var description: String {
        switch self {
        case .missing(let p):
            return "\(p): not found; a model folder needs the tokenizer.json that a fast tokenizer's save_pretrained writes"
        case .cannotRead(let p, let r): return "\(p): cannot read: \(r)"
        case .invalidJSON(let p, let r): return "\(p): invalid JSON: \(r)"
        case .missingKey(let p, let k): return "\(p): missing required key \"\(k)\""
        case .badValue(let p, let k, let r): return "\(p): \"\(k)\": \(r)"
        case .unsupportedModel(let p, let t): return "\(p): tokenizer model '\(t)' is not supported (BPE only)"
        case .unsupported(let p, let k, let t, let s):
            return "\(p): \"\(k)\": type '\(t)' is not supported; supported: \(s.joined(separator: ", "))"
        case .unknownMergeToken(let p, let i, let t):
            return "\(p): \"model.merges[\(i)]\" names '\(t)', which is not in model.vocab; the file is corrupt or truncated"
        case .badRegex(let p, let k, let pat, let r): return "\(p): \"\(k)\": regex \(pat) does not compile: \(r)"
        case .regexLimit(let p, let k, let pat, let r):
            return "\(p): \"\(k)\": regex \(pat) exceeded its limit: \(r); simplify the pattern or use a trusted tokenizer.json"
        }
    }
}

/// Typed access to one JSON object of a tokenizer file; errors carry the file and the key path.
package struct TokenizerJSON {
    let path: String  // the file, for messages
    let keyPath: String  // e.g. "pre_tokenizer.pretokenizers[1]"
    let object: JSONObject

    init(_ value: JSONValue, path: String, keyPath: String) throws {
        guard case .object(let o) = value else {
            throw TokenizerError.badValue(path: path, key: keyPath, reason: "expected an object, got a \(value.typeName)")
        }
        self.path = path
        self.keyPath = keyPath
        object = o
    }

    func key(_ k: String) -> String { keyPath.isEmpty ? k : keyPath + "." + k }

    func has(_ k: String) -> Bool { if let v = object[k], !v.isNull { return true }; return false }

    func type() throws -> String { try string("type") }

    func string(_ k: String) throws -> String {
        guard let v = object[k], !v.isNull else { throw TokenizerError.missingKey(path: path, key: key(k)) }
        guard let s = v.stringValue else { throw bad(k, "expected a string, got a \(v.typeName)") }
        return s
    }

    func optionalString(_ k: String) throws -> String? {
        guard let v = object[k], !v.isNull else { return nil }
        guard let s = v.stringValue else { throw bad(k, "expected a string or null, got a \(v.typeName)") }
        return s
    }

    func bool(_ k: String, default d: Bool) throws -> Bool {
        guard let v = object[k], !v.isNull else { return d }
        guard let b = v.boolValue else { throw bad(k, "expected true or false, got a \(v.typeName)") }
        return b
    }

    func int(_ k: String, default d: Int? = nil) throws -> Int {
        guard let v = object[k], !v.isNull else {
            if let d { return d }
            throw TokenizerError.missingKey(path: path, key: key(k))
        }
        guard let i = v.intValue, i >= 0, i < Int64(Int32.max) else { throw bad(k, "expected a non-negative integer") }
        return Int(i)
    }

    func array(_ k: String) throws -> [JSONValue] {
        guard let v = object[k], !v.isNull else { throw TokenizerError.missingKey(path: path, key: key(k)) }
        guard let a = v.arrayValue else { throw bad(k, "expected an array, got a \(v.typeName)") }
        return a
    }

    func child(_ k: String) throws -> TokenizerJSON {
        guard let v = object[k], !v.isNull else { throw TokenizerError.missingKey(path: path, key: key(k)) }
        return try TokenizerJSON(v, path: path, keyPath: key(k))
    }

    /// The elements of an array of objects, each with its indexed key path.
    func children(_ k: String) throws -> [TokenizerJSON] {
        try array(k).enumerated().map { try TokenizerJSON($1, path: path, keyPath: key(k) + "[\($0)]") }
    }

    /// A `pattern` field: {"String": "..."} (a literal) or {"Regex": "..."}.
    func pattern(_ k: String = "pattern") throws -> (text: String, isRegex: Bool) {
        let p = try child(k)
        if let s = p.object["String"]?.stringValue { return (s, false) }
        if let r = p.object["Regex"]?.stringValue { return (r, true) }
        throw bad(k, "expected {\"String\": ...} or {\"Regex\": ...}")
    }

    func bad(_ k: String, _ reason: String) -> TokenizerError {
        TokenizerError.badValue(path: path, key: key(k), reason: reason)
    }

    func unsupported(_ type: String, supported: [String]) -> TokenizerError {
        TokenizerError.unsupported(path: path, key: key("type"), type: type, supported: supported)
    }
}
