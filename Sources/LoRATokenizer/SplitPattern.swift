// SplitPattern: what Split / ByteLevel / Digits / Metaspace / Replace match, as byte ranges: the GPT-2, Llama 3 and Qwen2
// regexes by hand-written scanners equal to tokenizers' Oniguruma results, any other regex through ICU with Oniguruma's \s \w.
import Foundation

/// Reusable per-call buffers of the scanners.
package struct ScanScratch {
    var scalars: [UInt32] = []
    var classes: [UInt8] = []
    var offsets: [Int32] = []
    /// A regex from the file that ran past its limits in this call (its piece was left unsplit).
    var regexFailure: TokenizerError? = nil
}

package final class SplitPattern: @unchecked Sendable {
    package static let gpt2Regex = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    package static let llama3Regex = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    package static let qwen2Regex = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    enum Kind {
        case literal([UInt8])
        case scalar(UInt32)  // every occurrence of one character is a match
        case classMask(UInt8)  // every character with one of these CharClass bits is a match
        case gpt2
        case llama3(maxDigits: Int)
        case icu(NSRegularExpression)
    }

    let kind: Kind
    /// Where an ICU regex came from, for the limit error.
    let origin: (path: String, key: String, pattern: String)?

    init(_ kind: Kind, origin: (path: String, key: String, pattern: String)? = nil) {
        self.kind = kind
        self.origin = origin
    }

    /// An ICU regex (any regex of the file but the three known ones) may run this long on a piece of n bytes:
    /// icuSeconds + n * icuSecondsPerByte (a legitimate pattern runs at megabytes a second). Pieces longer
    /// than maxICUPieceBytes are refused outright. Exponential backtracking (`(a+)+$`) is stopped either way.
    package static let icuSeconds = 1.0
    static let icuSecondsPerByte = 1e-6
    static let maxICUPieceBytes = 16 << 20

    /// A `pattern` field of tokenizer.json: a literal string, or a regex in Oniguruma syntax.
    convenience init(text: String, isRegex: Bool, path: String, key: String) throws {
        if !isRegex { self.init(.literal(Array(text.utf8))); return }
        switch text {
        case SplitPattern.gpt2Regex: self.init(.gpt2)
        case SplitPattern.llama3Regex: self.init(.llama3(maxDigits: 3))
        case SplitPattern.qwen2Regex: self.init(.llama3(maxDigits: 1))
        default: self.init(.icu(try SplitPattern.compileICU(text, path: path, key: key)), origin: (path, key, text))
        }
    }

    package static func compileICU(_ pattern: String, path: String, key: String) throws -> NSRegularExpression {
        do {
            return try NSRegularExpression(pattern: onigToICU(pattern), options: [.anchorsMatchLines])
        } catch {
            throw TokenizerError.badRegex(path: path, key: key, pattern: pattern, reason: "\(error)")
        }
    }

    /// Rewrites the Oniguruma classes whose ICU meaning differs: \s \S (ICU leaves out VT and NEL), \w \W
    /// (Oniguruma: Letter, Mark, Nd, Pc), \h \H (Oniguruma: hex digit), `.` (Oniguruma excludes only \n).
    static func onigToICU(_ p: String) -> String {
        let space = #"\p{White_Space}"#, word = #"\p{L}\p{M}\p{Nd}\p{Pc}"#, hex = "0-9a-fA-F"
        var out = "", inClass = 0
        var it = Array(p.unicodeScalars)[...]
        while let c = it.popFirst() {
            if c == "\\", let d = it.popFirst() {
                switch d {
                case "s": out += inClass > 0 ? space : "[\(space)]"
                case "S": out += "[^\(space)]"
                case "w": out += inClass > 0 ? word : "[\(word)]"
                case "W": out += "[^\(word)]"
                case "h": out += inClass > 0 ? hex : "[\(hex)]"
                case "H": out += "[^\(hex)]"
                default: out.unicodeScalars.append(c); out.unicodeScalars.append(d)
                }
                continue
            }
            if c == "[" { inClass += 1 } else if c == "]" && inClass > 0 { inClass -= 1 }
            if c == "." && inClass == 0 { out += #"[^\n]"#; continue }
            out.unicodeScalars.append(c)
        }
        return out
    }

    /// Appends (start, end) byte offsets of the successive non-overlapping matches in p[0..<n].
    func matches(_ p: UnsafePointer<UInt8>, _ n: Int, into out: inout [Int], scratch: inout ScanScratch) {
        switch kind {
        case .literal(let needle):
            let k = needle.count
            guard k > 0, k <= n else { return }
            needle.withUnsafeBufferPointer { nd in
                var i = 0
                while i + k <= n {
                    if p[i] == nd[0] && memcmp(p + i, nd.baseAddress!, k) == 0 {
                        out.append(i); out.append(i + k); i += k
                    } else { i += 1 }
                }
            }
        case .scalar(let target):
            var i = 0
            while i < n {
                let (v, l) = UTF8Scan.decode(p, i)
                if v == target { out.append(i); out.append(i + l) }
                i += l
            }
        case .classMask(let mask):
            let table = CharClass.bmpPointer
            var i = 0
            while i < n {
                let (v, l) = UTF8Scan.decode(p, i)
                if CharClass.of(v, table) & mask != 0 { out.append(i); out.append(i + l) }
                i += l
            }
        case .gpt2: scan(p, n, gpt2: true, maxDigits: 0, into: &out, scratch: &scratch)
        case .llama3(let d): scan(p, n, gpt2: false, maxDigits: d, into: &out, scratch: &scratch)
        case .icu(let re):
            let first = out.count
            if let failure = icuMatches(re, p, n, into: &out) {
                out.removeSubrange(first...)  // the piece stays whole; encodeChecked reports the failure
                if scratch.regexFailure == nil { scratch.regexFailure = failure }
            }
        }
    }

    /// The ICU matches, or the limit failure when the piece is too long or the match runs past its deadline
    /// (checked in NSRegularExpression's progress callback, which ICU calls during a long backtracking match).
    private func icuMatches(_ re: NSRegularExpression, _ p: UnsafePointer<UInt8>, _ n: Int, into out: inout [Int]) -> TokenizerError? {
        let o = origin ?? ("tokenizer.json", "pre_tokenizer", re.pattern)
        if n > SplitPattern.maxICUPieceBytes {
            return .regexLimit(path: o.path, key: o.key, pattern: o.pattern,
                               reason: "a piece of \(n) bytes is longer than the \(SplitPattern.maxICUPieceBytes) this regex may scan")
        }
        let s = String(decoding: UnsafeBufferPointer(start: p, count: n), as: UTF8.self)
        // UTF-16 offset → UTF-8 offset.
        var map = [Int](), u8 = 0
        map.reserveCapacity(n + 1)
        for v in s.unicodeScalars {
            map.append(u8)
            if v.value >= 0x10000 { map.append(u8) }
            u8 += v.value < 0x80 ? 1 : v.value < 0x800 ? 2 : v.value < 0x10000 ? 3 : 4
        }
        map.append(u8)
        let limit = SplitPattern.icuSeconds + Double(n) * SplitPattern.icuSecondsPerByte
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(limit * 1e9)
        var timedOut = false, found: [Int] = []  // (the block is escaping on Linux: it cannot append to `out`)
        re.enumerateMatches(in: s, options: [.reportProgress], range: NSRange(location: 0, length: map.count - 1)) { m, _, stop in
            if let m { found.append(map[m.range.location]); found.append(map[m.range.location + m.range.length]) }
            if DispatchTime.now().uptimeNanoseconds > deadline { timedOut = true; stop.pointee = true }
        }
        guard timedOut else { out += found; return nil }
        return .regexLimit(path: o.path, key: o.key, pattern: o.pattern,
                           reason: "matching a piece of \(n) bytes took longer than \(limit) s (catastrophic backtracking?)")
    }

    // MARK: the known regexes

    private static let L = CharClass.letter, N = CharClass.number, S = CharClass.space

    private func scan(_ p: UnsafePointer<UInt8>, _ n: Int, gpt2: Bool, maxDigits: Int,
                      into out: inout [Int], scratch: inout ScanScratch) {
        if scratch.scalars.count < n + 1 {
            scratch.scalars = [UInt32](repeating: 0, count: n + 1)
            scratch.classes = [UInt8](repeating: 0, count: n + 1)
            scratch.offsets = [Int32](repeating: 0, count: n + 1)
        }
        scratch.scalars.withUnsafeMutableBufferPointer { scb in
            scratch.classes.withUnsafeMutableBufferPointer { clb in
                scratch.offsets.withUnsafeMutableBufferPointer { ofb in
                    let sc = scb.baseAddress!, cl = clb.baseAddress!, off = ofb.baseAddress!
                    let table = CharClass.bmpPointer
                    var m = 0, i = 0
                    while i < n {
                        let b = p[i]
                        if b < 0x80 {
                            sc[m] = UInt32(b); cl[m] = table[Int(b)]; off[m] = Int32(i); i += 1
                        } else {
                            let (v, l) = UTF8Scan.decode(p, i)
                            sc[m] = v; cl[m] = CharClass.of(v, table); off[m] = Int32(i); i += l
                        }
                        m += 1
                    }
                    off[m] = Int32(n)
                    var s = 0
                    while s < m {
                        let e = gpt2 ? SplitPattern.gpt2Match(sc, cl, s, m) : SplitPattern.llamaMatch(sc, cl, s, m, maxDigits)
                        out.append(Int(off[s])); out.append(Int(off[e]))
                        s = e
                    }
                }
            }
        }
    }

    @inline(__always) private static func run(_ cl: UnsafeMutablePointer<UInt8>, _ j0: Int, _ m: Int, _ mask: UInt8) -> Int {
        var j = j0
        while j < m && cl[j] & mask != 0 { j += 1 }
        return j
    }

    /// [^\s\p{L}\p{N}]+ from j0.
    @inline(__always) private static func otherRun(_ cl: UnsafeMutablePointer<UInt8>, _ j0: Int, _ m: Int) -> Int {
        var j = j0
        while j < m && cl[j] & (L | N | S) == 0 { j += 1 }
        return j
    }

    /// \s+(?!\S) then \s+, for whitespace at i.
    @inline(__always) private static func spaceRun(_ cl: UnsafeMutablePointer<UInt8>, _ i: Int, _ m: Int) -> Int {
        let k = run(cl, i + 1, m, S)
        if k == m { return k }
        return k - 1 > i ? k - 1 : k
    }

    /// End of the GPT-2 regex match at i:
    /// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
    private static func gpt2Match(_ sc: UnsafeMutablePointer<UInt32>, _ cl: UnsafeMutablePointer<UInt8>, _ i: Int, _ m: Int) -> Int {
        let c = sc[i]
        if c == 0x27 && i + 1 < m {
            let d = sc[i + 1]
            if d == 0x73 || d == 0x74 || d == 0x6D || d == 0x64 { return i + 2 }  // s t m d
            if i + 2 < m {
                let e = sc[i + 2]
                if (d == 0x72 && e == 0x65) || (d == 0x76 && e == 0x65) || (d == 0x6C && e == 0x6C) { return i + 3 }  // re ve ll
            }
        }
        var s = i
        if c == 0x20 && i + 1 < m && cl[i + 1] & S == 0 { s = i + 1 }
        let f = cl[s]
        if f & L != 0 { return run(cl, s + 1, m, L) }
        if f & N != 0 { return run(cl, s + 1, m, N) }
        if f & S == 0 { return otherRun(cl, s + 1, m) }
        return spaceRun(cl, i, m)
    }

    @inline(__always) private static func fold(_ v: UInt32) -> UInt32 {
        if v >= 0x41 && v <= 0x5A { return v + 0x20 }
        return v == 0x17F ? 0x73 : v  // ſ folds to s
    }

    /// End of the Llama 3 (maxDigits 3) / Qwen2 (maxDigits 1) regex match at i:
    /// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
    private static func llamaMatch(_ sc: UnsafeMutablePointer<UInt32>, _ cl: UnsafeMutablePointer<UInt8>, _ i: Int, _ m: Int,
                                   _ maxDigits: Int) -> Int {
        let c = sc[i], f = cl[i]
        if c == 0x27 && i + 1 < m {
            let d = fold(sc[i + 1])
            if d == 0x73 || d == 0x74 || d == 0x6D || d == 0x64 { return i + 2 }
            if i + 2 < m {
                let e = fold(sc[i + 2])
                if (d == 0x72 && e == 0x65) || (d == 0x76 && e == 0x65) || (d == 0x6C && e == 0x6C) { return i + 3 }
            }
        }
        if f & L != 0 { return run(cl, i + 1, m, L) }
        let isNewline = c == 0x0A || c == 0x0D
        if !isNewline && f & N == 0 && i + 1 < m && cl[i + 1] & L != 0 { return run(cl, i + 2, m, L) }
        if f & N != 0 {
            var j = i + 1
            while j < m && j - i < maxDigits && cl[j] & N != 0 { j += 1 }
            return j
        }
        var s = -1
        if c == 0x20 && i + 1 < m && cl[i + 1] & (L | N | S) == 0 { s = i + 1 } else if f & S == 0 { s = i }
        if s >= 0 {
            var j = otherRun(cl, s + 1, m)
            while j < m && (sc[j] == 0x0A || sc[j] == 0x0D) { j += 1 }
            return j
        }
        // \s*[\r\n]+ : the whitespace run up to and including its last newline.
        let k = run(cl, i + 1, m, S)
        var q = k - 1
        while q >= i && sc[q] != 0x0A && sc[q] != 0x0D { q -= 1 }
        if q >= i { return q + 1 }
        return spaceRun(cl, i, m)
    }
}
