// BPEModel: the `model` of tokenizer.json (type BPE): vocab, merges in either form, byte_fallback, unk/fuse_unk,
// ignore_merges, continuing_subword_prefix, end_of_word_suffix; lowest-rank pair first, leftmost on ties (tokenizers models/bpe).
import Foundation

/// Reusable buffers of one tokenize call.
struct BPEScratch {
    var syms: [Int32] = []
    var ranks: [UInt64] = []
    var prev: [Int32] = []
    var next: [Int32] = []
    var heap: [UInt64] = []
    var piece: [UInt8] = []
}

package final class BPEModel: @unchecked Sendable {
    /// Token → id, keyed by exact bytes (a Swift [String: Int] would merge "é" with "e\u{301}").
    let vocabBytes: ByteKeyMap
    let idToToken: [String?]
    let vocabCount: Int
    let unkToken: String?
    private let merges: PairMap
    private let unkId: Int32
    private let fuseUnk: Bool
    private let byteFallback: Bool
    private let ignoreMerges: Bool
    private let prefix: [UInt8]
    private let suffix: [UInt8]
    private let byteIds: [Int32]  // <0xXX> token ids, -1 where absent
    private let scalarIds: [Int32]  // id of each one-character token below U+10000, -1 where absent

    /// Words of more symbols than this merge through a heap (O(n log n)) rather than by rescanning.
    package var heapThreshold = 64

    /// Ids index a table; real vocabularies stay far below this (Gemma's 262k is the largest common one).
    static let maxId: Int64 = 1 << 22

    func id(of token: String) -> Int? { vocabBytes.find(Array(token.utf8)).map { Int($0.0) } }

    init(_ j: TokenizerJSON) throws {
        let type = try j.optionalString("type") ?? "BPE"
        guard type == "BPE" else { throw TokenizerError.unsupportedModel(path: j.path, type: type) }
        if let d = j.object["dropout"]?.doubleValue, d > 0 {
            throw j.bad("dropout", "BPE dropout \(d) makes encoding random; set it to null for training data")
        }
        guard let vocabObj = j.object["vocab"]?.objectValue else {
            throw j.has("vocab") ? j.bad("vocab", "expected an object of token → id") : TokenizerError.missingKey(path: j.path, key: j.key("vocab"))
        }
        var bytesMap = ByteKeyMap(capacity: vocabObj.count)
        var maxId = -1
        var scalarIds = [Int32](repeating: -1, count: 0x10000)
        for (tok, v) in vocabObj.entries {
            guard let i = v.intValue, i >= 0, i < BPEModel.maxId else {
                throw j.bad("vocab", "the id of '\(tok)' is \(v.serialized()), not an integer in 0..<\(BPEModel.maxId)")
            }
            bytesMap.insert(Array(tok.utf8), Int32(i))
            maxId = max(maxId, Int(i))
            let u = tok.unicodeScalars
            if u.count == 1, let s = u.first?.value, s < 0x10000 { scalarIds[Int(s)] = Int32(i) }
        }
        var idToToken = [String?](repeating: nil, count: maxId + 1)
        for (tok, v) in vocabObj.entries { idToToken[Int(v.intValue!)] = tok }
        self.idToToken = idToToken
        self.scalarIds = scalarIds
        vocabBytes = bytesMap
        vocabCount = bytesMap.count
        func lookup(_ t: String) -> Int32? { bytesMap.find(Array(t.utf8))?.0 }

        unkToken = try j.optionalString("unk_token")
        unkId = unkToken.flatMap(lookup) ?? -1
        fuseUnk = try j.bool("fuse_unk", default: false)
        byteFallback = try j.bool("byte_fallback", default: false)
        ignoreMerges = try j.bool("ignore_merges", default: false)
        prefix = Array((try j.optionalString("continuing_subword_prefix") ?? "").utf8)
        suffix = Array((try j.optionalString("end_of_word_suffix") ?? "").utf8)
        byteIds = (0..<256).map { b in lookup(String(format: "<0x%02X>", b)) ?? -1 }

        let list = try j.array("merges")
        var merges = PairMap(capacity: list.count)
        for (rank, m) in list.enumerated() {
            let a: String, b: String
            if let s = m.stringValue {
                let parts = s.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2 else { throw j.bad("merges[\(rank)]", "expected \"left right\" with one space, got \"\(s)\"") }
                a = String(parts[0]); b = String(parts[1])
            } else if let arr = m.arrayValue, arr.count == 2, let x = arr[0].stringValue, let y = arr[1].stringValue {
                a = x; b = y
            } else {
                throw j.bad("merges[\(rank)]", "expected \"left right\" or [\"left\", \"right\"], got \(m.serialized())")
            }
            guard let ia = lookup(a) else { throw TokenizerError.unknownMergeToken(path: j.path, index: rank, token: a) }
            guard let ib = lookup(b) else { throw TokenizerError.unknownMergeToken(path: j.path, index: rank, token: b) }
            let bBytes = Array(b.utf8)
            guard bBytes.count >= prefix.count else { throw j.bad("merges[\(rank)]", "'\(b)' is shorter than continuing_subword_prefix") }
            let merged = Array(a.utf8) + bBytes[prefix.count...]
            guard let im = bytesMap.find(merged)?.0 else {
                throw TokenizerError.unknownMergeToken(path: j.path, index: rank, token: String(decoding: merged, as: UTF8.self))
            }
            merges.insert(left: ia, right: ib, rank: rank, merged: im)
        }
        self.merges = merges
    }

    /// Appends the ids of one pre-tokenized word (UTF-8, p[0..<n]).
    func tokenize(_ p: UnsafePointer<UInt8>, _ n: Int, into out: inout [Int32], scratch s: inout BPEScratch) {
        guard n > 0 else { return }
        if ignoreMerges, let (id, _) = vocabBytes.find(p, n) { out.append(id); return }
        s.syms.removeAll(keepingCapacity: true)
        var unk: Int32 = -1  // a pending unknown, as tokenizers' merge_word keeps one
        var i = 0
        while i < n {
            let len = UTF8Scan.length(p[i])
            let isFirst = i == 0, isLast = i + len >= n
            var id: Int32 = -1
            if (isFirst || prefix.isEmpty) && (!isLast || suffix.isEmpty) {  // no affix on this symbol
                if len <= 3 {
                    let (v, _) = UTF8Scan.decode(p, i)
                    id = scalarIds[Int(v)]
                } else {
                    id = vocabBytes.find(p + i, len)?.0 ?? -1
                }
                s.piece.removeAll(keepingCapacity: true)
                if id < 0 { s.piece.append(contentsOf: UnsafeBufferPointer(start: p + i, count: len)) }
            } else {
                s.piece.removeAll(keepingCapacity: true)
                if !isFirst { s.piece += prefix }
                s.piece.append(contentsOf: UnsafeBufferPointer(start: p + i, count: len))
                if isLast { s.piece += suffix }
                id = vocabBytes.find(s.piece)?.0 ?? -1
            }
            i += len
            if id >= 0 {
                if unk >= 0 { s.syms.append(unk); unk = -1 }
                s.syms.append(id)
                continue
            }
            if byteFallback && s.piece.allSatisfy({ byteIds[Int($0)] >= 0 }) {
                for b in s.piece { s.syms.append(byteIds[Int(b)]) }
                continue
            }
            if unkId >= 0 {
                if unk >= 0 && !fuseUnk { s.syms.append(unk) }
                unk = unkId
            }
        }
        if unk >= 0 { s.syms.append(unk) }
        if s.syms.count > heapThreshold { mergeWithHeap(&s) } else { mergeByScan(&s) }
        out.append(contentsOf: s.syms)
    }

    /// Repeatedly merges the lowest-rank adjacent pair, leftmost on ties; pair ranks kept in an array.
    private func mergeByScan(_ s: inout BPEScratch) {
        var count = s.syms.count
        guard count >= 2 else { return }
        if s.ranks.count < count { s.ranks = [UInt64](repeating: 0, count: max(count, 64)) }
        s.syms.withUnsafeMutableBufferPointer { symsBuf in
            s.ranks.withUnsafeMutableBufferPointer { ranksBuf in
                let syms = symsBuf.baseAddress!, ranks = ranksBuf.baseAddress!
                for k in 0..<(count - 1) { ranks[k] = merges.lookup(syms[k], syms[k + 1]) }
                while count > 1 {
                    var best = UInt64.max, j = -1
                    for k in 0..<(count - 1) where ranks[k] < best { best = ranks[k]; j = k }
                    if j < 0 { break }
                    syms[j] = Int32(truncatingIfNeeded: best & 0xFFFF_FFFF)
                    for k in (j + 1)..<(count - 1) { syms[k] = syms[k + 1] }
                    if j + 1 < count - 1 { for k in (j + 1)..<(count - 2) { ranks[k] = ranks[k + 1] } }
                    count -= 1
                    if j + 1 < count { ranks[j] = merges.lookup(syms[j], syms[j + 1]) }
                    if j > 0 { ranks[j - 1] = merges.lookup(syms[j - 1], syms[j]) }
                }
            }
        }
        s.syms.removeLast(s.syms.count - count)
    }

    /// The same merge order through a min-heap of (rank, position); stale entries are skipped when popped.
    private func mergeWithHeap(_ s: inout BPEScratch) {
        let n = s.syms.count
        s.prev = (0..<n).map { Int32($0) - 1 }
        s.next = (0..<n).map { $0 + 1 < n ? Int32($0 + 1) : -1 }
        s.heap.removeAll(keepingCapacity: true)
        func push(_ heap: inout [UInt64], _ v: UInt64) {
            heap.append(v)
            var c = heap.count - 1
            while c > 0 {
                let p = (c - 1) / 2
                if heap[p] <= heap[c] { break }
                heap.swapAt(p, c); c = p
            }
        }
        func pop(_ heap: inout [UInt64]) -> UInt64 {
            let top = heap[0]
            let last = heap.removeLast()
            if !heap.isEmpty {
                heap[0] = last
                var c = 0
                while true {
                    let l = 2 * c + 1, r = l + 1
                    var m = c
                    if l < heap.count && heap[l] < heap[m] { m = l }
                    if r < heap.count && heap[r] < heap[m] { m = r }
                    if m == c { break }
                    heap.swapAt(m, c); c = m
                }
            }
            return top
        }
        for k in 0..<(n - 1) {
            let r = merges.lookup(s.syms[k], s.syms[k + 1])
            if r != .max { push(&s.heap, (r >> 32) << 32 | UInt64(k)) }
        }
        while !s.heap.isEmpty {
            let e = pop(&s.heap)
            let rank = e >> 32, pos = Int(e & 0xFFFF_FFFF)
            guard s.syms[pos] >= 0, s.next[pos] >= 0 else { continue }
            let right = Int(s.next[pos])
            let r = merges.lookup(s.syms[pos], s.syms[right])
            guard r != .max, r >> 32 == rank else { continue }  // the pair changed since it was queued
            s.syms[pos] = Int32(truncatingIfNeeded: r & 0xFFFF_FFFF)
            s.syms[right] = -1
            let after = s.next[right]
            s.next[pos] = after
            if after >= 0 { s.prev[Int(after)] = Int32(pos) }
            if after >= 0 {
                let r2 = merges.lookup(s.syms[pos], s.syms[Int(after)])
                if r2 != .max { push(&s.heap, (r2 >> 32) << 32 | UInt64(pos)) }
            }
            let before = Int(s.prev[pos])
            if before >= 0 {
                let r3 = merges.lookup(s.syms[before], s.syms[pos])
                if r3 != .max { push(&s.heap, (r3 >> 32) << 32 | UInt64(before)) }
            }
        }
        var w = 0
        for k in 0..<n where s.syms[k] >= 0 { s.syms[w] = s.syms[k]; w += 1 }
        s.syms.removeLast(n - w)
    }
}
