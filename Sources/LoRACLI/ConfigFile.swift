// ConfigFile: `--config FILE`, a run config shared by lora-init, lora-train, lora-eval and the pipelines. YAML (through
// Yams/libyaml: comments, nested sections, lists, anchors, merge keys) or JSON; sections mirror the flag groups
// (RunConfig.sections: lora, data, training, eval, compute), and flat `key: value` files and training_config.json
// still work. Every key of the file is checked against the one table of all tools' keys (RunConfig.keys): a key that
// belongs to no tool is a usage error naming the key and the closest valid one, so a typo never trains at a default
// silently; each tool then reads its own keys and leaves the others' alone. Flags win over the file.
import Foundation
import LoRAShared
import Yams

public final class ConfigFile {
    public let path: String
    /// The tool reading the file (its keys are the ones looked up).
    public let tool: String
    /// Values by qualified key ("training.lr"; top-level keys and flat ones by their name), with their line.
    private var values: [String: (value: JSONValue, line: Int?)] = [:]

    /// A config file bigger than this is not a config file.
    static let maxBytes = 1 << 20
    /// Nodes a file may expand to through aliases (a "billion laughs" file is refused, not expanded).
    static let maxNodes = 100_000

    public init(path: String, tool: String) throws {
        self.path = path
        self.tool = tool
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw FileError.notFound(path: path, hint: "--config expects a YAML or JSON run config (see pipelines/run.example.yaml)")
        }
        guard data.count <= ConfigFile.maxBytes else {
            throw UsageError("\(path): \(data.count) bytes is too large for a config file (at most \(ConfigFile.maxBytes))")
        }
        guard let text = String(data: data, encoding: .utf8) else { throw UsageError("\(path): not UTF-8 text") }
        let top: [(key: String, value: Tree, line: Int?)]
        if text.drop(while: { $0.isWhitespace }).hasPrefix("{") {
            let v: JSONValue
            do { v = try JSONParser().parse(text) } catch { throw UsageError("\(path): invalid JSON: \(error)") }
            guard let o = v.objectValue else { throw UsageError("\(path): not a JSON object") }
            top = o.entries.map { ($0.key, Tree(json: $0.value), nil) }
        } else {
            top = try ConfigFile.parseYAML(text, path: path)
        }
        try load(top)
    }

    /// A parsed value: a scalar (with its text and whether it was quoted), a list or a mapping.
    indirect enum Tree {
        case scalar(String, quoted: Bool, json: JSONValue?)
        case list([Tree])
        case map([(key: String, value: Tree, line: Int?)])

        init(json v: JSONValue) {
            switch v {
            case .array(let a): self = .list(a.map { Tree(json: $0) })
            case .object(let o): self = .map(o.entries.map { ($0.key, Tree(json: $0.value), nil) })
            case .string(let s): self = .scalar(s, quoted: true, json: v)
            default: self = .scalar(v.serialized(), quoted: false, json: v)
            }
        }
    }

    static func parseYAML(_ text: String, path: String) throws -> [(key: String, value: Tree, line: Int?)] {
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch {
            throw UsageError("\(path): invalid YAML: " + "\(error)".split(separator: "\n").joined(separator: " "))
        }
        guard let root else { return [] }  // an empty file (or only comments)
        var budget = maxNodes
        func tree(_ n: Node) throws -> Tree {
            budget -= 1
            guard budget >= 0 else { throw UsageError("\(path): the file expands to more than \(maxNodes) values (through aliases); it is not a run config") }
            switch n {
            case .scalar(let s):
                return .scalar(s.string, quoted: s.style != .plain && s.style != .any, json: nil)
            case .sequence(let seq):
                return .list(try seq.map(tree))
            case .mapping(let m):
                var out: [(key: String, value: Tree, line: Int?)] = []
                var merged: [(key: String, value: Tree, line: Int?)] = []
                for (k, v) in m {
                    guard case .scalar(let ks) = k else {
                        throw UsageError("\(path):\(k.mark?.line ?? 0): a key must be a plain name")
                    }
                    if ks.string == "<<" && ks.style == .plain {  // a merge key: the mapping(s) it names, under the explicit keys
                        let sources: [Node] = v.sequence.map(Array.init) ?? [v]
                        for src in sources {
                            guard case .map(let entries) = try tree(src) else {
                                throw UsageError("\(path):\(v.mark?.line ?? 0): '<<' must name a mapping (an anchor of a section)")
                            }
                            merged += entries
                        }
                        continue
                    }
                    out.append((ks.string, try tree(v), k.mark?.line))
                }
                for e in merged where !out.contains(where: { $0.key == e.key }) { out.append(e) }
                return .map(out)
            case .alias(let a):
                throw UsageError("\(path):\(a.mark?.line ?? 0): an unresolved alias")
            }
        }
        guard case .map(let top) = try tree(root) else {
            throw UsageError("\(path): a run config is a mapping of keys (and sections) to values, not a \(root.sequence != nil ? "list" : "single value")")
        }
        return top
    }

    static func norm(_ k: String) -> String { k.replacingOccurrences(of: "_", with: "-") }

    private func load(_ top: [(key: String, value: Tree, line: Int?)]) throws {
        let sectionNames = RunConfig.sections.map(\.name)
        for (rawKey, value, line) in top {
            let k = ConfigFile.norm(rawKey)
            if sectionNames.contains(k), case .map(let entries) = value {
                for (rk, v, l) in entries {
                    let name = ConfigFile.norm(rk)
                    guard let key = RunConfig.keys.first(where: { $0.section == k && $0.name == name }) else {
                        throw unknown(name, spelled: rk, section: k, line: l ?? line)
                    }
                    values[key.qualified] = (try convert(v, key, spelled: "\(k).\(rk)", line: l ?? line), l ?? line)
                }
                continue
            }
            if RunConfig.recordOnly.contains(k) {
                guard case .scalar = value else { throw UsageError("\(where_(line)) '\(rawKey)' must be a single value") }
                continue
            }
            // A top-level key: a flat one (any tool's, by its flat name) or a top-level key of the table.
            guard let key = RunConfig.keys.first(where: { ($0.section.isEmpty && $0.name == k) || $0.flat == k }) else {
                if sectionNames.contains(k) {
                    throw UsageError("\(where_(line)) '\(rawKey)' is a section: give it keys (e.g. \(rawKey):\\n  \(RunConfig.keys.first { $0.section == k }!.name): ...)")
                }
                throw unknown(k, spelled: rawKey, section: "", line: line)
            }
            values[key.flat] = (try convert(value, key, spelled: rawKey, line: line), line)
        }
    }

    private func where_(_ line: Int?) -> String { line.map { "\(path):\($0):" } ?? "\(path):" }

    /// The error for a key that belongs to no tool (in `section`): the section it belongs in, a common name from
    /// another trainer, or the closest valid key.
    private func unknown(_ k: String, spelled: String, section: String, line: Int?) -> UsageError {
        let place = section.isEmpty ? "" : " in section '\(section)'"
        if let elsewhere = RunConfig.keys.first(where: { $0.name == k && $0.section != section }) {
            return UsageError("\(where_(line)) '\(spelled)'\(place) belongs in \(elsewhere.section.isEmpty ? "the top level" : "section '\(elsewhere.section)'") (\(elsewhere.tools.joined(separator: ", ")))")
        }
        if let a = ConfigFile.aliases[k], let key = RunConfig.keys.first(where: { $0.qualified == a }) {
            let hint = key.section.isEmpty || key.section == section ? key.name : "\(key.name)' in section '\(key.section)"
            return UsageError("\(where_(line)) unknown key '\(spelled)'\(place); did you mean '\(hint)'?")
        }
        let candidates = section.isEmpty
            ? RunConfig.keys.filter { $0.section.isEmpty }.map(\.name) + RunConfig.sections.map(\.name) + RunConfig.keys.map(\.flat)
            : RunConfig.keys.filter { $0.section == section }.map(\.name)
        if let best = candidates.min(by: { (editDistance(k, $0), $0) < (editDistance(k, $1), $1) }), editDistance(k, best) <= max(2, k.count / 3) {
            return UsageError("\(where_(line)) unknown key '\(spelled)'\(place); did you mean '\(best)'?")
        }
        return UsageError("\(where_(line)) unknown key '\(spelled)'\(place); valid keys: \(Set(candidates).sorted().joined(separator: ", "))")
    }

    /// A value as the key's kind: numbers written as YAML 1.1 leaves them (`2e-4` is a string there) are numbers.
    private func convert(_ t: Tree, _ key: RunConfig.Key, spelled: String, line: Int?) throws -> JSONValue {
        let bad = UsageError("\(where_(line)) '\(spelled)' must be \(key.kind == .int ? "an integer" : key.kind == .list ? "a list of names (or a comma list)" : key.kind == .bool ? "true or false" : "a \(key.kind.rawValue)")")
        if case .list(let items) = t {
            guard key.kind == .list else { throw bad }
            let names = try items.map { item -> String in
                guard case .scalar(let s, _, _) = item, !s.isEmpty, !s.contains(",") else { throw bad }
                return s
            }
            guard !names.isEmpty else { throw bad }
            return .string(names.joined(separator: ","))
        }
        guard case .scalar(let s, let quoted, let json) = t else { throw bad }
        let plainNull = !quoted && ["", "~", "null", "Null", "NULL"].contains(s)
        if json?.isNull ?? plainNull { return .null }
        switch key.kind {
        case .string, .list:
            return .string(s)
        case .bool:
            if let b = json?.boolValue { return .bool(b) }
            guard json == nil else { throw bad }
            switch s.lowercased() {
            case "true", "yes", "on": return .bool(true)
            case "false", "no", "off": return .bool(false)
            default: throw bad
            }
        case .int:
            if let j = json, let i = j.intValue { return .int(i) }
            guard json == nil || json?.stringValue != nil, let i = Int64(s.replacingOccurrences(of: "_", with: "")) else { throw bad }
            return .int(i)
        case .number:
            if let j = json, let d = j.doubleValue { return .double(d) }
            guard json == nil || json?.stringValue != nil, let d = Double(s.replacingOccurrences(of: "_", with: "")), d.isFinite else { throw bad }
            return .double(d)
        }
    }

    /// The value the file gives this tool's `flag`: the first key of the table this tool reads for it that the file
    /// sets (in a section), else the flat spelling.
    private func lookup(_ flag: String) -> JSONValue? {
        // The tool's own section first (eval.seq-len before data.seq-len for lora-eval), then the table's order.
        let own = ["lora-init": "lora", "lora-train": "training", "lora-eval": "eval"][tool]
        let mine = RunConfig.keys.filter { $0.flag == flag && $0.tools.contains(tool) }.enumerated()
            .sorted { ($0.element.section == own ? 0 : 1, $0.offset) < ($1.element.section == own ? 0 : 1, $1.offset) }.map(\.element)
        precondition(!mine.isEmpty, "\(tool) looks up '\(flag)', which RunConfig.keys does not give it")
        for k in mine { if let v = values[k.qualified], !k.section.isEmpty { return v.value.isNull ? nil : v.value } }
        for k in mine { if let v = values[k.flat] { return v.value.isNull ? nil : v.value } }
        return nil
    }

    public func int(_ flag: String) throws -> Int? { lookup(flag)?.intValue.map { Int(clamping: $0) } }
    public func double(_ flag: String) throws -> Double? { lookup(flag)?.doubleValue }
    public func bool(_ flag: String) throws -> Bool? { lookup(flag)?.boolValue }
    public func string(_ flag: String) throws -> String? { lookup(flag)?.stringValue }

    /// Whether the file sets a key of another tool (e.g. lora.rank for lora-train), for cross-checks.
    public func other(_ qualified: String) -> JSONValue? {
        guard let k = RunConfig.keys.first(where: { $0.qualified == qualified }) else { return nil }
        return (values[k.qualified] ?? (k.section.isEmpty ? nil : values[k.flat]))?.value
    }

    /// Common names from other trainers (transformers' TrainingArguments, PEFT's LoraConfig, axolotl, mlx-lm) and
    /// the key to write instead.
    static let aliases: [String: String] = [
        "learning-rate": "training.lr", "num-train-epochs": "training.epochs", "num-epochs": "training.epochs",
        "per-device-train-batch-size": "training.batch-size", "micro-batch-size": "training.batch-size",
        "train-batch-size": "training.batch-size", "gradient-accumulation-steps": "training.grad-accum",
        "max-seq-length": "data.seq-len", "sequence-len": "data.seq-len", "max-length": "data.seq-len", "cutoff-len": "data.seq-len",
        "max-seq-len": "data.seq-len", "lora-dropout": "lora.dropout", "output-dir": "output", "train-file": "data.train",
        "dataset": "data.train", "validation-file": "data.valid", "eval-file": "data.valid", "lr-scheduler-type": "training.lr-schedule",
        "lr-scheduler": "training.lr-schedule", "gradient-checkpointing": "training.grad-checkpoint", "warmup": "training.warmup-steps",
        "logging-steps": "training.log-every", "save-steps": "training.save-every", "eval-steps": "training.eval-every",
        "save-total-limit": "training.keep-last", "r": "lora.rank", "lora-r": "lora.rank", "lora-rank": "lora.rank",
        "lora-alpha": "lora.alpha", "target-modules": "lora.targets", "lora-target-modules": "lora.targets",
        "iters": "training.max-steps", "max-steps": "training.max-steps", "use-rslora": "lora.rslora",
    ]
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
