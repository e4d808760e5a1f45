// Normalizers: the `normalizer` of tokenizer.json (NFC/NFD/NFKC/NFKD, Lowercase, Strip, StripAccents, Prepend,
// Replace with a literal or regex pattern, Sequence), on UTF-8 bytes, as tokenizers' normalizers/ do (docs/formats.md §5).
import Foundation

indirect enum Normalizer {
    case nfc, nfd, nfkc, nfkd
    case lowercase
    case strip(left: Bool, right: Bool)
    case stripAccents
    case prepend([UInt8])
    case replace(SplitPattern, content: [UInt8])
    case sequence([Normalizer])

    static let supported = ["NFC", "NFD", "NFKC", "NFKD", "Lowercase", "Strip", "StripAccents", "Prepend", "Replace",
                            "Sequence"]

    package static func parse(_ j: TokenizerJSON) throws -> Normalizer {
        let t = try j.type()
        switch t {
        case "NFC": return .nfc
        case "NFD": return .nfd
        case "NFKC": return .nfkc
        case "NFKD": return .nfkd
        case "Lowercase": return .lowercase
        case "StripAccents": return .stripAccents
        case "Strip": return .strip(left: try j.bool("strip_left", default: true), right: try j.bool("strip_right", default: true))
        case "Prepend": return .prepend(Array(try j.string("prepend").utf8))
        case "Replace":
            let (text, isRegex) = try j.pattern()
            let pattern = try SplitPattern(text: text, isRegex: isRegex, path: j.path, key: j.key("pattern"))
            return .replace(pattern, content: Array(try j.string("content").utf8))
        case "Sequence": return .sequence(try j.children("normalizers").map(parse))
        default: throw j.unsupported(t, supported: supported)
        }
    }

    /// The normalized bytes. A Replace regex of the file that runs past its limits leaves its text unreplaced
    /// and records the failure in `failure` (the first one is kept), which `encodeChecked` reports.
    func apply(_ s: [UInt8], _ failure: inout TokenizerError?) -> [UInt8] {
        switch self {
        case .nfc:
            // Scalars below U+0300 (lead bytes below 0xCC) are all NFC-stable and never combine.
            if s.allSatisfy({ $0 < 0xCC }) { return s }
            return Array(Normalizer.string(s).precomposedStringWithCanonicalMapping.utf8)
        case .nfd:
            if s.allSatisfy({ $0 < 0x80 }) { return s }
            return Array(Normalizer.string(s).decomposedStringWithCanonicalMapping.utf8)
        case .nfkc:
            if s.allSatisfy({ $0 < 0x80 }) { return s }
            return Array(Normalizer.string(s).precomposedStringWithCompatibilityMapping.utf8)
        case .nfkd:
            if s.allSatisfy({ $0 < 0x80 }) { return s }
            return Array(Normalizer.string(s).decomposedStringWithCompatibilityMapping.utf8)
        case .lowercase:
            // Per character, as Rust's char::to_lowercase (full mappings, no final-sigma context).
            var out: [UInt8] = []
            out.reserveCapacity(s.count)
            for v in Normalizer.string(s).unicodeScalars {
                if v.value < 0x80 {
                    out.append(v.value >= 0x41 && v.value <= 0x5A ? UInt8(v.value + 0x20) : UInt8(v.value))
                } else {
                    out.append(contentsOf: v.properties.lowercaseMapping.utf8)
                }
            }
            return out
        case .strip(let left, let right):
            let scalars = Array(Normalizer.string(s).unicodeScalars)
            var a = 0, b = scalars.count
            if left { while a < b && scalars[a].properties.isWhitespace { a += 1 } }
            if right { while b > a && scalars[b - 1].properties.isWhitespace { b -= 1 } }
            var out = String.UnicodeScalarView()
            out.append(contentsOf: scalars[a..<b])
            return Array(String(out).utf8)
        case .stripAccents:
            var out = String.UnicodeScalarView()
            for v in Normalizer.string(s).unicodeScalars where CharClass.of(v.value) & CharClass.mark == 0 { out.append(v) }
            return Array(String(out).utf8)
        case .prepend(let p):
            return s.isEmpty ? s : p + s
        case .replace(let pattern, let content):
            return Normalizer.replace(s, pattern, content, &failure)
        case .sequence(let list):
            var out = s
            for n in list { out = n.apply(out, &failure) }
            return out
        }
    }

    /// Replaces every non-overlapping match of `pattern` with the literal `content`; a regex past its limits
    /// replaces nothing and records its failure in `failure` unless one is there already.
    static func replace(_ s: [UInt8], _ pattern: SplitPattern, _ content: [UInt8], _ failure: inout TokenizerError?) -> [UInt8] {
        var ranges: [Int] = []
        var scratch = ScanScratch()
        s.withUnsafeBufferPointer { b in
            if let base = b.baseAddress { pattern.matches(base, b.count, into: &ranges, scratch: &scratch) }
        }
        if failure == nil { failure = scratch.regexFailure }
        if ranges.isEmpty { return s }
        var out: [UInt8] = [], prev = 0
        out.reserveCapacity(s.count)
        for k in stride(from: 0, to: ranges.count, by: 2) {
            out.append(contentsOf: s[prev..<ranges[k]])
            out.append(contentsOf: content)
            prev = ranges[k + 1]
        }
        out.append(contentsOf: s[prev...])
        return out
    }

    static func string(_ s: [UInt8]) -> String { String(decoding: s, as: UTF8.self) }
}
