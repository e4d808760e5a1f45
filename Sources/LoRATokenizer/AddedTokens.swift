// AddedTokens: the `added_tokens` of tokenizer.json, found in text before the model runs: a byte trie searched
// leftmost-longest, then single_word / lstrip / rstrip as tokenizers' AddedVocabulary::find_matches applies them.
import Foundation

public struct AddedToken: Sendable, Equatable {
    public let id: Int
    public let content: String
    public let special: Bool
    public let normalized: Bool
    public let lstrip: Bool
    public let rstrip: Bool
    public let singleWord: Bool

    package static func parse(_ j: TokenizerJSON) throws -> AddedToken {
        AddedToken(id: try j.int("id"), content: try j.string("content"), special: try j.bool("special", default: false),
                   normalized: try j.bool("normalized", default: true), lstrip: try j.bool("lstrip", default: false),
                   rstrip: try j.bool("rstrip", default: false), singleWord: try j.bool("single_word", default: false))
    }
}

/// One search set of added tokens (the non-normalized ones on raw text, or the normalized ones on normalized text).
struct AddedTokenMatcher {
    private var edges: [UInt64: Int32] = [:]  // node << 8 | byte → child node
    private var terminal: [Int32] = [-1]  // node → index into `tokens`, -1 if none
    private var firstByte = [Bool](repeating: false, count: 256)
    private(set) var tokens: [AddedToken] = []

    var isEmpty: Bool { tokens.isEmpty }

    /// `pattern` is the token's content, normalized for the normalized set.
    mutating func add(_ token: AddedToken, pattern: [UInt8]) {
        guard let f = pattern.first else { return }
        firstByte[Int(f)] = true
        var node: Int32 = 0
        for b in pattern {
            let key = UInt64(node) << 8 | UInt64(b)
            if let c = edges[key] { node = c } else {
                let c = Int32(terminal.count)
                terminal.append(-1)
                edges[key] = c
                node = c
            }
        }
        if terminal[Int(node)] < 0 {  // the first token with this content wins, as the trie keeps the first pattern
            terminal[Int(node)] = Int32(tokens.count)
            tokens.append(token)
        }
    }

    /// Cuts p[0..<n] into (start, end, token id or -1) pieces covering it.
    func split(_ p: UnsafePointer<UInt8>, _ n: Int, into out: inout [Int]) {
        var startOffset = 0, i = 0
        while i < n {
            if !firstByte[Int(p[i])] { i += 1; continue }
            var node: Int32 = 0, j = i, best: Int32 = -1, bestEnd = 0
            while j < n, let c = edges[UInt64(node) << 8 | UInt64(p[j])] {
                node = c
                j += 1
                if terminal[Int(node)] >= 0 { best = terminal[Int(node)]; bestEnd = j }
            }
            if best < 0 { i += 1; continue }
            let tok = tokens[Int(best)]
            var start = i, stop = bestEnd
            i = bestEnd
            if tok.singleWord {
                let wordBefore = start > 0 && AddedTokenMatcher.isWord(before: start, p)
                let wordAfter = stop < n && AddedTokenMatcher.isWord(at: stop, p)
                if wordBefore || wordAfter { continue }
            }
            if tok.lstrip { start = max(AddedTokenMatcher.spacesBefore(start, p), startOffset) }
            if tok.rstrip { stop = AddedTokenMatcher.spacesAfter(stop, p, n) }
            start = max(start, startOffset)
            if startOffset < start { out += [startOffset, start, -1] }
            out += [start, stop, tok.id]
            startOffset = stop
            i = max(i, stop)
        }
        if startOffset < n { out += [startOffset, n, -1] }
    }

    @inline(__always) private static func scalarStart(before i: Int, _ p: UnsafePointer<UInt8>) -> Int {
        var k = i - 1
        while k > 0 && p[k] & 0xC0 == 0x80 { k -= 1 }
        return k
    }

    /// The character before `i` is a regex \w character.
    private static func isWord(before i: Int, _ p: UnsafePointer<UInt8>) -> Bool {
        let k = scalarStart(before: i, p)
        return CharClass.of(UTF8Scan.decode(p, k).0) & CharClass.word != 0
    }

    private static func isWord(at i: Int, _ p: UnsafePointer<UInt8>) -> Bool {
        CharClass.of(UTF8Scan.decode(p, i).0) & CharClass.word != 0
    }

    /// Start of the whitespace run that ends at `i`.
    private static func spacesBefore(_ i: Int, _ p: UnsafePointer<UInt8>) -> Int {
        var j = i
        while j > 0 {
            let k = scalarStart(before: j, p)
            guard CharClass.of(UTF8Scan.decode(p, k).0) & CharClass.space != 0 else { break }
            j = k
        }
        return j
    }

    /// End of the whitespace run that starts at `i`.
    private static func spacesAfter(_ i: Int, _ p: UnsafePointer<UInt8>, _ n: Int) -> Int {
        var j = i
        while j < n {
            let (v, l) = UTF8Scan.decode(p, j)
            guard CharClass.of(v) & CharClass.space != 0 else { break }
            j += l
        }
        return j
    }
}
