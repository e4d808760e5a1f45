// PreTokenizers: the `pre_tokenizer` of tokenizer.json (ByteLevel, Split with its five behaviors and invert, Digits,
// Metaspace, Whitespace, WhitespaceSplit, Punctuation, Sequence) over spans of one byte arena, as tokenizers' pre_tokenizers/.
import Foundation

/// The text of one encode call cut into spans of one arena; a span is a word, or an added token already resolved.
package struct Words {
    struct Span {
        var start: Int
        var end: Int
        var token: Int  // an added token's id, or -1 for text
        var first: Bool  // the span starts at offset 0 of the original text (Metaspace prepend_scheme "first")
    }

    var bytes: [UInt8] = []
    var spans: [Span] = []
    /// Span bytes are raw bytes standing for their ByteLevel characters (mapped lazily, see `materialize`).
    var byteLevel = false

    /// Writes the ByteLevel characters out, for a step that must see them.
    mutating func materialize() {
        guard byteLevel else { return }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        bytes.withUnsafeBufferPointer { b in
            for k in spans.indices where spans[k].token < 0 {
                let s = out.count
                ByteLevelMap.appendMapped(b.baseAddress! + spans[k].start, spans[k].end - spans[k].start, to: &out)
                spans[k].start = s
                spans[k].end = out.count
            }
        }
        bytes = out
        byteLevel = false
    }

    /// The text spans as strings (tests and debugging).
    mutating func strings() -> [String] {
        materialize()
        return spans.filter { $0.token < 0 }.map { String(decoding: bytes[$0.start..<$0.end], as: UTF8.self) }
    }
}

enum SplitBehavior: String {
    case removed = "Removed", isolated = "Isolated", mergedWithPrevious = "MergedWithPrevious"
    case mergedWithNext = "MergedWithNext", contiguous = "Contiguous"
}

enum PrependScheme: String { case first, always, never }

indirect enum PreTokenizer {
    case byteLevel(addPrefixSpace: Bool, useRegex: Bool)
    case split(SplitPattern, SplitBehavior, invert: Bool)
    case metaspace(replacement: UInt32, prepend: PrependScheme, split: Bool)
    case sequence([PreTokenizer])

    static let supported = ["ByteLevel", "Split", "Digits", "Metaspace", "Whitespace", "WhitespaceSplit", "Punctuation",
                            "Sequence"]

    package static func parse(_ j: TokenizerJSON) throws -> PreTokenizer {
        func behavior(_ d: SplitBehavior) throws -> SplitBehavior {
            guard let s = try j.optionalString("behavior") else { return d }
            guard let b = SplitBehavior(rawValue: s) else {
                throw j.bad("behavior", "'\(s)' is not one of Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous")
            }
            return b
        }
        let t = try j.type()
        switch t {
        case "ByteLevel":
            return .byteLevel(addPrefixSpace: try j.bool("add_prefix_space", default: true), useRegex: try j.bool("use_regex", default: true))
        case "Split":
            let (text, isRegex) = try j.pattern()
            let p = try SplitPattern(text: text, isRegex: isRegex, path: j.path, key: j.key("pattern"))
            return .split(p, try behavior(.isolated), invert: try j.bool("invert", default: false))
        case "Digits":
            let individual = try j.bool("individual_digits", default: false)
            return .split(SplitPattern(.classMask(CharClass.number)), individual ? .isolated : .contiguous, invert: false)
        case "WhitespaceSplit":
            return .split(SplitPattern(.classMask(CharClass.space)), .removed, invert: false)
        case "Whitespace":
            let re = try SplitPattern.compileICU(#"\w+|[^\w\s]+"#, path: j.path, key: j.key("type"))
            return .split(SplitPattern(.icu(re), origin: (j.path, j.key("type"), #"\w+|[^\w\s]+"#)), .removed, invert: true)
        case "Punctuation":
            return .split(SplitPattern(.classMask(CharClass.punct)), try behavior(.isolated), invert: false)
        case "Metaspace":
            let r = try j.string("replacement").unicodeScalars
            guard r.count == 1, let rep = r.first else { throw j.bad("replacement", "expected one character") }
            var scheme = PrependScheme.always
            if let s = try j.optionalString("prepend_scheme") {
                guard let ps = PrependScheme(rawValue: s) else { throw j.bad("prepend_scheme", "'\(s)' is not first, always or never") }
                scheme = ps
            } else if !(try j.bool("add_prefix_space", default: true)) {
                scheme = .never
            }
            return .metaspace(replacement: rep.value, prepend: scheme, split: try j.bool("split", default: true))
        case "Sequence":
            return .sequence(try j.children("pretokenizers").map(parse))
        default:
            throw j.unsupported(t, supported: supported)
        }
    }

    func apply(_ w: inout Words, _ scratch: inout ScanScratch) {
        switch self {
        case .sequence(let list):
            for p in list { p.apply(&w, &scratch) }
        case .split(let pattern, let behavior, let invert):
            w.materialize()
            PreTokenizer.split(&w, pattern, behavior, invert, &scratch)
        case .byteLevel(let addPrefixSpace, let useRegex):
            w.materialize()
            if addPrefixSpace { PreTokenizer.rewrite(&w) { p, n, first, out in
                if n == 0 || p[0] != 0x20 { out.append(0x20) }
                out.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
            } }
            if useRegex { PreTokenizer.split(&w, SplitPattern.gpt2, .isolated, false, &scratch) }
            w.byteLevel = true
        case .metaspace(let rep, let scheme, let split):
            w.materialize()
            var repBytes: [UInt8] = []
            UTF8Scan.append(rep, to: &repBytes)
            PreTokenizer.rewrite(&w) { p, n, first, out in
                // tokenizers replaces the spaces first, then looks at the first character
                let startsWithRep = (n > 0 && p[0] == 0x20) || (n >= repBytes.count && repBytes.indices.allSatisfy { p[$0] == repBytes[$0] })
                if !startsWithRep && (scheme == .always || (scheme == .first && first)) { out.append(contentsOf: repBytes) }
                for i in 0..<n { if p[i] == 0x20 { out.append(contentsOf: repBytes) } else { out.append(p[i]) } }
            }
            if split { PreTokenizer.split(&w, SplitPattern(.scalar(rep)), .mergedWithNext, false, &scratch) }
        }
    }

    /// Rewrites every text span through `body` into a new arena.
    private static func rewrite(_ w: inout Words,
                                _ body: (UnsafePointer<UInt8>, Int, Bool, inout [UInt8]) -> Void) {
        var out: [UInt8] = []
        out.reserveCapacity(w.bytes.count + w.spans.count * 3)
        w.bytes.withUnsafeBufferPointer { b in
            guard let base = b.baseAddress else { return }  // no text, only added tokens
            for k in w.spans.indices where w.spans[k].token < 0 {
                let s = out.count
                body(base + w.spans[k].start, w.spans[k].end - w.spans[k].start, w.spans[k].first, &out)
                w.spans[k].start = s
                w.spans[k].end = out.count
            }
        }
        w.bytes = out
    }

    /// tokenizers' NormalizedString::split: matches and the gaps between them, `invert` swapping the two,
    /// then merged or dropped per `behavior`; empty pieces vanish.
    static func split(_ w: inout Words, _ pattern: SplitPattern, _ behavior: SplitBehavior, _ invert: Bool,
                      _ scratch: inout ScanScratch) {
        var out: [Words.Span] = []
        out.reserveCapacity(w.spans.count * 4)
        var matches: [Int] = [], pieces: [Int] = [], result: [Int] = []
        w.bytes.withUnsafeBufferPointer { b in
            guard let base = b.baseAddress else { out = w.spans; return }
            for span in w.spans {
                let n = span.end - span.start
                if span.token >= 0 || n == 0 { if span.token >= 0 { out.append(span) }; continue }
                matches.removeAll(keepingCapacity: true)
                pattern.matches(base + span.start, n, into: &matches, scratch: &scratch)
                if behavior == .isolated {  // the hot path: every piece is kept
                    var prev = 0
                    for k in stride(from: 0, to: matches.count, by: 2) {
                        let ms = matches[k], me = matches[k + 1]
                        if ms > prev { out.append(.init(start: span.start + prev, end: span.start + ms, token: -1, first: span.first && prev == 0)) }
                        if me > ms { out.append(.init(start: span.start + ms, end: span.start + me, token: -1, first: span.first && ms == 0)) }
                        prev = me
                    }
                    if prev < n { out.append(.init(start: span.start + prev, end: span.end, token: -1, first: span.first && prev == 0)) }
                    continue
                }
                // pieces: (start, end, isMatch) triples covering the span
                pieces.removeAll(keepingCapacity: true)
                var prev = 0
                for k in stride(from: 0, to: matches.count, by: 2) {
                    if matches[k] != prev { pieces += [prev, matches[k], invert ? 1 : 0] }
                    pieces += [matches[k], matches[k + 1], invert ? 0 : 1]
                    prev = matches[k + 1]
                }
                if prev != n { pieces += [prev, n, invert ? 1 : 0] }
                merge(pieces, behavior, into: &result)
                for k in stride(from: 0, to: result.count, by: 2) where result[k + 1] > result[k] {
                    out.append(.init(start: span.start + result[k], end: span.start + result[k + 1], token: -1,
                                     first: span.first && result[k] == 0))
                }
            }
        }
        w.spans = out
    }

    /// SplitDelimiterBehavior applied to (start, end, isMatch) triples; writes (start, end) pairs.
    private static func merge(_ p: [Int], _ behavior: SplitBehavior, into r: inout [Int]) {
        r.removeAll(keepingCapacity: true)
        let count = p.count / 3
        switch behavior {
        case .isolated:
            for k in 0..<count { r += [p[3 * k], p[3 * k + 1]] }
        case .removed:
            for k in 0..<count where p[3 * k + 2] == 0 { r += [p[3 * k], p[3 * k + 1]] }
        case .mergedWithPrevious:
            var previousMatch = false
            for k in 0..<count {
                let isMatch = p[3 * k + 2] == 1
                if isMatch && !previousMatch && !r.isEmpty { r[r.count - 1] = p[3 * k + 1] } else { r += [p[3 * k], p[3 * k + 1]] }
                previousMatch = isMatch
            }
        case .mergedWithNext:
            var previousMatch = false
            var rev: [Int] = []
            for k in stride(from: count - 1, through: 0, by: -1) {
                let isMatch = p[3 * k + 2] == 1
                if isMatch && !previousMatch && !rev.isEmpty { rev[rev.count - 2] = p[3 * k] } else { rev += [p[3 * k], p[3 * k + 1]] }
                previousMatch = isMatch
            }
            for k in stride(from: rev.count - 2, through: 0, by: -2) { r += [rev[k], rev[k + 1]] }
        case .contiguous:
            var previousMatch = false
            for k in 0..<count {
                let isMatch = p[3 * k + 2] == 1
                if isMatch == previousMatch && !r.isEmpty { r[r.count - 1] = p[3 * k + 1] } else { r += [p[3 * k], p[3 * k + 1]] }
                previousMatch = isMatch
            }
        }
    }
}

extension SplitPattern {
    static let gpt2 = SplitPattern(.gpt2)
}
