// ConfigFile: `--config FILE` for tools with many flags: a JSON object, or flat YAML (`key: value` lines,
// `#` comments, quoted strings), keys spelled like the flags (`batch-size` or `batch_size`). Flags win.
import Foundation
import LoRAShared

public struct ConfigFile {
    public let path: String
    var values: [String: JSONValue] = [:]

    public init(path: String) throws {
        self.path = path
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw FileError.notFound(path: path, hint: "--config expects a JSON or YAML file")
        }
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.hasPrefix("{") {
            do {
                guard let o = try JSONParser().parse(trimmed).objectValue else { throw UsageError("\(path): not a JSON object") }
                for (k, v) in o.entries { values[ConfigFile.norm(k)] = v }
            } catch let e as JSONParseError {
                throw UsageError("\(path): invalid JSON: \(e)")
            }
        } else {
            for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                var line = String(raw)
                if let h = line.firstIndex(of: "#"), !line[..<h].contains("\"") { line = String(line[..<h]) }
                line = line.trimmingCharacters(in: .whitespaces)
                if line.isEmpty || line == "---" { continue }
                guard let colon = line.firstIndex(of: ":") else {
                    throw UsageError("\(path):\(i + 1): expected `key: value` (flat YAML)")
                }
                let key = line[..<colon].trimmingCharacters(in: .whitespaces)
                var val = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                if val.isEmpty { throw UsageError("\(path):\(i + 1): '\(key)' has no value (nested YAML is not supported)") }
                let parsed: JSONValue
                if (val.hasPrefix("\"") && val.hasSuffix("\"")) || (val.hasPrefix("'") && val.hasSuffix("'")) {
                    val = String(val.dropFirst().dropLast())
                    parsed = .string(val)
                } else if val == "true" || val == "yes" { parsed = .bool(true) }
                else if val == "false" || val == "no" { parsed = .bool(false) }
                else if val == "null" || val == "~" { parsed = .null }
                else if let i = Int64(val) { parsed = .int(i) }
                else if let d = Double(val) { parsed = .double(d) }
                else { parsed = .string(val) }
                values[ConfigFile.norm(key)] = parsed
            }
        }
    }

    static func norm(_ k: String) -> String { k.replacingOccurrences(of: "_", with: "-") }

    public var keys: [String] { Array(values.keys) }

    public func int(_ k: String) throws -> Int? {
        guard let v = values[k], !v.isNull else { return nil }
        guard let i = v.intValue else { throw UsageError("\(path): '\(k)' must be an integer") }
        return Int(i)
    }
    public func double(_ k: String) throws -> Double? {
        guard let v = values[k], !v.isNull else { return nil }
        guard let d = v.doubleValue else { throw UsageError("\(path): '\(k)' must be a number") }
        return d
    }
    public func bool(_ k: String) throws -> Bool? {
        guard let v = values[k], !v.isNull else { return nil }
        guard let b = v.boolValue else { throw UsageError("\(path): '\(k)' must be true or false") }
        return b
    }
    public func string(_ k: String) throws -> String? {
        guard let v = values[k], !v.isNull else { return nil }
        guard let s = v.stringValue else { throw UsageError("\(path): '\(k)' must be a string") }
        return s
    }
}
