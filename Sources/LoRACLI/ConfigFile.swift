// ConfigFile: `--config FILE` for tools with many flags: a JSON object, or flat YAML (`key: value` lines,
// `#` comments, quoted strings), keys spelled like the flags (`batch-size` or `batch_size`). Flags win; a key no
// flag reads is a usage error naming the closest valid key (a typo must not train at a default silently).
import Foundation
import LoRAShared

public final class ConfigFile {
    public let path: String
    var values: [String: JSONValue] = [:]
    /// Every key a tool has looked up: the keys it understands.
    private(set) var known: Set<String> = []

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
        known.insert(k)
        guard let v = values[k], !v.isNull else { return nil }
        guard let i = v.intValue else { throw UsageError("\(path): '\(k)' must be an integer") }
        return Int(i)
    }
    public func double(_ k: String) throws -> Double? {
        known.insert(k)
        guard let v = values[k], !v.isNull else { return nil }
        guard let d = v.doubleValue else { throw UsageError("\(path): '\(k)' must be a number") }
        return d
    }
    public func bool(_ k: String) throws -> Bool? {
        known.insert(k)
        guard let v = values[k], !v.isNull else { return nil }
        guard let b = v.boolValue else { throw UsageError("\(path): '\(k)' must be true or false") }
        return b
    }
    public func string(_ k: String) throws -> String? {
        known.insert(k)
        guard let v = values[k], !v.isNull else { return nil }
        guard let s = v.stringValue else { throw UsageError("\(path): '\(k)' must be a string") }
        return s
    }

    /// Common names from other trainers (transformers' TrainingArguments, PEFT's LoraConfig, axolotl) and what
    /// to write instead.
    static let aliases: [String: String] = [
        "learning-rate": "lr", "num-train-epochs": "epochs", "num-epochs": "epochs",
        "per-device-train-batch-size": "batch-size", "micro-batch-size": "batch-size", "train-batch-size": "batch-size",
        "gradient-accumulation-steps": "grad-accum", "max-seq-length": "seq-len", "sequence-len": "seq-len",
        "max-length": "seq-len", "cutoff-len": "seq-len", "lora-dropout": "dropout", "output-dir": "output",
        "train-file": "data", "dataset": "data", "validation-file": "valid", "eval-file": "valid",
        "lr-scheduler-type": "lr-schedule", "lr-scheduler": "lr-schedule", "gradient-checkpointing": "grad-checkpoint",
        "warmup": "warmup-steps", "logging-steps": "log-every",
        "save-steps": "save-every", "eval-steps": "eval-every", "save-total-limit": "keep-last",
        "r": "lora-init --rank (the rank is the adapter's)", "rank": "lora-init --rank (the rank is the adapter's)",
        "lora-r": "lora-init --rank (the rank is the adapter's)", "lora-alpha": "lora-init --alpha (alpha is the adapter's)",
        "alpha": "lora-init --alpha (alpha is the adapter's)", "target-modules": "lora-init --targets (targets are the adapter's)",
    ]

    /// Refuses any key no lookup asked for (call after reading everything), naming the closest known key.
    public func rejectUnknown() throws {
        let unknown = values.keys.filter { !known.contains($0) }.sorted()
        guard let k = unknown.first else { return }
        var hint: String
        if let a = ConfigFile.aliases[k] {
            hint = a.contains(" ") ? "; use \(a)" : "; did you mean '\(a)'?"
        } else if let best = known.min(by: { (editDistance(k, $0), $0) < (editDistance(k, $1), $1) }), editDistance(k, best) <= max(2, k.count / 3) {
            hint = "; did you mean '\(best)'?"
        } else {
            hint = "; valid keys: " + known.sorted().joined(separator: ", ")
        }
        if unknown.count > 1 { hint += " (also unknown: \(unknown.dropFirst().joined(separator: ", ")))" }
        throw UsageError("\(path): unknown key '\(k)'\(hint)")
    }
}

/// Levenshtein distance, for "did you mean" hints.
func editDistance(_ a: String, _ b: String) -> Int {
    let x = Array(a.utf8), y = Array(b.utf8)
    if x.isEmpty || y.isEmpty { return max(x.count, y.count) }
    var prev = Array(0...y.count), cur = [Int](repeating: 0, count: y.count + 1)
    for i in 1...x.count {
        cur[0] = i
        for j in 1...y.count { cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x[i - 1] == y[j - 1] ? 0 : 1)) }
        swap(&prev, &cur)
    }
    return prev[y.count]
}
