// PostProcessor: the `post_processor` of tokenizer.json for a single sequence (TemplateProcessing "<s> $A",
// RobertaProcessing / BertProcessing cls + A + sep, ByteLevel as a no-op on ids, Sequence), as tokenizers' processors/.
import Foundation

indirect enum PostProcessor {
    enum Piece: Equatable {
        case special(ids: [Int], name: String)
        case sequence
    }

    case template([Piece])
    case wrap(cls: Int, clsName: String, sep: Int, sepName: String)
    case byteLevel
    case sequence([PostProcessor])

    static let supported = ["TemplateProcessing", "RobertaProcessing", "BertProcessing", "ByteLevel", "Sequence"]

    package static func parse(_ j: TokenizerJSON) throws -> PostProcessor {
        let t = try j.type()
        switch t {
        case "ByteLevel": return .byteLevel
        case "Sequence": return .sequence(try j.children("processors").map(parse))
        case "RobertaProcessing", "BertProcessing":
            func pair(_ k: String) throws -> (String, Int) {
                let a = try j.array(k)
                guard a.count == 2, let s = a[0].stringValue, let i = a[1].intValue, i >= 0 else {
                    throw j.bad(k, "expected [\"token\", id]")
                }
                return (s, Int(i))
            }
            let (c, ci) = try pair("cls"), (s, si) = try pair("sep")
            return .wrap(cls: ci, clsName: c, sep: si, sepName: s)
        case "TemplateProcessing":
            // special_tokens: {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
            var specials: [String: [Int]] = [:]
            if j.has("special_tokens") {
                let st = try j.child("special_tokens")
                for (name, v) in st.object.entries {
                    let e = try TokenizerJSON(v, path: j.path, keyPath: st.key(name))
                    specials[name] = try e.array("ids").map {
                        guard let i = $0.intValue, i >= 0 else { throw e.bad("ids", "expected token ids") }
                        return Int(i)
                    }
                }
            }
            var pieces: [Piece] = []
            for (k, item) in try j.array("single").enumerated() {
                let key = j.key("single[\(k)]")
                if let s = item["SpecialToken"], let name = s["id"]?.stringValue {
                    guard let ids = specials[name] else {
                        throw TokenizerError.badValue(path: j.path, key: key, reason: "special token '\(name)' is not in special_tokens")
                    }
                    pieces.append(.special(ids: ids, name: name))
                } else if let s = item["Sequence"], let name = s["id"]?.stringValue {
                    guard name == "A" else {
                        throw TokenizerError.badValue(path: j.path, key: key, reason: "the single template can only hold sequence A, not \(name)")
                    }
                    pieces.append(.sequence)
                } else {
                    throw TokenizerError.badValue(path: j.path, key: key, reason: "expected {\"SpecialToken\": ...} or {\"Sequence\": ...}")
                }
            }
            return .template(pieces)
        default:
            throw j.unsupported(t, supported: supported)
        }
    }

    /// The ids of one sequence with this processor's special tokens (none unless `addSpecialTokens`).
    func process(_ ids: [Int], addSpecialTokens: Bool) -> [Int] {
        guard addSpecialTokens else { return ids }
        switch self {
        case .byteLevel: return ids
        case .sequence(let list): return list.reduce(ids) { $1.process($0, addSpecialTokens: true) }
        case .wrap(let cls, _, let sep, _): return [cls] + ids + [sep]
        case .template(let pieces):
            var out: [Int] = []
            out.reserveCapacity(ids.count + 4)
            for p in pieces {
                switch p {
                case .special(let s, _): out += s
                case .sequence: out += ids
                }
            }
            return out
        }
    }

    /// Names of the special tokens placed before and after the sequence (for BOS / EOS defaults).
    var surroundingSpecials: (before: [String], after: [String]) {
        switch self {
        case .byteLevel: return ([], [])
        case .wrap(_, let c, _, let s): return ([c], [s])
        case .sequence(let list):
            return list.reduce(([], [])) { acc, p in let s = p.surroundingSpecials; return (s.before + acc.0, acc.1 + s.after) }
        case .template(let pieces):
            guard let a = pieces.firstIndex(of: .sequence) else { return ([], []) }
            func names(_ ps: ArraySlice<Piece>) -> [String] {
                ps.compactMap { if case .special(_, let n) = $0 { return n }; return nil }
            }
            return (names(pieces[..<a]), names(pieces[(a + 1)...]))
        }
    }
}
