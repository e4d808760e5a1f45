// Decoders: the `decoder` of tokenizer.json (ByteLevel, ByteFallback, Fuse, Replace, Strip, Metaspace, BPEDecoder,
// Sequence), each a decode_chain over token strings as in tokenizers' decoders/; invalid UTF-8 becomes U+FFFD as there.
import Foundation

indirect enum Decoder {
    case byteLevel
    case byteFallback
    case fuse
    case replace(SplitPattern, content: String)
    case strip(content: UInt32, start: Int, stop: Int)
    case metaspace(replacement: UInt32, prepend: PrependScheme)
    case bpe(suffix: String)
    case sequence([Decoder])

    static let supported = ["ByteLevel", "ByteFallback", "Fuse", "Replace", "Strip", "Metaspace", "BPEDecoder", "Sequence"]

    package static func parse(_ j: TokenizerJSON) throws -> Decoder {
        let t = try j.type()
        switch t {
        case "ByteLevel": return .byteLevel
        case "ByteFallback": return .byteFallback
        case "Fuse": return .fuse
        case "Replace":
            let (text, isRegex) = try j.pattern()
            return .replace(try SplitPattern(text: text, isRegex: isRegex, path: j.path, key: j.key("pattern")),
                            content: try j.string("content"))
        case "Strip":
            let c = try j.string("content").unicodeScalars
            guard c.count == 1, let v = c.first?.value else { throw j.bad("content", "expected one character") }
            return .strip(content: v, start: try j.int("start", default: 0), stop: try j.int("stop", default: 0))
        case "Metaspace":
            let r = try j.string("replacement").unicodeScalars
            guard r.count == 1, let v = r.first?.value else { throw j.bad("replacement", "expected one character") }
            var scheme = PrependScheme.always
            if let s = try j.optionalString("prepend_scheme") {
                guard let ps = PrependScheme(rawValue: s) else { throw j.bad("prepend_scheme", "'\(s)' is not first, always or never") }
                scheme = ps
            } else if !(try j.bool("add_prefix_space", default: true)) {
                scheme = .never
            }
            return .metaspace(replacement: v, prepend: scheme)
        case "BPEDecoder": return .bpe(suffix: try j.optionalString("suffix") ?? "</w>")
        case "Sequence": return .sequence(try j.children("decoders").map(parse))
        default: throw j.unsupported(t, supported: supported)
        }
    }

    /// The decode chain; a Replace regex of the file past its limits leaves its token unreplaced and records
    /// the failure in `failure` (the first one is kept), which `decodeChecked` reports.
    func decodeChain(_ tokens: [String], _ failure: inout TokenizerError?) -> [String] {
        switch self {
        case .sequence(let list):
            var out = tokens
            for d in list { out = d.decodeChain(out, &failure) }
            return out
        case .fuse:
            return [tokens.joined()]
        case .byteLevel:
            // Each token's characters back to bytes; a token with a character outside the map keeps its UTF-8.
            var bytes: [UInt8] = []
            for t in tokens {
                let start = bytes.count
                var ok = true
                for v in t.unicodeScalars {
                    guard let b = ByteLevelMap.byte(for: v.value) else { ok = false; break }
                    bytes.append(UInt8(b))
                }
                if !ok { bytes.removeLast(bytes.count - start); bytes.append(contentsOf: t.utf8) }
            }
            return [UTF8Scan.lossy(bytes)]
        case .byteFallback:
            var out: [String] = [], pending: [UInt8] = []
            func flush() {
                guard !pending.isEmpty else { return }
                if let s = String(validating: pending, as: UTF8.self) { out.append(s) } else {
                    out.append(contentsOf: repeatElement("\u{FFFD}", count: pending.count))
                }
                pending.removeAll()
            }
            for t in tokens {
                if let b = Decoder.byteToken(t) { pending.append(b) } else { flush(); out.append(t) }
            }
            flush()
            return out
        case .replace(let pattern, let content):
            let c = Array(content.utf8)
            return tokens.map { String(decoding: Normalizer.replace(Array($0.utf8), pattern, c, &failure), as: UTF8.self) }
        case .strip(let content, let start, let stop):
            return tokens.map { t in
                let chars = Array(t.unicodeScalars)
                var a = 0, b = chars.count
                while a < min(start, chars.count) && chars[a].value == content { a += 1 }
                var k = 0
                while k < stop && b - 1 >= a && chars[b - 1].value == content { b -= 1; k += 1 }
                var v = String.UnicodeScalarView()
                v.append(contentsOf: chars[a..<b])
                return String(v)
            }
        case .metaspace(let rep, let scheme):
            return tokens.enumerated().map { i, t in
                var v = String.UnicodeScalarView()
                for c in t.unicodeScalars {
                    if c.value == rep {
                        if i == 0 && scheme != .never { continue }  // every replacement in the first token goes
                        v.append(" ")
                    } else {
                        v.append(c)
                    }
                }
                return String(v)
            }
        case .bpe(let suffix):
            let pattern = SplitPattern(.literal(Array(suffix.utf8)))
            return tokens.enumerated().map { i, t in
                String(decoding: Normalizer.replace(Array(t.utf8), pattern, i == tokens.count - 1 ? [] : [0x20], &failure), as: UTF8.self)
            }
        }
    }

    /// The byte of a `<0xXX>` token (hex digits in either case, as u8::from_str_radix reads them).
    static func byteToken(_ t: String) -> UInt8? {
        let u = Array(t.utf8)
        guard u.count == 6, u[0] == 0x3C, u[1] == 0x30, u[2] == 0x78, u[5] == 0x3E else { return nil }
        return UInt8(String(decoding: u[3...4], as: UTF8.self), radix: 16)
    }
}
