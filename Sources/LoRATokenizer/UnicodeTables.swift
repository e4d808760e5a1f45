// UnicodeTables: per-scalar character classes as the tokenizers crate sees them (Oniguruma's \p{L} \p{N} \s,
// Rust's char::is_whitespace / is_numeric / is_alphanumeric), UTF-8 stepping, and GPT-2's byte↔unicode map (docs/formats.md §5).
import Foundation

/// Character class bits of one Unicode scalar.
enum CharClass {
    static let letter: UInt8 = 1  // \p{L}
    static let number: UInt8 = 2  // \p{N} (= Rust char::is_numeric: Nd, Nl, No)
    static let space: UInt8 = 4  // White_Space (= Oniguruma \s = Rust char::is_whitespace)
    static let word: UInt8 = 8  // Rust regex \w: Alphabetic, Mark, Nd, Pc, Join_Control
    static let punct: UInt8 = 16  // Punctuation pre-tokenizer: ASCII punctuation or General_Category P*
    static let onigWord: UInt8 = 32  // Oniguruma \w: Letter, Mark, Nd, Pc
    static let mark: UInt8 = 64  // General_Category M* (StripAccents)

    static func compute(_ v: UInt32) -> UInt8 {
        guard let s = Unicode.Scalar(v) else { return 0 }
        let p = s.properties
        var f: UInt8 = 0
        switch p.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            f |= letter | onigWord
        case .decimalNumber: f |= number | word | onigWord
        case .letterNumber, .otherNumber: f |= number
        case .nonspacingMark, .spacingMark, .enclosingMark: f |= mark | word | onigWord
        case .connectorPunctuation: f |= punct | word | onigWord
        case .dashPunctuation, .openPunctuation, .closePunctuation, .initialPunctuation, .finalPunctuation,
             .otherPunctuation:
            f |= punct
        default: break
        }
        if p.isWhitespace { f |= space }
        if p.isAlphabetic || p.isJoinControl { f |= word }
        if (0x21...0x2F).contains(v) || (0x3A...0x40).contains(v) || (0x5B...0x60).contains(v) || (0x7B...0x7E).contains(v) {
            f |= punct
        }
        return f
    }

    /// Classes of the Basic Multilingual Plane, computed once (a few milliseconds).
    static let bmp: [UInt8] = (0..<0x10000).map { compute(UInt32($0)) }

    @inline(__always) static func of(_ v: UInt32) -> UInt8 {
        v < 0x10000 ? bmp.withUnsafeBufferPointer { $0[Int(v)] } : compute(v)
    }

    /// The BMP table for loops (hoists the lazy-global check out of them); `bmp` stays alive for the process.
    static let bmpPointer: UnsafePointer<UInt8> = {
        let p = UnsafeMutablePointer<UInt8>.allocate(capacity: 0x10000)
        p.initialize(from: bmp, count: 0x10000)
        return UnsafePointer(p)
    }()

    @inline(__always) static func of(_ v: UInt32, _ table: UnsafePointer<UInt8>) -> UInt8 {
        v < 0x10000 ? table[Int(v)] : compute(v)
    }
}

/// UTF-8 helpers over valid UTF-8 (the bytes of a Swift String).
enum UTF8Scan {
    /// Length of the sequence that starts with lead byte `b`.
    @inline(__always) static func length(_ b: UInt8) -> Int {
        b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4
    }

    /// The scalar at `p[i]` and its length in bytes.
    @inline(__always) static func decode(_ p: UnsafePointer<UInt8>, _ i: Int) -> (UInt32, Int) {
        let b0 = UInt32(p[i])
        if b0 < 0x80 { return (b0, 1) }
        if b0 < 0xE0 { return ((b0 & 0x1F) << 6 | UInt32(p[i + 1] & 0x3F), 2) }
        if b0 < 0xF0 { return ((b0 & 0x0F) << 12 | UInt32(p[i + 1] & 0x3F) << 6 | UInt32(p[i + 2] & 0x3F), 3) }
        return ((b0 & 0x07) << 18 | UInt32(p[i + 1] & 0x3F) << 12 | UInt32(p[i + 2] & 0x3F) << 6 | UInt32(p[i + 3] & 0x3F), 4)
    }

    @inline(__always) static func append(_ v: UInt32, to out: inout [UInt8]) {
        if v < 0x80 {
            out.append(UInt8(v))
        } else if v < 0x800 {
            out.append(UInt8(0xC0 | v >> 6)); out.append(UInt8(0x80 | v & 0x3F))
        } else if v < 0x10000 {
            out.append(UInt8(0xE0 | v >> 12)); out.append(UInt8(0x80 | (v >> 6) & 0x3F)); out.append(UInt8(0x80 | v & 0x3F))
        } else {
            out.append(UInt8(0xF0 | v >> 18)); out.append(UInt8(0x80 | (v >> 12) & 0x3F))
            out.append(UInt8(0x80 | (v >> 6) & 0x3F)); out.append(UInt8(0x80 | v & 0x3F))
        }
    }

    static func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    /// Decodes bytes as UTF-8, each maximal invalid subsequence becoming U+FFFD (Rust's from_utf8_lossy).
    static func lossy(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }
}

/// GPT-2's reversible byte → printable character map: bytes 0x21–0x7E, 0xA1–0xAC and 0xAE–0xFF stand for
/// themselves, the other 68 take U+0100 + n in byte order (space → Ġ U+0120, \n → Ċ U+010A).
enum ByteLevelMap {
    static let byteToScalar: [UInt32] = {
        var t = [UInt32](repeating: 0, count: 256)
        var n: UInt32 = 0
        for b in 0..<256 {
            if (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b) {
                t[b] = UInt32(b)
            } else {
                t[b] = 0x100 + n
                n += 1
            }
        }
        return t
    }()

    /// UTF-8 of each byte's character (one or two bytes), for writing mapped text quickly.
    static let byteToUTF8: [[UInt8]] = byteToScalar.map { v in var o: [UInt8] = []; UTF8Scan.append(v, to: &o); return o }

    /// Inverse map over scalars below U+0144; -1 where a scalar stands for no byte.
    static let scalarToByte: [Int16] = {
        var t = [Int16](repeating: -1, count: 0x144)
        for (b, v) in byteToScalar.enumerated() { t[Int(v)] = Int16(b) }
        return t
    }()

    @inline(__always) static func byte(for v: UInt32) -> Int? {
        guard v < 0x144 else { return nil }
        let b = scalarToByte[Int(v)]
        return b < 0 ? nil : Int(b)
    }

    /// Appends the mapped characters of `n` raw bytes.
    @inline(__always) static func appendMapped(_ p: UnsafePointer<UInt8>, _ n: Int, to out: inout [UInt8]) {
        for i in 0..<n {
            let b = p[i]
            if b >= 0x21 && b <= 0x7E { out.append(b) } else { out.append(contentsOf: byteToUTF8[Int(b)]) }
        }
    }
}
