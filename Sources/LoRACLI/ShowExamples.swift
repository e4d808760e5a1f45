// ShowExamples: `--show-examples N` of lora-train and lora-eval. Builds the first N examples exactly as the tool
// would (the same ExampleBuilder, vocabulary and scored-token checks, truncation at --seq-len, packing in the first
// epoch's order for lora-train, windows for lora-eval) and renders them: as text, with the trained tokens marked, or
// as JSON lines with ids, token strings and labels as the loss uses them. Writes nothing but stdout and stderr.
import ArgumentParser
import Foundation
import LoRAShared

public enum ShowFormat: String, ExpressibleByArgument, Sendable, CaseIterable {
    case text, jsonl
}

/// One shown unit: the tokens the loss sees for one example (lora-eval: one window of a long text row).
public struct ShownExample: Sendable {
    /// 1-based example number, in the order shown.
    public var index: Int
    public var line: Int
    public var format: DataFormat
    /// The ids the model sees (after truncation at --seq-len).
    public var ids: [Int32]
    /// Per position, the id the loss scores there, or -100. Position 0 is never scored: each position predicts
    /// the next, and nothing predicts the first token (of an example, or of a packed example).
    public var labels: [Int32]
    /// Tokens of the example before truncation.
    public var fullLength: Int
    public var truncated: Bool
    /// Tokens cut off by --seq-len (lora-eval: 0 for text rows, which are scored in windows instead).
    public var dropped: Int
    /// lora-eval: window w of W of a text row longer than --seq-len.
    public var window: Int? = nil, windows: Int? = nil
    /// lora-train --packing: the packed sequence (1-based, first epoch) and the lines of the other examples in it.
    public var sequence: Int? = nil
    public var packedWith: [Int] = []
    /// Why the tool would refuse this example (it scores nothing), or nil.
    public var unusable: String? = nil
    public var trained: Int { labels.reduce(0) { $0 + ($1 >= 0 ? 1 : 0) } }
}

public enum ShowExamples {
    /// Labels as the loss reads them: the target ids where the example trains, -100 elsewhere and at position 0.
    static func labels(_ ids: [Int32], _ targets: ArraySlice<Bool>) -> [Int32] {
        var l = zip(ids, targets).map { $1 ? $0 : -100 }
        if !l.isEmpty { l[0] = -100 }
        return l
    }

    /// Builds one example as the tools do; a row the tool refuses outright (unreadable, foreign vocabulary) throws,
    /// one that only scores nothing comes back with `unusable` set.
    static func build(_ b: ExampleBuilder, _ r: JSONLRecord, vocab: Int, seqLen: Int, path: String) throws -> (Example, String?) {
        let e = try b.build(r)
        try e.checkVocabulary(vocab, path: path)
        do { try e.checkScored(seqLen: seqLen, path: path) } catch { return (e, "\(error)") }
        return (e, nil)
    }

    /// lora-train's view: the first `count` examples, truncated at `seqLen`; with packing, in the order the first
    /// epoch packs them. Returns the units and whether the data has an example that trains anything.
    public static func trainExamples(_ file: JSONLFile, tokenizer: Tokenizer, maskPrompt: Bool?, seqLen: Int, vocab: Int,
                                     packing: Bool, seed: UInt64, skipBad: Bool, count: Int) throws -> (units: [ShownExample], usable: Bool) {
        let builder = try ExampleBuilder(tokenizer: tokenizer, maskPrompt: maskPrompt, path: file.path, maxTokens: seqLen)
        func unit(_ e: Example, _ index: Int, unusable: String?) -> ShownExample {
            let s = Batching.sequence(e, seqLen: seqLen)
            return ShownExample(index: index, line: e.line, format: e.format, ids: s.ids, labels: labels(s.ids, e.targets.prefix(s.ids.count)),
                                fullLength: e.ids.count, truncated: e.ids.count > seqLen, dropped: max(0, e.ids.count - seqLen),
                                unusable: unusable)
        }
        var out: [ShownExample] = []
        if !packing {
            let (first, usable) = try firstExamples(file, builder, vocab: vocab, seqLen: seqLen, skipBad: skipBad, count: count)
            for (e, why, _) in first { out.append(unit(e, out.count + 1, unusable: why)) }
            return (out, usable)
        }
        // Packing needs every example: the first epoch shuffles them all, then packs them as Batching.epoch does.
        var kept: [Example] = []
        for r in file.records {
            let (e, why) = try build(builder, r, vocab: vocab, seqLen: seqLen, path: file.path)
            if let w = why {
                Log.warn(skipBad ? "skipped \(w)" : "\(w) (lora-train stops here; --skip-bad-lines drops it)")
                continue
            }
            kept.append(e)
        }
        let order = Batching.permutation(kept.count, seed: seed, salt: 1)  // epoch 0
        let groups = Batching.packGroups(order, lengths: { min(kept[$0].ids.count, seqLen) }, seqLen: seqLen)
        for (g, members) in groups.enumerated() {
            for i in members {
                if out.count == count { return (out, true) }
                var u = unit(kept[i], out.count + 1, unusable: nil)
                u.sequence = g + 1
                u.packedWith = members.filter { $0 != i }.map { kept[$0].line }
                out.append(u)
            }
        }
        return (out, !kept.isEmpty)
    }

    /// The first `count` examples of `file` (each with its record and why it scores nothing, if it does not; dropped
    /// with a warning under skipBad), and whether any row of the file scores something: when every example shown
    /// scores nothing, the rows after them are built until one does.
    static func firstExamples(_ file: JSONLFile, _ builder: ExampleBuilder, vocab: Int, seqLen: Int, skipBad: Bool,
                              count: Int) throws -> (examples: [(Example, String?, JSONLRecord)], usable: Bool) {
        var out: [(Example, String?, JSONLRecord)] = [], usable = false
        for r in file.records {
            if out.count == count {
                if usable { break }
                if let b = try? build(builder, r, vocab: vocab, seqLen: seqLen, path: file.path), b.1 == nil { usable = true; break }
                continue
            }
            let (e, why) = try build(builder, r, vocab: vocab, seqLen: seqLen, path: file.path)
            if let w = why, skipBad { Log.warn("skipped \(w)"); continue }
            if why == nil { usable = true }
            out.append((e, why, r))
        }
        return (out, usable)
    }

    /// lora-eval's view: the first `count` examples as the evaluator scores them (a chat or prompt row cut at
    /// `seqLen`; a longer text row in windows advancing by `stride`).
    public static func evalExamples(_ file: JSONLFile, tokenizer: Tokenizer, maskPrompt: Bool?, seqLen: Int, stride: Int?, vocab: Int,
                                    skipBad: Bool, count: Int) throws -> (units: [ShownExample], usable: Bool) {
        let builder = try ExampleBuilder(tokenizer: tokenizer, maskPrompt: maskPrompt, path: file.path, maxTokens: seqLen)
        var out: [ShownExample] = []
        var shown = 0
        let (first, usable) = try firstExamples(file, builder, vocab: vocab, seqLen: seqLen, skipBad: skipBad, count: count)
        for (e, why, _) in first {
            shown += 1
            let (ws, cut) = Evaluator.windows(e, EvalOptions(seqLen: seqLen, stride: stride))
            for (k, w) in ws.enumerated() {
                var l = w.labels
                if !l.isEmpty { l[0] = -100 }
                var u = ShownExample(index: shown, line: e.line, format: e.format, ids: w.ids, labels: l, fullLength: e.ids.count,
                                     truncated: cut, dropped: cut ? e.ids.count - w.ids.count : 0, unusable: why)
                if ws.count > 1 { u.window = k + 1; u.windows = ws.count }
                out.append(u)
            }
        }
        return (out, usable)
    }

    // MARK: rendering

    static func tokenString(_ t: Tokenizer, _ id: Int32) -> String { t.idToToken(Int(id)) ?? "<\(id)>" }

    /// Maximal runs of positions with the same trained / masked state.
    static func runs(_ labels: [Int32]) -> [(range: Range<Int>, trained: Bool)] {
        var out: [(Range<Int>, Bool)] = []
        var start = 0
        for k in 1...labels.count where k == labels.count || (labels[k] >= 0) != (labels[start] >= 0) {
            out.append((start..<k, labels[start] >= 0))
            start = k
        }
        return labels.isEmpty ? [] : out
    }

    /// Warnings a reader of the examples should see: nothing trained, or a trained assistant / completion run that
    /// does not end with the end-of-turn token (cut by --seq-len, or a tokenizer without an EOS).
    static func warnings(_ u: ShownExample, tokenizer: Tokenizer, tool: String) -> [String] {
        var w: [String] = []
        let name = "example \(u.index) (line \(u.line))"
        if u.trained == 0 {
            w.append("\(name) has 0 trained tokens" + (u.unusable.map { ": \($0)" } ?? ""))
        }
        // Text rows train on everything and need no end-of-turn; a row trained in full (--mask-prompt false)
        // has no turns to check.
        guard u.format != .text, u.labels.contains(-100) && u.labels.dropFirst().contains(where: { $0 < 0 }) else { return w }
        let eos = tokenizer.eosTokenId.map { Int32($0) }
        for (r, trained) in runs(u.labels) where trained {
            if eos == nil || u.ids[r.upperBound - 1] != eos! {
                let end = eos.map { "the end-of-turn token \(tokenString(tokenizer, $0))" } ?? "an end-of-turn token (the tokenizer has no EOS)"
                let why = r.upperBound == u.ids.count && u.truncated ? " (cut by --seq-len)" : ""
                w.append("\(name): a trained turn ends at position \(r.upperBound - 1) without \(end)\(why); the model will not learn to stop there")
                break
            }
        }
        return w
    }

    /// The text of `ids`, special tokens spelled out.
    static func decoded(_ t: Tokenizer, _ ids: ArraySlice<Int32>) -> String {
        t.decode(ids.map { Int($0) }, skipSpecialTokens: false)
    }

    /// Prints `shown` (from trainExamples / evalExamples) on stdout, warnings on stderr. Data in which no example
    /// trains anything is an error naming the file.
    public static func render(_ shown: (units: [ShownExample], usable: Bool), requested: Int, tokenizer: Tokenizer, seqLen: Int,
                              format: ShowFormat, tool: String, path: String, color: Bool) throws {
        let units = shown.units
        guard shown.usable, !units.isEmpty else {
            throw DataError.noUsableExamples(path: path, reason: units.isEmpty
                ? "no example to show"
                : "no example has a trained token (every target is masked or cut off by --seq-len \(seqLen))")
        }
        let examples = Set(units.map(\.index)).count
        var warned = 0
        for u in units { for w in warnings(u, tokenizer: tokenizer, tool: tool) { Log.warn(w); warned += 1 } }
        let tokens = units.reduce(0) { $0 + $1.ids.count }, trained = units.reduce(0) { $0 + $1.trained }
        let truncated = Set(units.filter(\.truncated).map(\.index)).count
        let share = tokens > 0 ? Double(trained) / Double(tokens) : 0
        if examples < requested {
            Log.warn("\(path): asked for \(requested) examples, the data has only \(examples) to show")
        }
        switch format {
        case .jsonl:
            for u in units {
                var o = JSONObject()
                o["example"] = .int(Int64(u.index)); o["line"] = .int(Int64(u.line)); o["format"] = .string(u.format.rawValue)
                if let w = u.window, let n = u.windows { o["window"] = .int(Int64(w)); o["windows"] = .int(Int64(n)) }
                o["ids"] = .array(u.ids.map { .int(Int64($0)) })
                o["tokens"] = .array(u.ids.map { .string(tokenString(tokenizer, $0)) })
                o["labels"] = .array(u.labels.map { .int(Int64($0)) })
                o["length"] = .int(Int64(u.ids.count)); o["trained"] = .int(Int64(u.trained))
                o["truncated"] = .bool(u.truncated); o["dropped"] = .int(Int64(u.dropped))
                if let s = u.sequence { o["sequence"] = .int(Int64(s)); o["packed_with"] = .array(u.packedWith.map { .int(Int64($0)) }) }
                if let why = u.unusable { o["unusable"] = .string(why) }
                emitJSON(.object(o))
            }
            var s = JSONObject()
            s["summary"] = .bool(true); s["examples"] = .int(Int64(examples)); s["requested"] = .int(Int64(requested))
            s["tokens"] = .int(Int64(tokens)); s["trained"] = .int(Int64(trained)); s["truncated"] = .int(Int64(truncated))
            s["trained_share"] = .double((share * 1e4).rounded() / 1e4); s["seq_len"] = .int(Int64(seqLen)); s["warnings"] = .int(Int64(warned))
            emitJSON(.object(s))
        case .text:
            FileHandle.standardOutput.write(Data(text(units, requested: requested, tokenizer: tokenizer, seqLen: seqLen, color: color).utf8))
        }
    }

    /// The human rendering: headers, the text with trained runs marked (ANSI when `color`, else «…»), truncation
    /// and packing lines, the summary line.
    package static func text(_ units: [ShownExample], requested: Int, tokenizer: Tokenizer, seqLen: Int, color: Bool) -> String {
        let examples = Set(units.map(\.index)).count
        let tokens = units.reduce(0) { $0 + $1.ids.count }, trained = units.reduce(0) { $0 + $1.trained }
        let truncated = Set(units.filter(\.truncated).map(\.index)).count
        let share = tokens > 0 ? Double(trained) / Double(tokens) : 0
        var out = ""
        let (on, off, dim) = color ? ("\u{1B}[1;32m", "\u{1B}[0m", "\u{1B}[2m") : ("«", "»", "")
        for (n, u) in units.enumerated() {
            var head = "=== example \(u.index) · line \(u.line) · \(u.format.rawValue)"
            if let w = u.window, let c = u.windows { head += " · window \(w) of \(c)" }
            head += " · \(u.ids.count) tokens · \(u.trained) trained · truncated \(u.truncated ? "yes" : "no")"
            if let s = u.sequence {
                head += " · packed in sequence \(s)" + (u.packedWith.isEmpty ? " alone" : " with line" + (u.packedWith.count > 1 ? "s " : " ")
                    + u.packedWith.map(String.init).joined(separator: ", "))
            }
            out += head + "\n"
            for (r, t) in runs(u.labels) {
                let s = decoded(tokenizer, u.ids[r])
                out += t ? on + s + off : (color ? dim + s + off : s)
            }
            out += "\n"
            if u.truncated && u.dropped > 0 { out += "[truncated at --seq-len \(seqLen): \(u.dropped) tokens dropped]\n" }
            if let s = u.sequence, n + 1 < units.count, units[n + 1].sequence == s { out += "[next example packed here]\n" }
            out += "\n"
        }
        out += "summary: \(examples) example\(examples == 1 ? "" : "s") shown"
        out += examples < requested ? " (asked for \(requested); the data has no more)" : ""
        out += ", \(tokens) tokens, \(trained) trained (\(String(format: "%.1f", share * 100))%), \(truncated) truncated at --seq-len \(seqLen)\n"
        return out
    }
}
